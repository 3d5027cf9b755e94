"""Shared fixtures: tiny, deliberately asymmetric structures and a guarded handle on the engine."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

# The independent references live next to the tests (tests/reference.py); make them importable however
# pytest was started.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

MOLECULE_NAMES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6")


def _rattled_molecule(name: str, seed: int):
    import ase.build

    atoms = ase.build.molecule(name)
    # Rattling removes point-group symmetry, which would otherwise make many tensor components vanish and
    # let sign or index errors pass unnoticed.
    atoms.rattle(stdev=0.05, seed=seed)
    atoms.center()
    return atoms


def make_molecules(names=MOLECULE_NAMES):
    """Rattled small molecules (3-8 atoms, elements H, C, N, O), non-periodic."""
    return [_rattled_molecule(name, seed=11 + k) for k, name in enumerate(names)]


def make_periodic_cell():
    """A rattled, sheared two-atom rock-salt (Na, Cl) cell: non-orthogonal, fully periodic."""
    import ase.build

    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    cell = np.asarray(atoms.get_cell()) @ np.array([[1.0, 0.03, 0.0], [0.0, 0.98, 0.02], [0.01, 0.0, 1.04]])
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += np.array([[0.0, 0.0, 0.0], [0.11, -0.07, 0.05]])
    return atoms


@pytest.fixture
def molecules():
    return make_molecules()


@pytest.fixture
def periodic_cell():
    return make_periodic_cell()


@pytest.fixture
def structures():
    """Molecules plus the periodic cell: every kind of input the engine must treat alike."""
    return make_molecules() + [make_periodic_cell()]


def engine_available() -> bool:
    return importlib.util.find_spec("wkviz.engine.kernels") is not None


@pytest.fixture
def engine():
    """``compute(frames, hypers, frames_B=None, **kw)`` through the public API.

    Skips only while ``wkviz/kernels.py`` does not exist yet; once it exists, import errors are failures.
    """
    if not engine_available():
        pytest.skip("wkviz.engine.kernels (the engine) is not there yet")
    from wkviz.engine.kernels import WignerKernel

    def compute(frames, hypers, frames_B=None, **kw):
        return WignerKernel(hypers=hypers).compute(frames, frames_B=frames_B, **kw)

    return compute
