"""Shared fixtures (tiny, deliberately asymmetric structures, a handle on the engine) and ``require``."""

from __future__ import annotations

import importlib
import os
import pathlib
import signal
import sys

import numpy as np
import pytest

# The independent references live next to the tests (tests/reference.py); make them importable however
# pytest was started.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

MOLECULE_NAMES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6")


def deps_required() -> bool:
    """True where a missing test dependency must fail rather than skip: in CI (``CI=true``) or with
    ``WKVIZ_REQUIRE_DEPS=1``."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("WKVIZ_REQUIRE_DEPS") == "1"


def require(module_name: str):
    """Import and return ``module_name``; if it cannot be imported, skip (locally) or fail (see ``deps_required``).

    The one replacement for ``pytest.importorskip`` in this suite: a skip would let CI pass silently with a
    dependency gone missing. Works at module level (it then skips or fails the whole module) and inside tests
    and fixtures.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        reason = f"{module_name} is not importable ({exc})"
    # Outside the except block, so the report is the one sentence, not a chained traceback.
    if deps_required():
        pytest.fail(f"{reason}; CI=true or WKVIZ_REQUIRE_DEPS=1, so test dependencies must be installed",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_that(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (see ``deps_required``) when a prerequisite that is not a module is missing, e.g. the
    local copy of 3Dmol.js that ``make test`` fetches, or Debian's chromium that ``.ci/run`` installs."""
    if condition:
        return
    if deps_required():
        pytest.fail(f"{reason}; CI=true or WKVIZ_REQUIRE_DEPS=1, so it must be there", pytrace=False)
    pytest.skip(reason)


def ctrl_c_reaches_python() -> None:
    """``preexec_fn`` of a child that a test interrupts with SIGINT: start it with SIGINT's default disposition.

    A job started in the background by a non-interactive shell (``cmd &``, nohup) runs with SIGINT ignored, its
    children inherit that, and Python then installs no KeyboardInterrupt handler: the child would ignore the test's
    Ctrl-C. A terminal's Ctrl-C reaches a foreground process with the default disposition, which this restores."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, whatever this process inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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


@pytest.fixture
def engine():
    """``compute(frames, hypers, frames_B=None, **kw)`` through the public API."""
    from wkviz.engine.kernels import WignerKernel

    def compute(frames, hypers, frames_B=None, **kw):
        return WignerKernel(hypers=hypers).compute(frames, frames_B=frames_B, **kw)

    return compute
