"""Validation: are these structures physically usable? One InputError lists every problem.

Also the conventions every message of :mod:`wkviz.data` follows: one sentence per problem, at most
``_MAX_LISTED`` of them, structures numbered from 0.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..geometry import neighbor_pairs

__all__ = ["MIN_DISTANCE", "validate_structures"]

#: Two atoms closer than this (Å) are almost certainly a duplicated atom or a unit mistake (nm, bohr).
MIN_DISTANCE = 0.1

_MAX_LISTED = 10


def _problems_error(problems):
    """One InputError listing at most ``_MAX_LISTED`` problems, each a sentence."""
    shown = [p if p.endswith(".") else p + "." for p in problems[:_MAX_LISTED]]
    more = len(problems) - len(shown)
    text = " ".join(shown)
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''}.)"
    return InputError(text)


def _fmt_list(idx, limit=12):
    idx = list(idx)
    s = ", ".join(str(i) for i in idx[:limit])
    if len(idx) > limit:
        s += f", … ({len(idx)} in all)"
    return s


def _periodic_volume(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Measure (length, area or volume) spanned by the periodic cell vectors."""
    vecs = cell[np.asarray(pbc, dtype=bool)]
    if len(vecs) == 0:
        return math.inf
    gram = vecs @ vecs.T
    return float(math.sqrt(max(np.linalg.det(gram), 0.0)))


def _closest_pair(atoms, limit):
    """Closest pair below ``limit`` Å as (distance, i, j, across_boundary), or None.

    An atom closer than ``limit`` to its own periodic image is reported first, as (distance, 0, 0, True): every
    atom has the same images, so the cell is too small whatever else is wrong. Among distinct atoms, ties go to
    the lowest pair of indices.
    """
    i, j, D = neighbor_pairs(atoms, limit)
    if len(i) == 0:
        return None
    d = np.sqrt(np.einsum("ij,ij->i", D, D))
    own = i == j
    if own.any():
        return float(d[own].min()), 0, 0, True
    first = i < j  # every pair is listed both ways
    i, j, d = i[first], j[first], d[first]
    k = int(np.lexsort((j, i, d))[0])
    a, b = int(i[k]), int(j[k])
    # "across the boundary" refers to the coordinates as given: the direct vector is longer than the closest image
    direct = float(np.linalg.norm(atoms.positions[a] - atoms.positions[b]))
    return float(d[k]), a, b, bool(direct > d[k] + 1e-6)


def validate_structures(frames, *, name=None) -> None:
    """Check that structures are physically usable; raise one InputError listing every problem.

    Checks: at least one structure; every structure has atoms; finite coordinates; real elements
    (atomic numbers 1-118, no dummy 'X'); a finite cell whose periodic vectors span a non-zero
    length/area/volume; no two atoms (or an atom and a periodic image) closer than ``MIN_DISTANCE``.
    Isolated atoms, single-element systems and structures with no neighbours are valid.

    Parameters
    ----------
    frames : list of ase.Atoms
    name : str, optional
        File name to prefix the message with.

    Raises
    ------
    InputError
    """
    from ase import Atoms

    prefix = f"{name}: " if name else ""
    if isinstance(frames, Atoms):
        frames = [frames]
    frames = list(frames) if frames is not None else []
    if not frames:
        raise InputError(f"{prefix}no structures were given.")
    problems = []
    for s, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            problems.append(f"structure {s}: is a {type(atoms).__name__}, not an ase.Atoms")
            continue
        n = len(atoms)
        if n == 0:
            problems.append(f"structure {s}: has no atoms")
            continue
        pos = atoms.positions
        bad = np.where(~np.isfinite(pos).all(axis=1))[0]
        if len(bad):
            problems.append(
                f"structure {s}: atom{'s' if len(bad) > 1 else ''} {_fmt_list(bad)} "
                f"{'have' if len(bad) > 1 else 'has'} NaN or infinite coordinates"
            )
            continue
        z = atoms.numbers
        wrong = np.where((z < 1) | (z > 118))[0]
        if len(wrong):
            problems.append(
                f"structure {s}: atom{'s' if len(wrong) > 1 else ''} {_fmt_list(wrong)} "
                f"{'are' if len(wrong) > 1 else 'is'} not a real element (atomic number "
                f"{int(z[wrong[0]])}); use element symbols H-Og"
            )
            continue
        cell = atoms.cell.array
        if not np.isfinite(cell).all():
            problems.append(f"structure {s}: the cell contains NaN or infinite numbers")
            continue
        if atoms.pbc.any():
            measure = _periodic_volume(cell, atoms.pbc)
            dims = int(atoms.pbc.sum())
            lengths = np.linalg.norm(cell[atoms.pbc], axis=1)
            scale = float(np.prod(lengths)) if np.all(lengths > 0) else 0.0
            if measure <= 1e-8 * max(scale, 1.0) or measure < 1e-6:
                what = {1: "length", 2: "area", 3: "volume"}[dims]
                problems.append(
                    f"structure {s}: it is periodic (pbc={''.join('T' if p else 'F' for p in atoms.pbc)}) but its "
                    f"cell has zero {what}; give a proper Lattice or set pbc to False"
                )
                continue
        close = _closest_pair(atoms, MIN_DISTANCE)
        if close is not None:
            d, i, j, image = close
            if i == j:
                problems.append(
                    f"structure {s}: atom {i} is {d:.2f} Å from its own periodic image; the cell is too small"
                )
            else:
                problems.append(
                    f"structure {s}: two atoms {d:.2f} Å apart (atoms {i} and {j}{', across the cell boundary' if image else ''}); "
                    f"atoms closer than {MIN_DISTANCE} Å are usually duplicates or coordinates in the wrong unit"
                )
    if problems:
        raise _problems_error([prefix + p for p in problems])

