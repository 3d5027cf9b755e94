"""One estimate of the time, memory and disk of a kernel request, from the real neighbour counts of its data.

Three steps, each cheap next to the request itself:

1. **Pre-scan** (:func:`prescan`): the neighbours of every centre, counted with
   :func:`wkviz.geometry.neighbor_counts` (the pairs are never listed, so memory stays bounded however dense the
   data is). From the counts, the tile list and the hyperparameters, :func:`memory_parts` gives the bytes of
   everything that grows with the request: neighbour lists, density coefficients (basis route), the working set
   of the largest tile (ν=1 blocks, Wigner outputs, pair indices, per-tile sums) and the kernels themselves.
   A request whose total exceeds the budget is refused before any neighbour list is built.
2. **Measured rates** (:func:`measure_rates`): a timed micro-run of the engine's own steps on a few structures
   of the user's data, at the tile size the request will use (a sample's centres repeated up to a full tile: the
   cost of a matrix product or of the Wigner iteration per pair depends on the tile size, not on which centres
   fill it). The first call of the Numba kernels (compilation, or loading from the on-disk cache) runs before
   the timing on a 2 × 2 tile and is reported apart (``compile_seconds``). Rates are kept for the rest of the
   process, keyed by the hyperparameters (ν_max aside: the iteration's cost is per CG term), the tile shape and
   the kind of data, so a later estimate reuses them.
3. **Time** (:func:`predict_seconds`): Σ over tiles of (coefficients of the tile's centres + matrix-product work
   of its ν=1 blocks + (CG terms + seed components) × pairs + per-pair sums), plus neighbour lists and
   densities scaled from the sample.

Accuracy on the bundled data at the defaults (estimate against measurement, fresh processes): BENCHMARKS.md,
"One estimate of time, memory and disk".
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import NamedTuple

import numba
import numpy as np

from ..geometry import neighbor_counts
from ..runtime import ENGINE_LOCK
from .density import radial_basis as optimal_basis
from .neighbors import environments_for
from .nu1 import seed_for
from .tiles import Tile, gather_tables, output_rows
from .wigner import run_plan

#: Requests needing less than this in all are never refused for their working memory (a smaller budget still
#: bounds the outputs and sizes the tiles): the engine does not shrink its tiles below a 64 MiB working set.
WORKING_FLOOR = 256 * 2**20

# Bytes per neighbour row: Environments (vectors 24, distances 8, weights 8, neighbour numbers 8) plus the
# per-structure lists concatenated into them and the weight temporaries while they are built.
_ENV_ROW = 48 + 56
# ase's neighbor_list of one structure while it runs (i, j, S, D, d and its sort), per pair.
_ASE_ROW = 160
# Fallback rates when nothing was measured (an estimate without the micro-run): the Wigner iteration's CG terms
# × pairs per second and ν=1 seed pairs per second on the 2-core reference machine (benchmarks/bench_kernels.py).
_TERMS_PER_SECOND = 1.2e10
_SEED_PAIRS_PER_SECOND = 3.0e6
# The micro-run's iteration runs about this many CG terms (a few tenths of a second at the defaults).
_MICRO_TERMS = 1.5e9
# Neighbour rows of the sampled structures at most (the sample's neighbour lists are built for real).
_SAMPLE_ROWS = 60_000
_SAMPLE_STRUCTURES = 12
# ase's neighbour search costs about as much per structure as for this many neighbour rows.
_ROWS_PER_STRUCTURE = 1000

_RATES: dict = {}


class Scan(NamedTuple):
    """Pre-scan of one side of a request: per centre its element, structure and neighbour count."""

    numbers: np.ndarray
    structure: np.ndarray
    counts: np.ndarray
    n_structures: int
    species: np.ndarray  # elements of the structures that hold a neighbour pair (the density channels' bound)
    max_structure_rows: int  # neighbour rows of the densest single structure (ase's transient list)
    periodic: bool

    @property
    def rows(self) -> int:
        return int(self.counts.sum())


def prescan(frames, cutoff: float, centres=None) -> Scan:
    """Neighbour counts of every centre of ``frames`` within ``cutoff`` (Å), without building neighbour lists.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    cutoff : float
    centres : array of int, optional
        Global atom indices (structure 0's atoms first): only the structures holding them are counted, and the
        scan lists these centres, each as its own structure (as the engine's selected centres of B).

    Returns
    -------
    Scan
    """
    n_atoms = np.array([len(a) for a in frames], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(n_atoms)])
    holders = range(len(frames))
    if centres is not None:
        centres = np.asarray(centres, dtype=np.int64)
        holders = np.unique(np.searchsorted(start, centres, side="right") - 1)
    counts = np.zeros(int(n_atoms.sum()), dtype=np.int64)
    species, biggest, periodic = set(), 0, False
    for s in holders:
        atoms = frames[s]
        c = neighbor_counts(atoms, cutoff)
        counts[start[s]:start[s + 1]] = c
        if c.any():
            species.update(np.unique(atoms.numbers).tolist())
        biggest = max(biggest, int(c.sum()))
        periodic = periodic or bool(np.any(atoms.pbc))
    numbers = np.concatenate([np.asarray(a.numbers, dtype=np.int64) for a in frames])
    structure = np.repeat(np.arange(len(frames)), n_atoms)
    n_structures = len(frames)
    if centres is not None:  # every selected centre a structure of its own, as in the engine
        numbers, counts = numbers[centres], counts[centres]
        structure = np.arange(len(centres))
        n_structures = len(centres)
    return Scan(numbers=numbers, structure=structure, counts=counts, n_structures=n_structures,
                species=np.array(sorted(species), dtype=np.int64), max_structure_rows=biggest, periodic=periodic)


def channels(hypers, scan_a: Scan, scan_b: Scan) -> np.ndarray:
    """Density channels (neighbour elements) the request will have, at most: the engine's rule
    (``WignerKernel._channels``) on the elements of the structures that hold neighbours."""
    if hypers.species_coupling:
        return np.union1d(scan_a.species, scan_b.species)
    return np.intersect1d(scan_a.species, scan_b.species)


def memory_parts(hypers, scan_a: Scan, scan_b: Scan, symmetric: bool, side: int, plan, output_bytes: int,
                 atomic: bool, tensor_lams: tuple, radial_basis=None) -> dict:
    """Bytes of what the request holds at its peak, by part.

    Returns
    -------
    dict
        ``neighbours`` (neighbour lists of A and B, and ase's list of the densest structure while it is built),
        ``densities`` (harmonics and radial functions of every neighbour: basis route only), ``tile`` (the
        working set of the largest tile: density coefficients of its centres, the ν=1 blocks, the Wigner
        outputs, pair indices and the per-tile sums of atom-level and tensor kernels), ``outputs`` (the kernels)
        and ``total``.
    """
    L = hypers.lambda_max
    rows = scan_a.rows + (0 if symmetric else scan_b.rows)
    neighbours = _ENV_ROW * rows + _ASE_ROW * max(scan_a.max_structure_rows, scan_b.max_structure_rows)
    # the largest tile: same-element centres of A × of B, each side at most ``side``
    n_i = n_j = 0
    for z in np.union1d(scan_a.numbers, scan_b.numbers):
        a, b = int((scan_a.numbers == z).sum()), int((scan_b.numbers == z).sum())
        if a and b and min(a, side) * min(b, side) > n_i * n_j:
            n_i, n_j = min(a, side), min(b, side)
    pairs = n_i * n_j
    nu_n = hypers.nu_max
    n_out = len(plan.outputs)
    tile = 8 * pairs * (plan.n_seed + n_out + 3)  # ν=1 blocks, Wigner outputs, pair indices
    if atomic:
        tile += 8 * nu_n * pairs * 2  # the atom tile and the outputs it is taken from
    tile += sum(8 * nu_n * pairs * (2 * lam + 1) ** 2 * 3 for lam in tensor_lams)  # tile, gathered rows, sums
    densities = 0
    if hypers.nu1_route == "basis":
        basis = optimal_basis(hypers) if radial_basis is None else radial_basis
        n_max = int(basis.n_max)
        per_row = 8 * ((L + 1) ** 2 + (L + 1) * n_max + 1)  # harmonics, radial functions, channel
        densities = per_row * rows
        features = max(1, len(channels(hypers, scan_a, scan_b))) * n_max
        # coefficients of the tile's rows and columns (with species coupling also their mixed copies), and their
        # transposed copies per l for the matrix products
        per_centre = 8 * features * ((L + 1) * (2 * L + 1) * (2 if hypers.species_coupling else 1) + (L + 1) ** 2)
        tile += per_centre * (n_i + n_j)
    else:
        # harmonics, radii, weights, elements and widths of the tile's neighbours, per side
        mean_a = scan_a.counts.mean() if len(scan_a.counts) else 0.0
        mean_b = scan_b.counts.mean() if len(scan_b.counts) else 0.0
        tile += int(8 * ((L + 1) ** 2 + 5) * (n_i * mean_a + n_j * mean_b))
    total = neighbours + densities + tile + output_bytes
    return {"neighbours": int(neighbours), "densities": int(densities), "tile": int(tile),
            "outputs": int(output_bytes), "total": int(total), "tile_shape": (int(n_i), int(n_j))}


def refusal(parts: dict, budget: int, scan_a: Scan, scan_b: Scan, symmetric: bool, cutoff: float) -> str | None:
    """The one sentence refusing a request whose memory exceeds the budget (None when it fits)."""
    if parts["total"] <= max(budget, WORKING_FLOOR):
        return None
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    counts = scan_a.counts if symmetric else np.concatenate([scan_a.counts, scan_b.counts])
    per_atom = counts.mean() if len(counts) else 0.0
    tiles = (", compute it as tiles of fewer structures into an on-disk store (--scheduler local --store PATH)"
             if scan_a.n_structures > 1 or scan_b.n_structures > 1 else "")
    return (f"this request needs about {gib(parts['total'])} (neighbour lists {gib(parts['neighbours'])} for "
            f"{int(counts.sum()):,} neighbour pairs, {per_atom:,.0f} per atom within {cutoff:g} Å; densities "
            f"{gib(parts['densities'])}; tile working set {gib(parts['tile'])}; kernels {gib(parts['outputs'])}) "
            f"but the memory budget is {gib(budget)}; use a smaller cutoff"
            f"{tiles}"
            f" or raise the memory budget (--memory-budget)")


def gemm_units(n_i: int, n_j: int, diag: bool, threads: int) -> int:
    """Centre pairs whose ν=1 blocks a tile's matrix products compute: all n_i × n_j, or for a diagonal tile the
    row bands from their own diagonal on (the band split of :func:`wkviz.engine.density.basis_nu1_blocks`)."""
    if not diag:
        return n_i * n_j
    n_bands = 4 * threads if threads > 1 else 1
    n_bands = max(1, min(max(n_bands, 4), n_i // 16))
    edges = np.linspace(0, n_i, n_bands + 1).astype(int)
    return int(sum((r1 - r0) * (n_i - r0) for r0, r1 in zip(edges[:-1], edges[1:])))


class Work(NamedTuple):
    """The work of a request's tiles in the units the rates are measured in."""

    n_tiles: int
    pairs: int  # pairs iterated
    gemm: int  # centre pairs of the matrix products (basis route)
    coef_rows: int  # neighbour rows whose coefficients are computed (row chunks once, columns per tile)
    neighbour_pairs: int  # Σ over pairs of n_i n_j (exact route)


def tile_work(tiles, counts_a, counts_b, threads: int) -> Work:
    """Sum the work of ``tiles`` (the engine's work list) from the neighbour counts of A's and B's centres."""
    pairs = gemm = coef = nbr = 0
    seen_rows = set()
    for t in tiles:
        n_i, n_j = len(t.rows), len(t.cols)
        pairs += t.work
        gemm += gemm_units(n_i, n_j, t.diag, threads)
        ca, cb = counts_a[t.rows], counts_b[t.cols]
        if (t.species, t.row) not in seen_rows:
            seen_rows.add((t.species, t.row))
            coef += int(ca.sum())
        if not t.diag:
            coef += int(cb.sum())
            nbr += int(ca.sum()) * int(cb.sum())
        else:
            nbr += (int(ca.sum()) ** 2 + int((ca * ca).sum())) // 2
    return Work(n_tiles=len(tiles), pairs=int(pairs), gemm=int(gemm), coef_rows=int(coef), neighbour_pairs=int(nbr))


class Rates(NamedTuple):
    """Seconds per unit of work, measured by :func:`measure_rates`."""

    per_tile: float  # fixed cost of a tile (Python, allocation)
    first_tile: float  # once per request: the first touch of the ν=1 buffer
    per_coef_row: float  # density coefficients, per neighbour row of a tile's centres
    per_gemm: float  # ν=1 blocks by matrix products, per centre pair (basis route)
    per_neighbour_pair: float  # exact ν=1 pair sum, per pair of neighbours (exact route)
    per_pair_term: float  # Wigner iteration, per pair and (CG term + seed component)
    per_pair_sum: float  # structure (and atom, tensor) sums, per pair
    per_env_unit: float  # neighbour lists, per (structure + rows / _ROWS_PER_STRUCTURE)
    per_density_row: float  # harmonics and radial functions, per neighbour row (basis route)
    compile_seconds: float  # the first call of the kernels (not a rate: reported apart)
    micro_seconds: float  # wall time of the timed micro-run


def _sample(frames, counts_by_structure, first=0):
    """Evenly spaced structures of ``frames`` with at most _SAMPLE_ROWS neighbour rows (always at least one),
    structure ``first`` among them."""
    n = len(frames)
    picks = np.unique(np.r_[first, np.linspace(0, n - 1, min(n, _SAMPLE_STRUCTURES)).astype(int)])
    picks = np.r_[first, picks[picks != first]]
    chosen, rows = [], 0
    for s in picks:
        if chosen and rows + counts_by_structure[s] > _SAMPLE_ROWS:
            continue
        chosen.append(int(s))
        rows += int(counts_by_structure[s])
    if rows > _SAMPLE_ROWS:  # one structure is above the cap alone: take the sparsest instead
        chosen = [int(np.argmin(counts_by_structure))]
    return chosen


def measure_rates(engine, frames, scan: Scan, channel_list, plan, tile_shape, species: int, tensor_lams: tuple,
                  atomic: bool, accumulate) -> Rates:
    """Time the engine's steps on a few structures of ``frames`` at the request's tile shape.

    Parameters
    ----------
    engine : WignerKernel
        Its hyperparameters and radial basis are used.
    frames : sequence of ase.Atoms
        The request's structures (side A); a few are sampled.
    scan : Scan
        Their pre-scan.
    channel_list : array of int
        Neighbour elements with a density channel in the request (:func:`channels`).
    plan : wigner.Plan
    tile_shape : (int, int)
        Centres per side of the request's largest tile.
    species : int
        Element of the tile timed (the one with most pairs).
    tensor_lams, atomic
        What the per-pair sums build.
    accumulate : callable
        The engine's per-tile sums (``WignerKernel._accumulate``).

    Returns
    -------
    Rates
    """
    h = engine.hypers
    threads = numba.get_num_threads()
    n_i, n_j = (max(1, int(v)) for v in tile_shape)
    key = (h.replace(nu_max=1).to_json(), tuple(tensor_lams), bool(atomic), n_i, n_j, len(channel_list),
           scan.periodic, threads, id(engine.radial_basis) if engine.radial_basis is not None else None)
    if key in _RATES:
        return _RATES[key]
    rows_per_structure = np.bincount(scan.structure, weights=scan.counts, minlength=scan.n_structures)
    holding = scan.structure[scan.numbers == species]  # the sample holds the timed element
    sample = [frames[s] for s in _sample(frames, rows_per_structure, int(holding[0]) if len(holding) else 0)]
    seed = seed_for(h, engine.radial_basis)
    inv_rows, lam_rows = output_rows(plan, h.nu_max, tensor_lams)
    gather_for = gather_tables(plan, seed.layout)
    n_work = plan.n_terms + plan.n_seed
    clock = time.perf_counter
    with ENGINE_LOCK:
        # first calls: ase's neighbour list, the radial basis, every Numba kernel on a 2 × 2 tile (compiled or
        # loaded from the on-disk cache); their cost is reported apart, never counted as a rate
        t0 = clock()
        environments_for(sample[:1], h)
        if h.nu1_route == "basis" and engine.radial_basis is None:
            optimal_basis(h)
        t1 = clock()
        env = environments_for(sample, h)
        t_env = clock() - t1
        env_units = len(sample) + env.offsets[-1] / _ROWS_PER_STRUCTURE
        centres = np.flatnonzero(env.numbers == species)
        if len(centres) == 0:  # the sample misses the element: any centre costs the same per pair
            centres = np.arange(env.n_centers)
        # a warm-up tile, then the same tile twice more: the fixed cost of a tile (its steps, the quicker run)
        small = env.select(np.resize(centres, 4))
        tiny = Tile(int(species), 0, np.arange(2), np.arange(2, 4), False, 4)
        steps = [sum(_run_tile(seed, small, channel_list, tiny, np.repeat(np.arange(2), 2), np.tile(np.arange(2), 2),
                               plan, gather_for, accumulate, inv_rows, lam_rows, atomic)[:3]) for _ in range(3)]
        t_tile = min(steps[1:])
        compile_seconds = clock() - t0 - t_env - sum(steps[1:])
        # a full tile of the request's shape, filled with the sample's centres of the element
        micro = clock()
        rep = env.select(np.resize(centres, n_i + n_j))
        rep = dataclasses.replace(rep, structure=rep.structure // 16)  # a few centres per structure sum
        t1 = clock()
        seed.prepare(rep, rep, channel_list, True)
        t_dens = clock() - t1
        tile = Tile(int(species), 0, np.arange(n_i), np.arange(n_i, n_i + n_j), False, n_i * n_j)
        r = int(min(n_i, max(1, math.ceil(_MICRO_TERMS / (n_work * n_j)))))
        pi, pj = np.repeat(np.arange(r), n_j), np.tile(np.arange(n_j), r)
        rows_j = int(rep.neighbor_counts()[n_i:].sum())
        per_coef = per_gemm = per_nbr = 0.0
        if h.nu1_route == "basis":
            t1 = clock()
            seed.dens_a.coefficients(tile.cols)
            per_coef = (clock() - t1) / max(1, rows_j)
        times = _run_tile(seed, rep, None, tile, pi, pj, plan, gather_for, accumulate, inv_rows, lam_rows, atomic)
        micro = clock() - micro
    if h.nu1_route == "basis":
        per_gemm = max(0.0, times[0] - per_coef * rows_j) / (n_i * n_j)
    else:
        counts = rep.neighbor_counts()
        per_nbr = times[0] / max(1, int((counts[pi] * counts[n_i + pj]).sum()))
    rates = Rates(per_tile=t_tile, first_tile=times[3], per_coef_row=per_coef, per_gemm=per_gemm,
                  per_neighbour_pair=per_nbr,
                  per_pair_term=times[1] / (len(pi) * n_work), per_pair_sum=times[2] / len(pi),
                  per_env_unit=t_env / env_units,
                  per_density_row=t_dens / max(1, rep.offsets[-1]) if h.nu1_route == "basis" else 0.0,
                  compile_seconds=max(0.0, compile_seconds), micro_seconds=micro)
    _RATES[key] = rates
    return rates


def _run_tile(seed, env, channels, tile, pi, pj, plan, gather_for, accumulate, inv_rows, lam_rows, atomic):
    """The engine's three steps on one tile of ``env`` × ``env`` (``channels``: prepare the seed first); returns
    their seconds (seed, iteration, sums) and the extra seconds of the seed's first call."""
    clock = time.perf_counter
    if channels is not None:
        seed.prepare(env, env, channels, True)
    first = 0.0
    if channels is None and seed.layout == "matrix":
        # once apart: the first tile of a run also pays the first touch of the ν=1 buffer (hundreds of MB at the
        # default tile size), which later tiles reuse; with few density channels that is most of a tile's cost.
        # The timed call then reuses the row chunk's coefficients, as the next tile of a row does.
        t0 = clock()
        seed.blocks(tile, pi, pj)
        first = clock() - t0
    t0 = clock()
    src, gi, gj = seed.blocks(tile, pi, pj)
    t1 = clock()
    out = run_plan(plan, src, gather_for(len(tile.rows), len(tile.cols)), gi, gj)
    t2 = clock()
    nu1 = plan.nu_max + 1
    n_s = int(env.structure.max()) + 1
    K = np.zeros((nu1, n_s, n_s))
    K_atomic = np.zeros((nu1, env.n_centers, env.n_centers)) if atomic else None
    K_lam = {lam: np.zeros((nu1, n_s, 2 * lam + 1, n_s, 2 * lam + 1)) for lam in lam_rows}
    t3 = clock()
    accumulate(out, pi, pj, len(tile.rows), len(tile.cols), False, False, tile.rows, tile.cols, env, env,
               inv_rows, lam_rows, 1.0, K, K_atomic, K_lam)
    return t1 - t0, t2 - t1, clock() - t3, max(0.0, first - (t1 - t0))


def predict_seconds(rates: Rates, work: Work, plan, scans, route: str) -> float:
    """Seconds of a request from measured ``rates`` and its ``work`` (``scans``: the pre-scans whose neighbour
    lists are built, A and, unless symmetric, B)."""
    env_units = sum(s.n_structures + s.rows / _ROWS_PER_STRUCTURE for s in scans)
    rows = sum(s.rows for s in scans)
    seconds = rates.per_env_unit * env_units + rates.per_tile * work.n_tiles + rates.first_tile
    if route == "basis":
        seconds += rates.per_density_row * rows + rates.per_coef_row * work.coef_rows + rates.per_gemm * work.gemm
    else:
        seconds += rates.per_neighbour_pair * work.neighbour_pairs
    seconds += (rates.per_pair_term * (plan.n_terms + plan.n_seed) + rates.per_pair_sum) * work.pairs
    return float(seconds)


def fallback_seconds(plan, computed_pairs: int) -> float:
    """Seconds from the reference machine's throughput (no micro-run): for estimates that must not time anything."""
    return computed_pairs * (plan.n_terms / _TERMS_PER_SECOND + 1.0 / _SEED_PAIRS_PER_SECOND)
