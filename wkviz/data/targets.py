"""Targets: what can be learned from a data set (describe_targets), its values (get_target), derived targets
(charge_dipole), element counts (composition_counts) and a summary of the whole set (summarize)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .validate import _fmt_list

__all__ = ["TargetInfo", "describe_targets", "get_target", "composition_counts", "summarize", "charge_dipole"]

# Keys of per-structure info that are bookkeeping, never targets.
_METADATA_KEYS = {"pair", "center", "qm9_index", "Natoms", "cutoff", "nneightol", "config_type", "label"}
# ase arrays that describe the structure itself.
_STRUCTURE_ARRAYS = {"positions", "numbers", "tags", "masses", "momenta", "initial_magmoms", "initial_charges"}

_KNOWN_UNITS = {
    "energy": "eV", "free_energy": "eV", "U0": "eV", "U": "eV", "H": "eV", "G": "eV", "zpve": "eV",
    "homo": "eV", "lumo": "eV", "gap": "eV", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å",
    "mulliken_dipole": "e·Å", "mulliken": "e", "charges": "e", "dipole_norm": "D", "alpha_iso": "bohr³",
    "cv": "cal/(mol·K)", "magmom": "μB", "magmoms": "μB", "energies": "eV",
}
_EXTENSIVE = {"energy", "free_energy", "U0", "U", "H", "G", "zpve", "cv", "alpha_iso", "mulliken_dipole", "dipole",
              "magmom"}
_INTENSIVE = {"homo", "lumo", "gap", "stress", "dipole_norm"}
# Calculator results that are per-atom arrays (the rest are per-structure).
_PER_ATOM_CALC = {"forces", "energies", "stresses", "charges", "magmoms", "born_effective_charges"}


def _voigt_to_full(v):
    xx, yy, zz, yz, xz, xy = np.asarray(v, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


@dataclass(frozen=True)
class TargetInfo:
    """What can be learned from a key of a data set.

    Attributes
    ----------
    key : str
        Name to pass to :func:`get_target` (``"CS[1]"`` for column 1 of a multi-column per-atom array).
    kind : {"scalar", "vector", "tensor", "atomic"}
        Per-structure scalar; per-structure 3-vector (λ=1); per-structure 3×3 tensor (λ=0 ⊕ λ=2 when
        symmetric); per-atom scalar.
    unit : str
        Unit when known from the key's name (``"eV"``, ``"e·Å"``...), else ``""``.
    extensive : bool
        Whether the target grows with the number of atoms (fit with a sum kernel) or not (mean kernel).
        From the key's name when known, otherwise guessed from its correlation with the number of atoms.
    source : {"info", "arrays", "calc"}
        Where it was found: ``atoms.info``, ``atoms.arrays`` or the results of ``atoms.calc`` (energies,
        forces and stresses that ase puts there when reading a file).
    n_valid : int
        Number of structures in which it is present and finite.
    """

    key: str
    kind: str
    unit: str
    extensive: bool
    source: str
    n_valid: int


_COLUMN_RE = re.compile(r"^(.*)\[(\d+)\]$")


def _calc_results(atoms):
    calc = getattr(atoms, "calc", None)
    res = getattr(calc, "results", None)
    return res if isinstance(res, dict) else {}


def _numeric(value):
    """Value as a float array, or None when it is not numeric (strings, bools, objects)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    try:
        arr = np.asarray(value)
    except Exception:
        return None
    if arr.dtype.kind not in "iuf":
        return None
    return arr.astype(float)


def _lookup(atoms, key):
    """Value of ``key`` in one structure: (float array or None, source or None, per_atom)."""
    res = _calc_results(atoms)
    if key in atoms.info:
        v = _numeric(atoms.info[key])
        if v is not None and key == "stress" and v.shape == (6,):
            v = _voigt_to_full(v)
        return v, ("calc" if key in res else "info"), False
    if key in atoms.arrays and key not in ("positions", "numbers"):
        return _numeric(atoms.arrays[key]), ("calc" if key in res else "arrays"), True
    if key in res:
        v = _numeric(res[key])
        if v is not None and key == "stress" and v.shape == (6,):
            v = _voigt_to_full(v)
        return v, "calc", key in _PER_ATOM_CALC
    m = _COLUMN_RE.match(key)
    if m and m.group(1) in atoms.arrays:
        base = _numeric(atoms.arrays[m.group(1)])
        col = int(m.group(2))
        if base is not None and base.ndim == 2 and col < base.shape[1]:
            return base[:, col], "arrays", True
        return None, "arrays", True
    return None, None, False


