"""The one neighbour list of wkviz: every pair of atoms closer than a cutoff, periodic images included.

A foundation module (like :mod:`wkviz.errors` and :mod:`wkviz.hypers`): the data stage uses it to find atoms
that sit on top of each other, the engine to build the environments its densities are summed over.
"""

from __future__ import annotations

import numpy as np

from .hypers import Hypers

__all__ = ["neighbor_pairs", "neighbor_counts"]

# Cutoffs from here up are answered by ase's neighbor_list, and so is every cutoff a Hypers accepts: the
# engine's densities sum the neighbours in the order of that list, so its kernels depend on it bit for bit.
_ASE_FROM = Hypers.spec("cutoff").bounds[0]
# Isolated structures up to this size use a dense distance matrix (cheaper than building a KD-tree).
_DENSE_MAX = 300
# Above this many atom images the image search would cost more memory than ase's linked cells.
_MAX_IMAGES = 2_000_000
# neighbor_counts queries its KD-trees this many centres at a time (bounded memory, however dense the cell).
_COUNT_BATCH = 256


def neighbor_pairs(atoms, cutoff: float):
    """Every ordered pair of atoms closer than ``cutoff``, with periodic images.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic along the directions of ``atoms.pbc``, isolated along the others.
    cutoff : float
        Distance, Å; a pair is listed when its distance is strictly below it.

    Returns
    -------
    i, j : ndarray of int, shape (n_pairs,)
        Centre and neighbour indices. Both (i, j) and (j, i) are listed; ``i`` is non-decreasing. An atom is
        never its own neighbour, but its periodic images are (i == j with a lattice shift).
    D : ndarray of shape (n_pairs, 3)
        r_j + S·cell − r_i, Å, for the integer lattice shift S of the pair.

    Notes
    -----
    For ``cutoff`` ≥ 0.5 Å (every cutoff :class:`~wkviz.hypers.Hypers` accepts) this is ase's
    ``neighbor_list`` (linked cells, O(N)) and its pair order, which the engine's kernels depend on bit for
    bit. That call costs about 3 ms whatever the structure, which for the sub-bond cutoffs of the closest-pair
    check of :func:`wkviz.data.validate_structures` is all of its cost (2,000 QM9 molecules: about 7 s instead of
    0.2 s). Below 0.5 Å the same pairs come from a dense distance matrix (isolated structures of at most 300
    atoms) or a KD-tree over the atoms and the lattice images of a Minkowski-reduced cell that can hold a
    neighbour; within one centre they are then ordered by neighbour index.
    """
    n = len(atoms)
    cutoff = float(cutoff)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if n == 0 or (n == 1 and not pbc.any()):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros((0, 3))
    if cutoff < _ASE_FROM:
        found = _isolated_pairs(atoms, cutoff) if not pbc.any() else _image_pairs(atoms, cutoff)
        if found is not None:
            return found
    from ase.neighborlist import neighbor_list

    return neighbor_list("ijD", atoms, cutoff, self_interaction=False)


def neighbor_counts(atoms, cutoff: float) -> np.ndarray:
    """Neighbours of every atom within ``cutoff``: the per-centre lengths of :func:`neighbor_pairs`, without
    listing the pairs.

    Parameters
    ----------
    atoms : ase.Atoms
    cutoff : float
        Distance, Å; a neighbour counts when its distance is strictly below it.

    Returns
    -------
    ndarray of int64, shape (len(atoms),)
        ``np.bincount(neighbor_pairs(atoms, cutoff)[0], minlength=len(atoms))``, periodic images included.

    Notes
    -----
    Memory stays bounded however dense the structure is (the pairs are never stored: KD-tree ball counts over
    the atoms and the lattice images that can hold a neighbour, a few hundred centres at a time), so a request
    can be sized, and refused, before its neighbour lists exist: 2,000 atoms in a 4 Å periodic cube at 5 Å have
    32 million pairs, about 1.3 GB as ase's lists, and are counted in about a second in a few MB.
    """
    n = len(atoms)
    cutoff = float(cutoff)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if n == 0 or (n == 1 and not pbc.any()):
        return np.zeros(n, dtype=np.int64)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    # a neighbour strictly below the cutoff is one at most the next float below it (the trees count "≤ r")
    radius = float(np.nextafter(cutoff, 0.0))
    if not pbc.any() and n <= _DENSE_MAX:
        diff = pos[None, :, :] - pos[:, None, :]
        d2 = np.einsum("ijk,ijk->ij", diff, diff)
        np.fill_diagonal(d2, np.inf)
        return np.count_nonzero(d2 < cutoff * cutoff, axis=1).astype(np.int64)
    from scipy.spatial import cKDTree

    if not pbc.any():
        return _ball_counts(cKDTree(pos), pos, radius) - 1  # each atom finds itself
    found = _lattice_images(atoms, cutoff)
    if found is None:  # a degenerate cell: let ase say what it makes of it
        return np.bincount(neighbor_pairs(atoms, cutoff)[0], minlength=n).astype(np.int64)
    home, shift_vectors = found
    counts = -np.ones(n, dtype=np.int64)  # the zero shift holds each atom itself
    # images in slabs of shifts, so the trees stay within _MAX_IMAGES points whatever the cell
    per_slab = max(1, _MAX_IMAGES // n)
    for s0 in range(0, len(shift_vectors), per_slab):
        images = (home[None, :, :] + shift_vectors[s0:s0 + per_slab, None, :]).reshape(-1, 3)
        counts += _ball_counts(cKDTree(images), home, radius)
    return counts


def _ball_counts(tree, points, radius):
    out = np.empty(len(points), dtype=np.int64)
    for s in range(0, len(points), _COUNT_BATCH):
        out[s:s + _COUNT_BATCH] = tree.query_ball_point(points[s:s + _COUNT_BATCH], radius, return_length=True)
    return out


def _lattice_images(atoms, cutoff):
    """Positions wrapped into a (Minkowski-reduced when that needs fewer shifts) cell, and every lattice shift
    vector that can hold a neighbour within ``cutoff`` (see :func:`_image_pairs`); None for a degenerate cell."""
    from ase.geometry import complete_cell
    from ase.geometry.minkowski_reduction import minkowski_reduce

    pbc = np.asarray(atoms.pbc, dtype=bool)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.linalg.norm(atoms.cell.array[pbc], axis=1) > 0):
        return None
    cell = complete_cell(atoms.cell.array)
    reach = _reach(cell, pbc, cutoff)
    if reach is None or np.any(reach > 1):
        cell = complete_cell(minkowski_reduce(atoms.cell.array, pbc=pbc)[0])
        reach = _reach(cell, pbc, cutoff, limit=None)
        if reach is None:
            return None
    shifts = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), axis=-1)
    wrap = np.where(pbc, np.floor(pos @ np.linalg.inv(cell)), 0.0)
    return pos - wrap @ cell, shifts.reshape(-1, 3).astype(np.float64) @ cell


