"""The bundled sample data sets and QM9 from the qm9pack package."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .io import read_structures
from .splits import random_split
from .targets import charge_dipole
from .validate import validate_structures

__all__ = ["HARTREE_EV", "SAMPLE_DIR", "SAMPLE_SETS", "load_sample", "load_qm9", "load_qm9_split"]

#: eV per Hartree, CODATA 2018. ase.units.Hartree is CODATA 2014 in ase 3.2x (27.211386024 eV); the two
#: differ by 8e-9 relative, about 0.1 meV on a QM9 U0.
HARTREE_EV = 27.211386245988

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"

SAMPLE_SETS = {
    "qm9": {
        "file": "qm9_subset.extxyz.gz",
        "title": "QM9 subset (2,000 small organic molecules)",
        "description": (
            "2,000 molecules drawn with seed 0 from QM9 (H, C, N, O, F; up to 9 heavy atoms; B3LYP/6-31G(2df,p)), "
            "taken from the qm9pack package. Targets: U0, homo, lumo, gap, U, H, G, zpve (eV); dipole_norm (D); "
            "alpha_iso (bohr³); cv (cal/mol/K); per-atom Mulliken charges 'mulliken' (e) and their dipole "
            "'mulliken_dipole' (e·Å, a rotating 3-vector)."
        ),
    },
    "gold": {
        "file": "gold_emt.extxyz.gz",
        "title": "Gold clusters and bulk, EMT (500 structures)",
        "description": (
            "300 Au clusters of 10-40 atoms and 200 rattled, strained periodic fcc cells of 4-32 atoms, labelled "
            "with ase's EMT potential: 'energy' (eV), per-atom 'forces' (eV/Å), 'stress' (3×3, eV/Å³, bulk only); "
            "'config_type' is 'cluster' or 'bulk'."
        ),
    },
    "teaching": {
        "file": "teaching.extxyz",
        "title": "Body-order teaching set (degenerate pairs)",
        "description": (
            "Pairs of environments (A, B) whose 3-body (ν=2) correlations are identical although the structures "
            "differ: a ν=2 kernel cannot tell them apart, a ν=3 kernel can. info 'pair', 'label', 'center' "
            "(index of the degenerate environment), 'description'."
        ),
    },
}

def load_sample(name):
    """Load a bundled data set.

    Parameters
    ----------
    name : {"qm9", "gold", "teaching"}
        See ``SAMPLE_SETS`` for descriptions and ``sample_data/README.md`` for provenance and units.

    Returns
    -------
    list of ase.Atoms
    """
    if name not in SAMPLE_SETS:
        raise InputError(f"no sample data set '{name}'; choose one of {', '.join(SAMPLE_SETS)}.")
    path = SAMPLE_DIR / SAMPLE_SETS[name]["file"]
    if not path.exists():
        raise InputError(
            f"the sample file {path} is missing; rebuild it with `python scripts/make_sample_data.py`."
        )
    return read_structures(path)


def _parse_list(text):
    """Numbers from qm9pack's bracketed text columns ('[[-0.01,1.08],[...]]'); never eval'd."""
    return np.array([float(t) for t in re.split(r"[\s,\[\]']+", text) if t], dtype=float)


def _parse_symbols(text):
    return [t for t in re.split(r"[\s,\[\]'\"]+", text) if t]


def _qm9_atoms(row):
    """One qm9pack row → ase.Atoms with eV energies, Mulliken charges and their dipole."""
    from ase import Atoms

    symbols = _parse_symbols(row["Elements"])
    pos = _parse_list(row["XYZ_Ang"]).reshape(len(symbols), 3)
    q = _parse_list(row["Mulliken_pop"])
    if len(q) != len(symbols):
        raise InputError(f"QM9 molecule {row['Index']}: {len(q)} Mulliken charges for {len(symbols)} atoms.")
    atoms = Atoms(symbols=symbols, positions=pos)
    atoms.arrays["mulliken"] = q
    info = atoms.info
    info["qm9_index"] = int(row["Index"])
    info["smiles"] = str(row["SMILES"])
    for key, col in (("U0", "InternalEnergy_0K_au"), ("U", "InternalEnergy_298K_au"), ("H", "Enthalphy_298K_au"),
                     ("G", "GibbsFreeEnergy_298K_au"), ("homo", "HOMO_au"), ("lumo", "LUMO_au"),
                     ("gap", "HOMO_LUMO_gap_au"), ("zpve", "ZPVE_au")):
        info[key] = float(row[col]) * HARTREE_EV
    info["dipole_norm"] = float(row["Dipole_debye"])
    # QM9's isotropic polarisability (a rotation invariant); the tensor components are given in a
    # molecule-fixed orientation unrelated to these coordinates, so they are deliberately not used.
    info["alpha_iso"] = float(row["Polarizability_bohr3"])
    info["cv"] = float(row["Heatcapacity_Cv_cal_mol_K"])
    info["mulliken_dipole"] = charge_dipole(atoms, "mulliken")
    return atoms


def _qm9_table():
    """qm9pack's table of all of QM9 (a pandas DataFrame, one molecule per row)."""
    try:
        import qm9pack
    except ImportError:
        raise InputError(
            "full QM9 needs the optional qm9pack package (about 230 MB); install it with `pip install qm9pack` "
            "or use the bundled 2,000-molecule subset (load_sample('qm9'))."
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qm9pack.get_data("qm9")


def _check_positive_int(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}.")


def load_qm9(n, seed, *, table=None):
    """Draw ``n`` random QM9 molecules (without replacement) from the qm9pack package.

    Parameters
    ----------
    n : int
        Number of molecules, 1 to 130,831.
    seed : int
        Seed of the draw; ``load_qm9(2000, 0)`` reproduces the bundled subset.
    table : pandas.DataFrame, optional
        qm9pack's table (``qm9pack.get_data("qm9")``) when the caller has it already; loaded when None.

    Returns
    -------
    list of ase.Atoms
        In increasing QM9 index, with the info keys and units of the bundled subset
        (``sample_data/README.md``).

    Raises
    ------
    InputError
        When qm9pack is not installed (``pip install qm9pack``) or ``n`` is out of range.

    Notes
    -----
    Loading qm9pack's table takes about 1-2 s and 0.4 GB of memory; keep the returned frames (or the table, for
    ``table=``) rather than loading it again.
    """
    _check_positive_int(n, "the number of QM9 molecules")
    df = _qm9_table() if table is None else table
    total = len(df)
    if n > total:
        raise InputError(f"QM9 has {total} molecules; asked for {n}.")
    rows = np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))
    sub = df.iloc[rows]
    frames = [_qm9_atoms(row) for _, row in sub.iterrows()]
    validate_structures(frames, name="QM9")
    return frames


def load_qm9_split(n_train, n_test, seed, *, table=None):
    """Random QM9 training and test sets: ``n_train + n_test`` molecules drawn as by :func:`load_qm9`, then
    partitioned at random (:func:`random_split` with the same seed).

    Slicing the draw of :func:`load_qm9` would not do: it is in QM9 order, which follows the GDB enumeration
    (small molecules first, fluorinated ones clustered), so its first molecules are not a random subset of it.

    Parameters
    ----------
    n_train, n_test : int
        Sizes of the two sets (``n_train`` ≥ 1, ``n_test`` ≥ 1).
    seed : int
    table : pandas.DataFrame, optional
        qm9pack's table, as for :func:`load_qm9`.

    Returns
    -------
    train, test : list of ase.Atoms
        Each in increasing QM9 index.
    """
    _check_positive_int(n_train, "n_train")
    _check_positive_int(n_test, "n_test")
    frames = load_qm9(int(n_train) + int(n_test), seed, table=table)
    train_idx, test_idx = random_split(len(frames), int(n_test), seed)
    return [frames[i] for i in np.sort(train_idx)], [frames[i] for i in test_idx]