def _kind_of(value, n_atoms, per_atom):
    """Target kind from the shape of one structure's value, or None when it is not a target."""
    if per_atom:
        if value.shape in ((n_atoms,), (n_atoms, 1)):
            return "atomic"
        return None
    if value.ndim == 0 or value.shape == (1,):
        return "scalar"
    if value.shape == (3,):
        return "vector"
    if value.shape in ((3, 3), (9,)):
        return "tensor"
    return None


def _shape_for(kind, value):
    if kind == "scalar":
        return value.reshape(())
    if kind == "tensor":
        return value.reshape(3, 3)
    if kind == "atomic":
        return value.reshape(-1)
    return value


def _guess_extensive(key, values, n_atoms):
    base = _COLUMN_RE.sub(r"\1", key)
    low = base.lower()
    if base in _EXTENSIVE:
        return True
    if base in _INTENSIVE or "per_atom" in low or "peratom" in low:
        return False
    if "energy" in low and "gap" not in low:
        return True
    # Unknown name: extensive when it tracks the number of atoms closely (needs some spread in sizes).
    v = np.asarray(values, dtype=float)
    na = np.asarray(n_atoms, dtype=float)
    if v.ndim == 1 and len(v) >= 5 and np.std(na) > 0 and np.std(v) > 0:
        r = np.corrcoef(v, na)[0, 1]
        return bool(abs(r) > 0.8)
    return False


def _candidate_keys(frames):
    """Keys, in first-seen order, that could be targets."""
    keys = {}
    for atoms in frames:
        for k in atoms.info:
            if k not in _METADATA_KEYS:
                keys.setdefault(k, None)
        for k in _calc_results(atoms):
            keys.setdefault(k, None)
        for k, arr in atoms.arrays.items():
            if k in _STRUCTURE_ARRAYS:
                continue
            a = np.asarray(arr)
            if a.ndim == 2 and a.shape[1] not in (1, 3) and a.dtype.kind == "f" and k not in _PER_ATOM_CALC:
                for c in range(a.shape[1]):
                    keys.setdefault(f"{k}[{c}]", None)
            else:
                keys.setdefault(k, None)
    return list(keys)


def _collect(frames, key):
    """Per-structure lookups of ``key``: lists of values (None when missing), sources and per-atom flags."""
    found = [_lookup(atoms, key) for atoms in frames]
    return [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]


def _overall_source(sources):
    present = {s for s in sources if s is not None}
    for s in ("calc", "info", "arrays"):
        if s in present:
            return s
    return None


def _raw_dtype_kind(frames, key):
    for atoms in frames:
        if key in atoms.info:
            return np.asarray(atoms.info[key]).dtype.kind
        if key in atoms.arrays:
            return np.asarray(atoms.arrays[key]).dtype.kind
    return "f"


def describe_targets(frames):
    """List what can be learned from these structures, and how.

    Parameters
    ----------
    frames : list of ase.Atoms

    Returns
    -------
    list of TargetInfo
        One entry per usable key: per-structure scalars, 3-vectors and 3×3 tensors from ``atoms.info``
        (or calculator results), per-atom scalars from ``atoms.arrays`` (a multi-column per-atom array
        ``X`` gives ``X[0]``, ``X[1]``...). Not listed: non-numeric values, integer-valued per-structure
        keys (indices and counts far more often than targets), per-atom vectors such as forces, values
        whose shape differs between structures, and values identical in every structure (when there
        are at least two). :func:`get_target` still returns any of them, or says why it cannot.
    """
    frames = list(frames)
    out = []
    for key in _candidate_keys(frames):
        values, sources, per_atom = _collect(frames, key)
        present = [(a, v, pa) for a, v, pa in zip(frames, values, per_atom) if v is not None]
        if not present:
            continue
        kinds = {_kind_of(v, len(a), pa) for a, v, pa in present}
        if len(kinds) != 1 or None in kinds:
            continue
        kind = kinds.pop()
        raw_kind = _raw_dtype_kind(frames, _COLUMN_RE.sub(r"\1", key) if _COLUMN_RE.match(key) else key)
        if raw_kind in "iu" and kind in ("scalar", "atomic"):
            continue
        shaped = [_shape_for(kind, v) for _, v, _ in present]
        if len(frames) >= 2 and len(present) == len(frames) and kind != "atomic":
            if all(np.array_equal(x, shaped[0], equal_nan=True) for x in shaped[1:]):
                continue
        n_valid = int(sum(bool(np.all(np.isfinite(x))) for x in shaped))
        if kind == "atomic":
            extensive = False
        elif kind == "scalar":
            extensive = _guess_extensive(key, [float(x) for x in shaped], [len(a) for a, _, _ in present])
        else:
            extensive = _guess_extensive(key, [], [])
        base = _COLUMN_RE.sub(r"\1", key)
        unit = _KNOWN_UNITS.get(key, _KNOWN_UNITS.get(base, ""))
        if not unit and re.search(r"(^|_)ev($|_)", key.lower()):
            unit = "eV"
        out.append(TargetInfo(key=key, kind=kind, unit=unit, extensive=bool(extensive),
                              source=_overall_source(sources), n_valid=n_valid))
    return out


