"""The two ν=1 routes of the tile loop as interchangeable seed strategies, chosen once from ``Hypers.nu1_route``.

Both have the same two steps: :meth:`prepare` for the environments of A and B once per request, then
:meth:`blocks` for every tile, which returns the tile's ν=1 blocks H^l(i, i') in a buffer together with the
pair coordinates at which the Wigner iteration finds each pair in it. Each route keeps the layout that is
cheapest for it, named by its ``layout`` attribute (the iteration's gather tables read either,
``wkviz.engine.wigner.matrix_gather`` and ``packed_gather``): the basis route writes one matrix
H^l[(i, m), (i', m')] per l (``"matrix"``, no per-pair copies), the exact route packs the blocks pair by pair
(``"packed"``).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from ..runtime import ENGINE_LOCK
from .density import DensityExpansion, basis_nu1_blocks, block_offsets, exact_nu1_pairs


class BasisSeed:
    """ν=1 blocks from density coefficients on a radial basis: one matrix product per l and tile, written as
    the matrices H^l[(i, m), (i', m')] of l = 0..L one after another (``layout = "matrix"``).

    Parameters
    ----------
    hypers : Hypers
    radial_basis : RadialBasis-like, optional
        Passed to :class:`~wkviz.engine.density.DensityExpansion`; the optimal basis of ``hypers`` when omitted.
    """

    layout = "matrix"

    def __init__(self, hypers, radial_basis=None):
        self.hypers = hypers
        self.radial_basis = radial_basis

    def prepare(self, env_a, env_b, channels, symmetric: bool) -> dict:
        """Expand the densities of A and B on the radial basis; returns the timings to report."""
        t0 = time.perf_counter()
        h = self.hypers
        with ENGINE_LOCK:
            self.dens_a = DensityExpansion(env_a, h, channels, radial_basis=self.radial_basis)
            self.dens_b = self.dens_a if symmetric else DensityExpansion(env_b, h, channels,
                                                                         radial_basis=self.radial_basis)
        # neighbour species of each centre: a tile sums only over the channels both of its sides occupy
        # (most QM9 tiles have no centre next to F, say, so that channel would only multiply zeros)
        self.masks_a = self.dens_a.channel_masks()
        self.masks_b = self.masks_a if symmetric else self.dens_b.channel_masks()
        self.n_seed = int(block_offsets(h.lambda_max)[-1])
        # consecutive tiles of one row chunk share its coefficients; the H^l buffer is reused by every tile
        self._row_coefficients = (None, None)
        self._buffer = np.empty(0)
        return {"radial_basis": time.perf_counter() - t0}

    def blocks(self, tile, pi, pj):
        """``(src, pair_i, pair_j)`` of one tile: H^l of pair p in the matrices at row ``pair_i[p]`` and column
        ``pair_j[p]`` of ``src``.

        Runs parallel kernels: call with :data:`wkviz.runtime.ENGINE_LOCK` held. ``src`` is a buffer reused by
        the next tile.
        """
        if self._row_coefficients[0] != (tile.species, tile.row):
            self._row_coefficients = ((tile.species, tile.row), self.dens_a.coefficients(tile.rows))
        coef_i = self._row_coefficients[1]
        coef_j = coef_i if tile.diag else self.dens_b.coefficients(tile.cols)
        size = self.n_seed * len(tile.rows) * len(tile.cols)
        if self._buffer.size < size:
            self._buffer = np.empty(size)
        shared = np.bitwise_or.reduce(self.masks_a[tile.rows]) & np.bitwise_or.reduce(self.masks_b[tile.cols])
        # H^l of every (i, j) of the tile written straight into the layout the iteration gathers from
        basis_nu1_blocks(coef_i, coef_j, self.hypers.lambda_max, out=self._buffer,
                         features=self.dens_a.features(shared), upper=tile.diag, threads=numba.get_num_threads())
        return self._buffer, pi, pj


class ExactSeed:
    """ν=1 blocks by the exact, basis-free pair sum, packed per pair: component k of pair p at src[p, k]
    (``layout = "packed"``).

    Parameters
    ----------
    hypers : Hypers
    radial_basis : ignored
        Accepted for the common interface: this route has no radial basis.
    """

    layout = "packed"

    def __init__(self, hypers, radial_basis=None):
        self.hypers = hypers

    def prepare(self, env_a, env_b, channels, symmetric: bool) -> dict:
        """Keep the environments (the pair sum reads them tile by tile); nothing to time."""
        self.env_a, self.env_b = env_a, env_b
        return {}

    def blocks(self, tile, pi, pj):
        """``(src, pair_i, pair_j)`` of one tile: pair p in row p of ``src``; call with
        :data:`wkviz.runtime.ENGINE_LOCK` held."""
        src = exact_nu1_pairs(self.env_a, tile.rows, self.env_b, tile.cols, pi, pj, self.hypers)
        return src, np.arange(len(pi)), np.zeros(len(pi), dtype=np.int64)


#: The seed strategy of each ``Hypers.nu1_route``.
SEEDS = {"basis": BasisSeed, "exact": ExactSeed}


def seed_for(hypers, radial_basis=None):
    """The ν=1 seed strategy of ``hypers.nu1_route`` (``radial_basis`` is used by the basis route only)."""
    return SEEDS[hypers.nu1_route](hypers, radial_basis=radial_basis)
