"""Neighbour lists with periodic boundary conditions, grouped by centre species.

The pairs come from :func:`wkviz.geometry.neighbor_pairs` (ase's linked-cell ``neighbor_list`` for every
cutoff a :class:`~wkviz.hypers.Hypers` accepts), which handles periodic cells of any shape and isolated
molecules. The centre atom is never part of its own density: self pairs (i = j with a zero shift) are
excluded, while periodic images of the centre are genuine neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import neighbor_pairs
from ..hypers import radial_weight


def cutoff_function(r, cutoff: float, width: float) -> np.ndarray:
    """Shifted-cosine switching function f_c(r) of MATH.md §1.

    1 for r ≤ r_c − w, ½[1 + cos(π(r − r_c + w)/w)] in between, 0 for r ≥ r_c.
    """
    r = np.asarray(r, dtype=np.float64)
    t = np.clip((r - cutoff + width) / width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


@dataclass
class Environments:
    """All atom-centred environments of a list of structures, in a flat CSR layout.

    Attributes
    ----------
    numbers : ndarray of shape (n_atoms,)
        Atomic number of each centre (all atoms of all structures, in order).
    structure : ndarray of shape (n_atoms,)
        Index of the structure each centre belongs to.
    offsets : ndarray of shape (n_atoms + 1,)
        Neighbours of centre ``c`` are rows ``offsets[c]:offsets[c+1]`` of the arrays below.
    vectors : ndarray of shape (n_neighbours, 3)
        r_j − r_i (with the periodic shift), Å.
    distances : ndarray of shape (n_neighbours,)
    weights : ndarray of shape (n_neighbours,)
        Cutoff function f_c(r_ij).
    neighbor_numbers : ndarray of shape (n_neighbours,)
        Atomic number of each neighbour.
    n_atoms : ndarray of shape (n_structures,)
    neighbor_index : ndarray of shape (n_neighbours,) or None
        Index of each neighbour atom within its structure (periodic images: the atom they are images of);
        what position gradients scatter onto.
    """

    numbers: np.ndarray
    structure: np.ndarray
    offsets: np.ndarray
    vectors: np.ndarray
    distances: np.ndarray
    weights: np.ndarray
    neighbor_numbers: np.ndarray
    n_atoms: np.ndarray
    neighbor_index: np.ndarray | None = None

    @property
    def n_centers(self) -> int:
        return len(self.numbers)

    def neighbor_counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, centres) -> "Environments":
        """Environments of the given centres only (in the given order, repeats allowed), each with all its
        neighbours and counted as a structure of its own (one centre per structure)."""
        centres = np.asarray(centres, dtype=np.int64)
        first, last = self.offsets[centres], self.offsets[centres + 1]
        counts = last - first
        offsets = np.zeros(len(centres) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = np.arange(offsets[-1], dtype=np.int64) + np.repeat(first - offsets[:-1], counts)
        return Environments(numbers=self.numbers[centres].copy(),
                            structure=np.arange(len(centres), dtype=np.int64), offsets=offsets,
                            vectors=np.ascontiguousarray(self.vectors[rows]), distances=self.distances[rows].copy(),
                            weights=self.weights[rows].copy(), neighbor_numbers=self.neighbor_numbers[rows].copy(),
                            n_atoms=np.ones(len(centres), dtype=np.int64))


def build_environments(frames, cutoff: float, cutoff_width: float, *, radial_scale: float | None = None,
                       radial_exponent: float = 6.0, hydrogen_weight: float = 1.0) -> Environments:
    """Neighbour lists of every atom of every structure within ``cutoff`` (Å).

    Parameters
    ----------
    frames : sequence of ase.Atoms
    cutoff, cutoff_width : float
        Cutoff radius and width of the shifted-cosine switching region, Å.
    radial_scale, radial_exponent : float
        Radial weight u(r) = 1 / (1 + (r/r₀)^m) folded into every neighbour's weight (none when
        ``radial_scale`` is None); see :class:`wkviz.hypers.Hypers`.
    hydrogen_weight : float
        Factor on the weight of every hydrogen neighbour (:attr:`wkviz.hypers.Hypers.hydrogen_weight`).

    Returns
    -------
    Environments
    """
    numbers, structure, counts, vecs, nnum, n_atoms, jidx = [], [], [], [], [], [], []
    for s, atoms in enumerate(frames):
        z = np.asarray(atoms.numbers, dtype=np.int64)
        n = len(z)
        n_atoms.append(n)
        numbers.append(z)
        structure.append(np.full(n, s, dtype=np.int64))
        if n == 0:
            counts.append(np.zeros(0, dtype=np.int64))
            continue
        i, j, d = neighbor_pairs(atoms, cutoff)
        order = np.argsort(i, kind="stable")
        i, j, d = i[order], j[order], d[order]
        counts.append(np.bincount(i, minlength=n).astype(np.int64))
        vecs.append(np.asarray(d, dtype=np.float64))
        nnum.append(z[j])
        jidx.append(np.asarray(j, dtype=np.int64))
    counts_all = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(counts_all) + 1, dtype=np.int64)
    np.cumsum(counts_all, out=offsets[1:])
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, 3))
    distances = np.linalg.norm(vectors, axis=1)
    neighbor_numbers = np.concatenate(nnum).astype(np.int64) if nnum else np.zeros(0, dtype=np.int64)
    weights = cutoff_function(distances, cutoff, cutoff_width) * radial_weight(distances, radial_scale, radial_exponent)
    if hydrogen_weight != 1.0:
        weights = np.where(neighbor_numbers == 1, float(hydrogen_weight) * weights, weights)
    return Environments(
        numbers=np.concatenate(numbers) if numbers else np.zeros(0, dtype=np.int64),
        structure=np.concatenate(structure) if structure else np.zeros(0, dtype=np.int64),
        offsets=offsets,
        vectors=np.ascontiguousarray(vectors),
        distances=distances,
        weights=weights,
        neighbor_numbers=neighbor_numbers,
        n_atoms=np.asarray(n_atoms, dtype=np.int64),
        neighbor_index=np.concatenate(jidx) if jidx else np.zeros(0, dtype=np.int64),
    )


def environments_for(frames, hypers) -> Environments:
    """:func:`build_environments` with the cutoff, radial weight and hydrogen weight of ``hypers`` (a
    :class:`~wkviz.hypers.Hypers`): the neighbour lists and weights every density of those hyperparameters is
    built from."""
    return build_environments(frames, hypers.cutoff, hypers.cutoff_width, radial_scale=hypers.radial_scale,
                              radial_exponent=hypers.radial_exponent, hydrogen_weight=hypers.hydrogen_weight)