def get_target(frames, key):
    """Values of one target for every structure, checked for presence, shape and finiteness.

    Parameters
    ----------
    frames : list of ase.Atoms
    key : str
        An ``atoms.info`` key, an ``atoms.arrays`` key, a calculator result (``"energy"``, ``"forces"``,
        ``"stress"``), or ``"X[c]"`` for column ``c`` of a multi-column per-atom array ``X``.

    Returns
    -------
    ndarray
        ``(n,)`` for scalars, ``(n, 3)`` for vectors, ``(n, 3, 3)`` for tensors (9 numbers are read
        row-major, a 6-component stress as Voigt xx yy zz yz xz xy), ``(total_atoms,)`` for per-atom
        scalars (structure 0's atoms first), ``(total_atoms, k)`` for per-atom vectors such as forces.

    Raises
    ------
    InputError
        When the key is absent everywhere, missing, non-numeric or non-finite in some structures
        (they are named), or has different shapes in different structures.
    """
    frames = list(frames)
    if not frames:
        raise InputError("no structures were given, so there is no target to read.")
    values, _, per_atom = _collect(frames, key)
    missing = [s for s, v in enumerate(values) if v is None]
    if len(missing) == len(frames):
        avail = [t.key for t in describe_targets(frames)]
        hint = f"; available targets: {', '.join(avail)}" if avail else "; these structures carry no targets"
        raise InputError(f"no target '{key}' in these structures{hint}.")
    if missing:
        raise InputError(
            f"target '{key}' is missing or not numeric in {len(missing)} of {len(frames)} structures "
            f"(structures {_fmt_list(missing)}); remove them or choose another target."
        )
    atomic = {bool(pa) for pa in per_atom}
    if len(atomic) > 1:
        raise InputError(f"target '{key}' is per-atom in some structures and per-structure in others; "
                         "rename one of them.")
    if atomic.pop():
        bad_len = [s for s, (a, v) in enumerate(zip(frames, values)) if v.ndim == 0 or v.shape[0] != len(a)]
        if bad_len:
            raise InputError(f"target '{key}' does not have one row per atom in structures {_fmt_list(bad_len)}.")
        shapes = {}
        for s, v in enumerate(values):
            shapes.setdefault(v.shape[1:] if v.ndim > 1 and v.shape[1:] != (1,) else (), []).append(s)
        if len(shapes) > 1:
            parts = [f"{shp[0] if shp else 1} column(s) in structures {_fmt_list(idx, 6)}"
                     for shp, idx in sorted(shapes.items(), key=lambda kv: -len(kv[1]))]
            raise InputError(f"target '{key}' has inconsistent shapes: {'; '.join(parts)}; every structure must "
                             "have the same columns.")
        shp = next(iter(shapes))
        arr = np.concatenate([v.reshape((len(v),) + shp) for v in values], axis=0)
    else:
        shapes = {}
        for s, v in enumerate(values):
            shp = (3, 3) if v.shape == (9,) else (() if v.shape == (1,) else v.shape)
            shapes.setdefault(shp, []).append(s)
        if len(shapes) > 1:
            parts = [f"shape {shp if shp else '() (a scalar)'} in structures {_fmt_list(idx, 6)}"
                     for shp, idx in sorted(shapes.items(), key=lambda kv: -len(kv[1]))]
            raise InputError(f"target '{key}' has inconsistent shapes: {'; '.join(parts)}; every structure must "
                             "give the same shape.")
        shp = next(iter(shapes))
        arr = np.array([v.reshape(shp) for v in values], dtype=float)
    nonfinite = [s for s, v in enumerate(values) if not np.all(np.isfinite(v))]
    if nonfinite:
        raise InputError(
            f"target '{key}' is NaN or infinite in {len(nonfinite)} of {len(frames)} structures "
            f"(structures {_fmt_list(nonfinite)}); remove them or fix the values."
        )
    return arr


# --------------------------------------------------------------------------------------------------------------
# Summaries and compositions
# --------------------------------------------------------------------------------------------------------------