def _sorted(i, j, D):
    order = np.lexsort((j, i))
    return i[order], j[order], D[order]


def _isolated_pairs(atoms, cutoff):
    pos = np.asarray(atoms.positions, dtype=np.float64)
    n = len(pos)
    if n <= _DENSE_MAX:
        diff = pos[None, :, :] - pos[:, None, :]  # diff[i, j] = r_j − r_i
        d2 = np.einsum("ijk,ijk->ij", diff, diff)
        np.fill_diagonal(d2, np.inf)
        i, j = np.nonzero(d2 < cutoff * cutoff)  # row-major: already sorted by (i, j)
        return i, j, diff[i, j]
    from scipy.spatial import cKDTree

    pairs = cKDTree(pos).query_pairs(cutoff, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(np.intp)
    j = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(np.intp)
    D = pos[j] - pos[i]
    keep = np.einsum("ij,ij->i", D, D) < cutoff * cutoff  # the tree keeps distances equal to the cutoff too
    return _sorted(i[keep], j[keep], D[keep])


def _reach(cell, pbc, cutoff, limit=_MAX_IMAGES):
    """Cells to search along each direction (0 along isolated ones), or None for a singular cell (or, with a
    ``limit``, more shifts along one direction than it)."""
    try:
        inverse = np.linalg.inv(cell)
    except np.linalg.LinAlgError:
        return None
    # distance between lattice planes: 1 / |reciprocal vector| (the columns of the inverse)
    heights = 1.0 / np.linalg.norm(inverse, axis=0)
    if not np.all(np.isfinite(heights[pbc]) & (heights[pbc] > 0)):
        return None
    reach = np.where(pbc, np.floor(cutoff / np.where(pbc, heights, 1.0)) + 1, 0)
    return reach.astype(np.int64) if limit is None or np.all(reach <= limit) else None


def _image_pairs(atoms, cutoff):
    """Pairs from a KD-tree over the atoms' lattice images that can hold a neighbour; None when ase should do it.

    With positions wrapped into the cell, the fractional coordinate difference of two atoms along a periodic
    direction k lies in (−1, 1), and a neighbour shifted by n_k cells is at least |f_k + n_k| · h_k away (h_k the
    distance between lattice planes): shifts up to ⌊cutoff / h_k⌋ + 1 cells hold every neighbour. A skewed cell
    has small h_k and needs many shifts; its Minkowski-reduced basis (same lattice) needs the fewest.
    """
    from ase.geometry import complete_cell
    from scipy.spatial import cKDTree

    pbc = np.asarray(atoms.pbc, dtype=bool)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    n = len(pos)
    given = atoms.cell.array
    if not np.all(np.linalg.norm(given[pbc], axis=1) > 0):
        return None  # a zero periodic vector: let ase say what it makes of it
    cell = complete_cell(given)
    reach = _reach(cell, pbc, cutoff)
    if reach is None or np.any(reach > 1):
        from ase.geometry.minkowski_reduction import minkowski_reduce

        cell = complete_cell(minkowski_reduce(given, pbc=pbc)[0])
        reach = _reach(cell, pbc, cutoff)
        if reach is None:
            return None
    n_shifts = int(np.prod(2 * reach + 1))
    if n_shifts * n > _MAX_IMAGES:
        return None
    shifts = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), axis=-1)
    shifts = shifts.reshape(-1, 3).astype(np.float64)
    zero = n_shifts // 2  # the grid is symmetric about the zero shift
    wrap = np.where(pbc, np.floor(pos @ np.linalg.inv(cell)), 0.0)  # pos = home + wrap · cell
    home = pos - wrap @ cell
    images = (home[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    close = cKDTree(home).sparse_distance_matrix(cKDTree(images), cutoff, output_type="ndarray")
    i = close["i"].astype(np.intp)
    j = (close["j"] % n).astype(np.intp)
    s = close["j"] // n
    keep = (close["v"] < cutoff) & ((i != j) | (s != zero))
    i, j, s = i[keep], j[keep], s[keep]
    # the lattice shift of the pair between the positions as given
    S = shifts[s] - wrap[j] + wrap[i]
    D = pos[j] + S @ cell - pos[i]
    return _sorted(i, j, D)
