"""The engine's unit of work: tiles of same-element centres of A × B, the list of them for a request, and how the
Wigner iteration reads a tile's ν=1 blocks and writes its outputs. Shared by the tile loop of
:class:`wkviz.engine.kernels.WignerKernel` and the timed micro-run of :mod:`wkviz.engine.estimate`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .wigner import matrix_gather, packed_gather


class Tile(NamedTuple):
    """One unit of work: centres ``rows`` of A × centres ``cols`` of B, all of element ``species``."""

    species: int
    row: int  # index of the row chunk within the species (consecutive tiles share it)
    rows: np.ndarray
    cols: np.ndarray
    diag: bool  # a diagonal tile of a symmetric request: only pairs with col ≥ row are computed
    work: int  # pairs computed, for progress


def work_list(numbers_a, numbers_b, species, side, symmetric) -> list:
    """Tiles of at most ``side`` × ``side`` same-species centres; a symmetric request keeps those on or above
    the diagonal."""
    tiles = []
    for z in species:
        ia = np.flatnonzero(numbers_a == z)
        ib = np.flatnonzero(numbers_b == z)
        if len(ia) == 0 or len(ib) == 0:
            continue
        rows = [ia[s:s + side] for s in range(0, len(ia), side)]
        cols = [ib[s:s + side] for s in range(0, len(ib), side)]
        for r, ra in enumerate(rows):
            for c, cb in enumerate(cols):
                if symmetric and c < r:
                    continue
                diag = symmetric and c == r
                work = len(ra) * (len(ra) + 1) // 2 if diag else len(ra) * len(cb)
                tiles.append(Tile(int(z), r, ra, cb, diag, work))
    return tiles


def gather_tables(plan, layout):
    """How the iteration reads a seed strategy's layout: a function of a tile's sides returning the gather table."""
    if layout == "packed":
        table = packed_gather(plan)
        return lambda n_i, n_j: table
    return lambda n_i, n_j: matrix_gather(plan, n_i, n_j)[0]



def output_rows(plan, nu_max: int, tensor_lams: tuple):
    """Rows of the plan's outputs read by the per-tile sums: the invariants of ν = 1..ν_max, and per λ the
    (ν, μμ') tensor components."""
    inv_rows = [plan.output_index("inv", nu) for nu in range(1, nu_max + 1)]
    lam_rows = {lam: np.array([[plan.output_index("tensor", nu, lam, mu, mu2)
                                for mu in range(2 * lam + 1) for mu2 in range(2 * lam + 1)]
                               for nu in range(1, nu_max + 1)]) for lam in tensor_lams}
    return inv_rows, lam_rows