def composition_counts(frames, species=None):
    """Element counts per structure.

    Parameters
    ----------
    frames : list of ase.Atoms
    species : sequence of int or str, optional
        Columns to count (atomic numbers or symbols), e.g. the training set's elements. Atoms of
        elements not listed are not counted: a composition baseline has no coefficient for an element
        it never saw, so it contributes zero.

    Returns
    -------
    counts : ndarray of shape (n_structures, n_species), float
    species : ndarray of int
        Atomic numbers of the columns (sorted when inferred from the structures).
    """
    from ase.data import atomic_numbers

    frames = list(frames)
    if species is None:
        species = np.unique(np.concatenate([a.numbers for a in frames])) if frames else np.array([], dtype=int)
    else:
        sp = []
        for s in species:
            if isinstance(s, str):
                if s not in atomic_numbers:
                    raise InputError(f"unknown element symbol '{s}' in species.")
                sp.append(atomic_numbers[s])
            else:
                sp.append(int(s))
        species = np.array(sp, dtype=int)
    col = {int(z): c for c, z in enumerate(species)}
    counts = np.zeros((len(frames), len(species)))
    for s, atoms in enumerate(frames):
        zs, cs = np.unique(atoms.numbers, return_counts=True)
        for z, c in zip(zs, cs):
            if int(z) in col:
                counts[s, col[int(z)]] = c
    return counts, np.asarray(species, dtype=int)


def summarize(frames):
    """Counts, elements, sizes, periodicity and target statistics of a data set.

    Returns
    -------
    dict
        ``n_structures``, ``n_atoms_total``, ``atoms_per_structure`` (min, max, mean, median, and a
        ``histogram`` dict size → count), ``elements`` (symbol → dict(atoms=…, structures=…)),
        ``n_periodic``, ``n_nonperiodic``, ``n_unique_compositions``, and ``targets``: key →
        dict(kind, unit, extensive, source, n_valid, mean, std, min, max) over the finite values
        (for vectors and tensors these are statistics of the norm).
    """
    from ase.data import chemical_symbols

    frames = list(frames)
    sizes = np.array([len(a) for a in frames], dtype=int)
    counts, species = composition_counts(frames)
    elements = {
        chemical_symbols[int(z)]: {"atoms": int(counts[:, c].sum()), "structures": int((counts[:, c] > 0).sum())}
        for c, z in enumerate(species)
    }
    hist = {int(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))} if len(sizes) else {}
    n_periodic = int(sum(bool(a.pbc.any()) for a in frames))
    targets = {}
    for t in describe_targets(frames):
        values, _, _ = _collect(frames, t.key)
        vals = []
        for v in values:
            if v is None or not np.all(np.isfinite(v)):
                continue
            if t.kind in ("scalar", "atomic"):
                vals.extend(np.ravel(v).tolist())
            else:
                vals.append(float(np.linalg.norm(v)))
        arr = np.array(vals, dtype=float)
        stats = dict(mean=float(arr.mean()), std=float(arr.std()), min=float(arr.min()), max=float(arr.max())) \
            if len(arr) else dict(mean=math.nan, std=math.nan, min=math.nan, max=math.nan)
        targets[t.key] = dict(kind=t.kind, unit=t.unit, extensive=t.extensive, source=t.source, n_valid=t.n_valid,
                              **stats)
    return {
        "n_structures": len(frames),
        "n_atoms_total": int(sizes.sum()),
        "atoms_per_structure": {
            "min": int(sizes.min()) if len(sizes) else 0,
            "max": int(sizes.max()) if len(sizes) else 0,
            "mean": float(sizes.mean()) if len(sizes) else 0.0,
            "median": float(np.median(sizes)) if len(sizes) else 0.0,
            "histogram": hist,
        },
        "elements": elements,
        "n_periodic": n_periodic,
        "n_nonperiodic": len(frames) - n_periodic,
        "n_unique_compositions": int(len({tuple(r) for r in counts})),
        "targets": targets,
    }


# --------------------------------------------------------------------------------------------------------------
# Derived targets
# --------------------------------------------------------------------------------------------------------------

def charge_dipole(atoms, charges="mulliken"):
    """Dipole of point charges about the centre of mass, Σ_i q_i (r_i − r_com), in e·Å.

    Parameters
    ----------
    atoms : ase.Atoms
    charges : str or array_like
        Key of a per-atom array of charges (e), or the charges themselves.

    Returns
    -------
    ndarray of shape (3,)
        Rotates with the structure: for a rotation R, ``charge_dipole(R·atoms) = R @ charge_dipole(atoms)``.
        The centre of mass (ase's standard masses) fixes the origin; for a neutral molecule the result
        does not depend on it.
    """
    q = np.asarray(atoms.arrays[charges] if isinstance(charges, str) else charges, dtype=float)
    if q.shape != (len(atoms),):
        raise InputError(f"charges must give one number per atom ({len(atoms)}), got shape {q.shape}.")
    r = atoms.positions - atoms.get_center_of_mass()
    return q @ r

