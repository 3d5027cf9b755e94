"""Public API of the engine: ``WignerKernel(hypers).compute(A, B)`` → per-ν structure, atom and tensor kernels.

Work is organised in tiles of (centres of A) × (centres of B) of the same species. For each tile the ν=1
blocks come from the radial-basis route (two matrix products per l) or the exact pair sum (the two seed
strategies of ``wkviz.engine.nu1``, chosen once per request from ``Hypers.nu1_route``), the Wigner
iteration runs in Numba over the tile's pairs, and the per-pair results are summed into structure kernels.
A symmetric request (B is A) visits only tiles on or above the diagonal and, inside diagonal tiles, each
unordered pair once; the other half follows from k^ν_λ(i', i) = k^ν_λ(i, i')ᵀ.

A request may restrict the centres of B (``centers_B``, e.g. the active environments of a sparse model): B's
side of every tile then holds only the selected centres, each with its full neighbourhood in its own structure
(periodic images included), and every selected centre is one column of the output, so the work and the output
grow with atoms_A × len(centers_B) however large the structures holding them are.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np
from numba import njit

from ..errors import InputError, MemoryBudgetError, WkvizError
from ..files import atomic_write
from ..hypers import Hypers
from ..runtime import ENGINE_LOCK, check_cancel
from .neighbors import environments_for
from . import estimate as cost
from .nu1 import seed_for
from .spherical import cartesian_to_lambda1
from .tiles import gather_tables as _gather_tables, output_rows, work_list as _work_list
from .wigner import build_plan, run_plan

DEFAULT_MEMORY_BUDGET = 2 * 2**30


@dataclass
class KernelResult:
    """Kernels between two sets of structures.

    Attributes
    ----------
    K : ndarray of shape (nu_max+1, n_A, n_B)
        K[0] is the composition kernel (dot product of element counts, each hydrogen counting its centre weight);
        K[ν] = Σ over same-species centre pairs of the invariant atom kernel k^ν_{λ=0, parity=+1}. With ``centers_B`` (M selected centres c_m of B) the
        columns are the centres instead of B's structures: shape (nu_max+1, n_A, M) and
        K[ν, a, m] = Σ_{i ∈ a, Z_i = Z_{c_m}} w_i k^ν(i, c_m), the sum kernel between structure a and the single
        environment c_m (K[0, a, m] = the weighted number of atoms of a with c_m's element). The centre weights
        w_i (``Hypers.hydrogen_center_weight`` on hydrogen, 1 otherwise) weigh every K[ν], ν = 0 included, as
        w_i w_j without ``centers_B`` and as w_i (the structure side only) with it.
    K_atomic : ndarray of shape (nu_max+1, atoms_A, atoms_B) or None
        Atom-level invariant kernels (zero between different elements; K_atomic[0] = same-element indicator).
        With ``centers_B``: shape (nu_max+1, atoms_A, M), column m = centre ``centers_B[m]``.
    K_vector : ndarray of shape (nu_max+1, n_A, 3, n_B, 3) or None
        λ=1, parity +1 (polar vector) structure kernels in Cartesian (x, y, z): K(Q A, B) = Q K(A, B) for any
        Q ∈ O(3), so K(−A, B) = −K(A, B). With ``centers_B``: (nu_max+1, n_A, 3, M, 3), structure-to-centre.
    K_tensor : ndarray of shape (nu_max+1, n_A, 5, n_B, 5) or None
        λ=2, parity +1 structure kernels in real-harmonic order m = −2..2 (∝ xy, yz, 3z²−r², xz, x²−y²).
        With ``centers_B``: (nu_max+1, n_A, 5, M, 5).
    species : ndarray of int
        Atomic numbers present in A or B (B: its selected centres when ``centers_B`` is given).
    hypers : Hypers
    n_atoms_A, n_atoms_B : ndarray of int
        Atoms per structure (per column of ``K``): with ``centers_B``, ``n_atoms_B`` is all ones, one
        environment per column.
    seconds : float
    n_pairs : int
        Ordered same-species centre pairs represented by the result.
    centers_B : ndarray of int or None
        The selected centres of B (global atom indices) when the request restricted them.
    centers_A : ndarray of int or None
        The selected centres of A when the request restricted them too: then every row is one centre (``K`` and
        ``K_atomic`` are the atom kernel between the selected centres of A and of B, unweighted, and
        ``n_atoms_A`` is all ones).
    """

    K: np.ndarray
    species: np.ndarray
    hypers: Hypers
    n_atoms_A: np.ndarray
    n_atoms_B: np.ndarray
    K_atomic: np.ndarray | None = None
    K_vector: np.ndarray | None = None
    K_tensor: np.ndarray | None = None
    seconds: float = 0.0
    n_pairs: int = 0
    timings: dict = field(default_factory=dict)
    centers_B: np.ndarray | None = None
    centers_A: np.ndarray | None = None

    def to_npz(self, path) -> None:
        """Write the arrays of DESIGN.md §3 (``K``, optional ``K_atomic``/``K_vector``/``K_tensor``, ``species``,
        ``hypers`` as a JSON string; ``centers_B``/``centers_A`` when the request restricted the centres) to ``path``.

        A path is written atomically (:func:`wkviz.files.atomic_write`: a killed process leaves the previous
        file, never a truncated one) under exactly the name given (``np.savez`` alone would add ``.npz``); a
        binary file object (``io.BytesIO``) is written directly."""
        arrays = {"K": self.K, "species": self.species, "hypers": np.array(self.hypers.to_json()),
                  "n_atoms_A": self.n_atoms_A, "n_atoms_B": self.n_atoms_B}
        for name in ("K_atomic", "K_vector", "K_tensor", "centers_B", "centers_A"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        if hasattr(path, "write"):
            np.savez_compressed(path, **arrays)
            return
        with atomic_write(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def from_npz(cls, path) -> "KernelResult":
        """Read a file written by :meth:`to_npz` (no pickle involved)."""
        with np.load(path, allow_pickle=False) as data:
            get = lambda k: data[k] if k in data.files else None  # noqa: E731
            return cls(K=data["K"], species=data["species"], hypers=Hypers.from_json(str(data["hypers"])),
                       n_atoms_A=get("n_atoms_A"), n_atoms_B=get("n_atoms_B"), K_atomic=get("K_atomic"),
                       K_vector=get("K_vector"), K_tensor=get("K_tensor"), centers_B=get("centers_B"),
                       centers_A=get("centers_A"))


def _as_frames(frames, name):
    try:
        frames = list(frames)
    except TypeError:
        raise WkvizError(f"{name} must be a list of ase.Atoms structures") from None
    if not frames:
        raise WkvizError(f"{name} holds no structures; load at least one structure")
    for k, atoms in enumerate(frames):
        if not hasattr(atoms, "numbers") or not hasattr(atoms, "positions"):
            raise WkvizError(f"{name}[{k}] is not an ase.Atoms structure")
        pos = np.asarray(atoms.positions)
        if not np.all(np.isfinite(pos)):
            raise WkvizError(f"structure {k} of {name} has non-finite coordinates; fix or remove it")
    return frames


def _tensor_lams(tensor_rank, lambda_max: int | None = None) -> tuple:
    """The requested tensor orders λ (1, 2), checked against ``lambda_max`` when given."""
    if tensor_rank is None:
        return ()
    ranks = (tensor_rank,) if np.isscalar(tensor_rank) else tuple(tensor_rank)
    out = []
    for r in ranks:
        if r not in (0, 1, 2):
            raise WkvizError(f"tensor_rank must be 0, 1 or 2 (or a tuple of them), got {r!r}")
        if r:
            out.append(int(r))
    if lambda_max is not None and out and max(out) > lambda_max:
        raise WkvizError(f"a rank-{max(out)} tensor kernel needs lambda_max ≥ {max(out)}; "
                         f"raise lambda_max (now {lambda_max}) or drop tensor_rank {max(out)}")
    return tuple(sorted(set(out)))


def _as_centres(centers, frames, side: str = "B") -> np.ndarray:
    """Validated global atom indices into the atoms of ``frames`` (structure 0's atoms first); ``side`` names
    the argument (``centers_A`` or ``centers_B``) in the messages."""
    name = f"centers_{side}"
    n_total = sum(len(a) for a in frames)
    arr = np.asarray(centers)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a one-dimensional sequence of atom indices, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty; give at least one atom index of {side}, or None for every atom")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer atom indices, got dtype {arr.dtype}; for a boolean mask "
                         "pass np.flatnonzero(mask)")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= n_total)]
    if bad.size:
        raise InputError(f"{name} holds atom index {int(bad[0])}, outside {side}'s {n_total} atoms; give indices "
                         f"from 0 to {n_total - 1} (atoms of all structures of {side} in order)")
    return arr


def _element_counts(env, species, n_structures, hydrogen_weight=1.0):
    """counts[s, k]: atoms of element species[s] in structure k (a centre of its own with selected centres), each
    hydrogen counting ``hydrogen_weight`` (the centre weight w_i of the structure sums)."""
    counts = np.zeros((len(species), n_structures))
    w = np.where(env.numbers == 1, float(hydrogen_weight), 1.0)
    np.add.at(counts, (np.searchsorted(species, env.numbers), env.structure), w)
    return counts


def _expanded(numbers, expand):
    """``numbers`` of the distinct centres, repeated as the given centres were (``expand`` None: as they are)."""
    return numbers if expand is None else numbers[expand]


def _unique_in_order(centres):
    """Distinct centres in order of first appearance, and the position in it of every given centre."""
    values, first, inverse = np.unique(centres, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return values[order], rank[inverse.ravel()]


def _centre_environments(frames, centres, hypers, env_all=None):
    """Environments of the given centres only (in the given order), each with all its neighbours.

    Neighbour lists are built for the structures holding a centre (``env_all``, the environments of every
    atom of ``frames``, is used instead when already at hand). Every centre becomes its own "structure" of one
    centre, so the structure sums of the engine produce one column per centre.
    """
    if env_all is None:
        n_atoms = np.array([len(a) for a in frames], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(n_atoms)])
        owner = np.searchsorted(start, centres, side="right") - 1
        holders, slot = np.unique(owner, return_inverse=True)
        env_all = environments_for([frames[s] for s in holders], hypers)
        holder_start = np.concatenate([[0], np.cumsum(n_atoms[holders])])
        local = holder_start[slot.ravel()] + (centres - start[owner])
    else:
        local = centres
    return env_all.select(local)


@njit(cache=True)
def _sum_invariants(out, rows, pi, pj, centre_i, centre_j, structure_a, structure_b, mirror, scale, K):
    # K[1 + v, A, B] += scale · out[rows[v], p] for pair p = (centre_i[pi[p]], centre_j[pj[p]]) of structures
    # (A, B). mirror (symmetric request): the pair also stands for its transpose, unless it pairs a centre with
    # itself. Serial on purpose: the pairs of a tile add into the same few K entries.
    for p in range(pi.shape[0]):
        ci = centre_i[pi[p]]
        cj = centre_j[pj[p]]
        a = structure_a[ci]
        b = structure_b[cj]
        twin = mirror and ci != cj
        for v in range(rows.shape[0]):
            val = scale * out[rows[v], p]
            K[1 + v, a, b] += val
            if twin:
                K[1 + v, b, a] += val


class _Request(NamedTuple):
    """A validated request (see :meth:`WignerKernel.compute`)."""

    frames_A: list
    frames_B: list
    b_is_a: bool
    symmetric: bool  # B is A and every centre of B is used: the mirror half of the pairs is not computed
    atomic: bool
    tensor_lams: tuple
    centres: np.ndarray | None  # centers_B as given
    distinct: np.ndarray | None  # its distinct values, in order of first appearance
    expand: np.ndarray | None  # column of ``distinct`` for every given centre; None when already distinct
    centres_a: np.ndarray | None = None  # centers_A as given (rows are single centres of A)
    distinct_a: np.ndarray | None = None
    expand_a: np.ndarray | None = None  # row of ``distinct_a`` for every given centre of A


class _Outputs(NamedTuple):
    K: np.ndarray
    K_atomic: np.ndarray | None
    K_lam: dict  # λ → (ν_max+1, n_A, 2λ+1, n_B, 2λ+1), real-harmonic components


def _segments(sorted_ids):
    """Start offsets of runs of equal values in a non-decreasing array, and the values."""
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return starts, sorted_ids[starts]


class WignerKernel:
    """Wigner kernels of every body order between sets of structures.

    Parameters
    ----------
    hypers : Hypers, optional
        Hyperparameters (defaults of :class:`Hypers` when omitted).
    memory_budget : int
        Bytes. Tiles are sized so that the working memory stays under it, and a request whose output alone
        would not fit is refused before any work starts.
    tile_size : int, optional
        Centres per tile side; chosen from the budget when omitted.
    radial_basis : RadialBasis-like, optional
        Radial functions of the basis ν=1 route (``nu1_route="basis"``; the exact route has none), e.g.
        :class:`wkviz.engine.features.TruncatedRadialBasis` of a smaller basis; by default the optimal basis of
        ``hypers`` (:func:`wkviz.engine.density.radial_basis`). Its ``l_max`` must be ``hypers.lambda_max``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> res = WignerKernel(Hypers(nu_max=3)).compute([molecule("H2O"), molecule("CH4")])
    >>> res.K.shape
    (4, 2, 2)
    """

    def __init__(self, hypers: Hypers | None = None, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 tile_size: int | None = None, radial_basis=None):
        self.hypers = Hypers() if hypers is None else hypers
        if not isinstance(self.hypers, Hypers):
            raise TypeError("hypers must be a wkviz.Hypers instance")
        if radial_basis is not None and int(radial_basis.l_max) != self.hypers.lambda_max:
            raise InputError(f"the radial basis has l_max={radial_basis.l_max} but hypers.lambda_max is "
                             f"{self.hypers.lambda_max}; build the basis from the same hyperparameters")
        self.memory_budget = int(memory_budget)
        self.tile_size = tile_size
        self.radial_basis = radial_basis

    # ----------------------------------------------------------------------------------------------------
    def _plan(self, tensor_lams):
        h = self.hypers
        return build_plan(h.lambda_max, h.nu_max, h.schedule, h.normalization, tensor_lams)

    def _count_pairs(self, numbers_a, numbers_b, symmetric):
        za, ca = np.unique(numbers_a, return_counts=True)
        zb, cb = np.unique(numbers_b, return_counts=True)
        cb_map = dict(zip(zb.tolist(), cb.tolist()))
        pairs = sum(int(c) * cb_map.get(int(z), 0) for z, c in zip(za, ca))
        # computed pairs: each unordered pair once when symmetric (plus the diagonal)
        if symmetric:
            computed = sum(int(c) * (int(c) + 1) // 2 for c in ca)
        else:
            computed = pairs
        return pairs, computed

    def _output_bytes(self, n_a, n_b, atoms_a, atoms_b, atomic, tensor_lams):
        nu1 = self.hypers.nu_max + 1
        per = n_a * n_b * (1 + sum(9 if lam == 1 else 25 for lam in tensor_lams))
        if atomic:
            per += atoms_a * atoms_b
        return 8 * nu1 * per

    def estimate(self, frames_A, frames_B=None, *, atomic=False, tensor_rank=0, centers_B=None,
                 centers_A=None, timed=True) -> dict:
        """Time, memory and disk of a request before computing it (arguments as :meth:`compute`).

        The neighbours of every centre are counted first (no neighbour list is built); memory follows from the
        counts, time from rates measured by a short run of the engine's own steps on a few of these structures at
        the request's tile size (:mod:`wkviz.engine.estimate`; about a second, once per process and kind of
        request). A request over the memory budget is not timed.

        Parameters
        ----------
        timed : bool
            False: no micro-run; ``seconds`` then comes from the reference machine's throughput.

        Returns
        -------
        dict
            ``n_pairs`` (ordered same-species centre pairs), ``computed_pairs`` (pairs actually iterated),
            ``seconds`` (wall time of :meth:`compute` in this process), ``memory_bytes`` (peak of everything that
            grows with the request) with its parts in ``memory`` (``neighbours``, ``densities``, ``tile``,
            ``outputs``), ``output_bytes`` (the kernels), ``disk_bytes`` (a kernel store of the request,
            uncompressed), ``neighbours`` (pairs within the cutoff), ``tile_side``, ``fits`` and ``reason`` (the
            sentence refusing the request, or None), ``measured`` (whether ``seconds`` comes from the micro-run),
            ``compile_seconds`` (first calls of the kernels, not in ``seconds``) and ``rates``. With
            ``centers_B`` everything counts the selected centres of B only; with ``centers_A`` those of A only
            (and ``seconds`` is the reference machine's throughput: the micro-run samples whole structures).
        """
        req = self._validate(frames_A, frames_B, atomic, tensor_rank, centers_B, refuse=False, centers_A=centers_A)
        return self._estimate(req, timed)

    def _estimate(self, req, timed: bool) -> dict:
        h = self.hypers
        t_scan = time.perf_counter()
        scan_a = cost.prescan(req.frames_A, h.cutoff, req.distinct_a)
        scan_b = scan_a if req.symmetric else cost.prescan(req.frames_B, h.cutoff, req.distinct)
        t_scan = time.perf_counter() - t_scan
        plan = self._plan(req.tensor_lams)
        side = self.tile_size or self._auto_tile(plan.n_seed, len(plan.outputs), plan.n_rows)
        species = np.unique(np.concatenate([scan_a.numbers, scan_b.numbers]))
        tiles = _work_list(scan_a.numbers, scan_b.numbers, species, side, req.symmetric)
        computed = sum(t.work for t in tiles)
        pairs = sum(len(t.rows) * len(t.cols) * (2 if req.symmetric and not t.diag else 1) for t in tiles)
        if req.expand is not None or req.expand_a is not None:
            pairs, _ = self._count_pairs(_expanded(scan_a.numbers, req.expand_a),
                                         _expanded(scan_b.numbers, req.expand), False)
        n_b = len(req.frames_B) if req.centres is None else len(req.centres)
        atoms_b = len(scan_b.numbers) if req.centres is None else len(req.centres)
        n_a = len(req.frames_A) if req.centres_a is None else len(req.centres_a)
        atoms_a = len(scan_a.numbers) if req.centres_a is None else len(req.centres_a)
        sizes = (n_a, n_b, atoms_a, atoms_b)
        out_bytes = self._output_bytes(*sizes, req.atomic, req.tensor_lams)
        parts = cost.memory_parts(h, scan_a, scan_b, req.symmetric, side, plan, out_bytes, req.atomic,
                                 req.tensor_lams, self.radial_basis)
        reason = self._output_refusal(req, out_bytes) or cost.refusal(parts, self.memory_budget, scan_a, scan_b,
                                                                      req.symmetric, h.cutoff)
        result = {"n_pairs": int(pairs), "computed_pairs": int(computed), "output_bytes": int(out_bytes),
                  "memory_bytes": parts["total"], "memory": parts,
                  "disk_bytes": self._output_bytes(*sizes, False, req.tensor_lams),
                  "neighbours": scan_a.rows + (0 if req.symmetric else scan_b.rows), "tile_side": int(side),
                  "fits": reason is None, "reason": reason, "budget": self.memory_budget, "measured": False,
                  "compile_seconds": 0.0, "rates": None, "seconds": cost.fallback_seconds(plan, computed)}
        # the micro-run samples whole structures of A, which selected centres of A are not
        if timed and reason is None and tiles and req.centres_a is None:
            big = max(tiles, key=lambda t: len(t.rows) * len(t.cols))
            rates = cost.measure_rates(self, req.frames_A, scan_a, cost.channels(h, scan_a, scan_b), plan,
                                       (len(big.rows), len(big.cols)),
                                       big.species, req.tensor_lams, req.atomic, self._accumulate)
            work = cost.tile_work(tiles, scan_a.counts, scan_b.counts, numba.get_num_threads())
            # compute repeats the pre-scan (its memory check)
            result.update(seconds=t_scan + cost.predict_seconds(rates, work, plan, [scan_a] if req.symmetric else
                                                                [scan_a, scan_b], h.nu1_route),
                          measured=True, compile_seconds=rates.compile_seconds, rates=rates._asdict())
        return result

    # ----------------------------------------------------------------------------------------------------
    def compute(self, frames_A, frames_B=None, *, atomic=False, tensor_rank=0, centers_B=None, centers_A=None,
                progress=None, cancel=None) -> KernelResult:
        """Compute invariant (and optionally atomic and tensorial) Wigner kernels.

        Parameters
        ----------
        frames_A : sequence of ase.Atoms
        frames_B : sequence of ase.Atoms, optional
            ``None`` means B = A; the symmetric request computes each unordered centre pair once.
        atomic : bool
            Also return atom-level invariant kernels ``K_atomic``.
        tensor_rank : int or tuple of int
            1 → ``K_vector`` (λ=1), 2 → ``K_tensor`` (λ=2), (1, 2) → both. Uses the full recursion.
        centers_B : sequence of int, optional
            Restrict B's side to these centres: global atom indices into the atoms of ``frames_B`` (of
            ``frames_A`` when ``frames_B`` is None), structure 0's atoms first. Every kernel then has one
            column per given centre, in the given order (``K[ν, a, m] = Σ_{i∈a} k^ν(i, centers_B[m])``, see
            :class:`KernelResult`), and the work and memory grow with atoms_A × len(centers_B). Each centre
            still sees all its neighbours (periodic images included). A repeated index gives a repeated column
            (computed once). Out-of-range, negative, non-integer or no indices raise
            :class:`~wkviz.errors.InputError`. With ``frames_B=None`` the request is A × (centres of A),
            computed as a rectangular one.
        centers_A : sequence of int, optional
            Restrict A's side the same way (global atom indices into the atoms of ``frames_A``): every row is
            then one given centre with its full neighbourhood, unweighted. With both ``centers_A`` and
            ``centers_B``, ``K[ν]`` (and ``K_atomic``) is the atom kernel k^ν between the two sets of centres —
            e.g. a sparse model's K_MM among its active environments, at the cost of len(centers_A) ×
            len(centers_B) pairs instead of the atoms of every structure holding one.
        progress : callable, optional
            Called as ``progress(fraction_done, eta_seconds)`` after every tile (eta ``None`` at the start).
        cancel : threading.Event or callable, optional
            Checked between tiles; when set, :class:`~wkviz.errors.Cancelled` is raised.

        Returns
        -------
        KernelResult
        """
        start = time.perf_counter()
        req = self._validate(frames_A, frames_B, atomic, tensor_rank, centers_B, centers_A=centers_A)
        reason = self._estimate(req, timed=False)["reason"]  # neighbours counted, not listed: refused up front
        if reason:
            raise MemoryBudgetError(reason)
        timings = {}
        t0 = time.perf_counter()
        env_a, env_b = self._environments(req)
        timings["neighbours"] = time.perf_counter() - t0
        species = np.unique(np.concatenate([env_a.numbers, env_b.numbers]))
        out = self._allocate(req, env_a, env_b, species)
        plan = self._plan(req.tensor_lams)

        seed = seed_for(self.hypers, self.radial_basis)
        timings.update(seed.prepare(env_a, env_b, self._channels(env_a, env_b), req.symmetric))
        side = self.tile_size or self._auto_tile(plan.n_seed, len(plan.outputs), plan.n_rows)
        tiles = _work_list(env_a.numbers, env_b.numbers, species, side, req.symmetric)
        n_pairs = sum(len(t.rows) * len(t.cols) * (2 if req.symmetric and not t.diag else 1) for t in tiles)

        timings.update(self._run_tiles(req, tiles, seed, plan, env_a, env_b, out, start, progress, cancel))
        return self._result(req, out, env_a, env_b, species, n_pairs, timings, start)

    def _validate(self, frames_A, frames_B, atomic, tensor_rank, centers_B, refuse=True,
                  centers_A=None) -> "_Request":
        """The checked request: frames, symmetry, tensor ranks, selected centres, and (``refuse``) the output
        fits the budget."""
        h = self.hypers
        frames_A = _as_frames(frames_A, "frames_A")
        b_is_a = frames_B is None
        frames_B = frames_A if b_is_a else _as_frames(frames_B, "frames_B")
        tensor_lams = _tensor_lams(tensor_rank, h.lambda_max)
        centres = distinct = expand = None
        if centers_B is not None:
            centres = _as_centres(centers_B, frames_B)
            distinct, expand = _unique_in_order(centres)
            if len(distinct) == len(centres):
                expand = None  # already distinct: the columns come out in the given order
        centres_a = distinct_a = expand_a = None
        if centers_A is not None:
            centres_a = _as_centres(centers_A, frames_A, "A")
            distinct_a, expand_a = _unique_in_order(centres_a)
            if len(distinct_a) == len(centres_a):
                expand_a = None

        symmetric = b_is_a and centers_B is None and centers_A is None
        req = _Request(frames_A=frames_A, frames_B=frames_B, b_is_a=b_is_a, symmetric=symmetric,
                       atomic=atomic, tensor_lams=tensor_lams, centres=centres, distinct=distinct, expand=expand,
                       centres_a=centres_a, distinct_a=distinct_a, expand_a=expand_a)
        if refuse:
            n_b = len(frames_B) if centres is None else len(centres)
            atoms_b = sum(len(b) for b in frames_B) if centres is None else len(centres)
            n_a = len(frames_A) if centres_a is None else len(centres_a)
            atoms_a = sum(len(a) for a in frames_A) if centres_a is None else len(centres_a)
            reason = self._output_refusal(req, self._output_bytes(n_a, n_b, atoms_a, atoms_b, atomic, tensor_lams))
            if reason:
                raise MemoryBudgetError(reason)
        # with selected centres B is never A (rows are atoms' structures, columns centres): no mirror symmetry
        return req

    def _output_refusal(self, req, out_bytes) -> str | None:
        """The sentence refusing a request whose kernels alone exceed the budget, or None."""
        if out_bytes <= self.memory_budget:
            return None
        return (f"the requested kernels need {out_bytes / 2**30:.2f} GiB but the memory budget is "
                f"{self.memory_budget / 2**30:.2f} GiB; use fewer structures"
                f"{', drop the atomic kernels' if req.atomic else ''}"
                f"{', drop the tensor kernels' if req.tensor_lams else ''}"
                f"{', select fewer centres of B' if req.centres is not None else ''}"
                f"{', select fewer centres of A' if req.centres_a is not None else ''} or raise the budget")

    def _environments(self, req):
        """Environments of each side: its atoms, or only its distinct selected centres."""
        h = self.hypers
        if req.centres_a is None:
            env_a = environments_for(req.frames_A, h)
        else:
            env_a = _centre_environments(req.frames_A, req.distinct_a, h)
        if req.symmetric:
            return env_a, env_a
        if req.centres is None:
            return env_a, environments_for(req.frames_B, h)
        every_a = req.b_is_a and req.centres_a is None  # env_a then holds every atom of B
        return env_a, _centre_environments(req.frames_B, req.distinct, h, env_all=env_a if every_a else None)

    def _allocate(self, req, env_a, env_b, species) -> "_Outputs":
        """Zeroed outputs, with ν = 0 (composition and same-element indicator) filled in."""
        h = self.hypers
        # distinct centres while computing; repeats are copied at the end
        n_a = len(req.frames_A) if req.centres_a is None else env_a.n_centers
        n_b = len(req.frames_B) if req.centres is None else env_b.n_centers
        # K[0] = Σ w_i w_j over same-element atom pairs, like every K[ν]; selected centres carry no weight of
        # their own (see _run_tiles)
        w_c = h.hydrogen_center_weight
        counts_a = _element_counts(env_a, species, n_a, 1.0 if req.centres_a is not None else w_c)
        counts_b = counts_a if req.symmetric else _element_counts(env_b, species, n_b,
                                                                   1.0 if req.centres is not None else w_c)
        nu1 = h.nu_max + 1
        K = np.zeros((nu1, n_a, n_b))
        K[0] = counts_a.T @ counts_b
        K_atomic = None
        if req.atomic:
            K_atomic = np.zeros((nu1, env_a.n_centers, env_b.n_centers))
            K_atomic[0] = env_a.numbers[:, None] == env_b.numbers[None, :]
        K_lam = {lam: np.zeros((nu1, n_a, 2 * lam + 1, n_b, 2 * lam + 1)) for lam in req.tensor_lams}
        return _Outputs(K=K, K_atomic=K_atomic, K_lam=K_lam)

    def _channels(self, env_a, env_b):
        """Neighbour species that get a density channel."""
        if self.hypers.species_coupling:  # a neighbour element of one side also overlaps the other side's elements
            return np.union1d(np.unique(env_a.neighbor_numbers), np.unique(env_b.neighbor_numbers))
        return np.intersect1d(np.unique(env_a.neighbor_numbers), np.unique(env_b.neighbor_numbers))

    def _run_tiles(self, req, tiles, seed, plan, env_a, env_b, out, start, progress, cancel) -> dict:
        """ν=1 blocks, Wigner iteration and structure sums of every tile; returns the phase timings."""
        h = self.hypers
        inv_rows, lam_rows = output_rows(plan, h.nu_max, req.tensor_lams)
        gather_for = _gather_tables(plan, seed.layout)
        total_work = max(1, sum(t.work for t in tiles))
        if progress is not None:
            progress(0.0, None)
        done = 0
        t_seed = t_iter = t_acc = 0.0
        for t in tiles:
            check_cancel(cancel, "kernel computation")
            nI, nJ = len(t.rows), len(t.cols)
            if t.diag:
                pi, pj = np.triu_indices(nI)
            else:
                pi, pj = np.divmod(np.arange(nI * nJ), nJ)
            t0 = time.perf_counter()
            with ENGINE_LOCK:
                src, gi, gj = seed.blocks(t, pi, pj)
                t1 = time.perf_counter()
                pair_out = run_plan(plan, src, gather_for(nI, nJ), gi, gj)
                t2 = time.perf_counter()
            t_seed += t1 - t0
            t_iter += t2 - t1
            # a tile holds centres of one element: structure sums weigh its pairs by w_i w_j = w_z²; a structure
            # against single selected centres by the structure's w_i only (cov(Σ_i w_i ε_i, ε_m) of the GP); two
            # selected centres not at all
            w_z = h.hydrogen_center_weight if t.species == 1 else 1.0
            scale = w_z ** (2 - (req.centres is not None) - (req.centres_a is not None))
            self._accumulate(pair_out, pi, pj, nI, nJ, t.diag, req.symmetric, t.rows, t.cols, env_a, env_b,
                             inv_rows, lam_rows, scale, out.K, out.K_atomic, out.K_lam)
            t_acc += time.perf_counter() - t2
            done += t.work
            if progress is not None:
                elapsed = time.perf_counter() - start
                frac = done / total_work
                progress(frac, elapsed * (1.0 - frac) / frac if frac > 0 else None)
        return {"seed": t_seed, "iteration": t_iter, "accumulate": t_acc}

    def _result(self, req, out, env_a, env_b, species, n_pairs, timings, start) -> KernelResult:
        """The outputs in the caller's layout: Cartesian vectors, and a column for every repeated centre."""
        K, K_atomic = out.K, out.K_atomic
        K_vector = K_tensor = None
        if 1 in out.K_lam:
            p = cartesian_to_lambda1()
            K_vector = np.einsum("ma,vimjn,nb->viajb", p, out.K_lam[1], p, optimize=True)
        if 2 in out.K_lam:
            K_tensor = out.K_lam[2]
        n_atoms_B = env_b.n_atoms.copy()
        expand = req.expand
        if expand is not None:
            # repeated centres were computed once; every occurrence gets its column
            K = K[:, :, expand]
            K_atomic = None if K_atomic is None else K_atomic[:, :, expand]
            K_vector = None if K_vector is None else K_vector[:, :, :, expand]
            K_tensor = None if K_tensor is None else K_tensor[:, :, :, expand]
            n_atoms_B = n_atoms_B[expand]
        n_atoms_A = env_a.n_atoms.copy()
        if req.expand_a is not None:
            # repeated centres of A: every occurrence gets its row
            rows = req.expand_a
            K = K[:, rows]
            K_atomic = None if K_atomic is None else K_atomic[:, rows]
            K_vector = None if K_vector is None else K_vector[:, rows]
            K_tensor = None if K_tensor is None else K_tensor[:, rows]
            n_atoms_A = n_atoms_A[rows]
        if expand is not None or req.expand_a is not None:
            n_pairs, _ = self._count_pairs(_expanded(env_a.numbers, req.expand_a), _expanded(env_b.numbers, expand),
                                           False)
        centres = req.centres
        return KernelResult(K=K, species=species, hypers=self.hypers, n_atoms_A=n_atoms_A,
                            n_atoms_B=n_atoms_B, K_atomic=K_atomic, K_vector=K_vector,
                            K_tensor=K_tensor, seconds=time.perf_counter() - start, n_pairs=n_pairs,
                            timings=timings, centers_B=None if centres is None else centres.copy(),
                            centers_A=None if req.centres_a is None else req.centres_a.copy())

    def _auto_tile(self, n_seed, n_out, n_rows):
        # working memory per pair: the ν=1 blocks (basis route: H^l matrices; exact route: packed per pair),
        # the outputs, the pair indices and the per-tile sums of _accumulate (another copy of the outputs)
        per_pair = 8 * (n_seed + 2 * n_out + 4)
        budget = max(self.memory_budget // 4, 64 * 2**20)
        side = int(math.sqrt(budget / per_pair))
        # larger tiles only save per-tile overhead (already small at 512²) and coarsen progress and cancel
        return int(max(32, min(512, side)))

    @staticmethod
    def _accumulate(out, pi, pj, nI, nJ, diag, symmetric, ca_idx, cb_idx, env_a, env_b, inv_rows, lam_rows,
                    scale, K, K_atomic, K_lam):
        # out[o, p]: output o of pair (pi[p], pj[p]); ``scale`` weighs the structure sums (K, K_lam), not the
        # atom-level kernels
        nu_n = len(inv_rows)
        _sum_invariants(out, np.asarray(inv_rows, dtype=np.int64), pi, pj, ca_idx, cb_idx, env_a.structure,
                        env_b.structure, symmetric, float(scale), K)
        if K_atomic is not None:
            tile = np.zeros((nu_n, nI, nJ))
            tile[:, pi, pj] = out[inv_rows]
            if diag:
                # fill the lower triangle from the upper one (invariants are symmetric in the pair)
                low_i, low_j = np.tril_indices(nI, -1)
                tile[:, low_i, low_j] = tile[:, low_j, low_i]
            K_atomic[1:, ca_idx[:, None], cb_idx[None, :]] = tile
            if symmetric and not diag:
                K_atomic[1:, cb_idx[:, None], ca_idx[None, :]] = tile.transpose(0, 2, 1)
        if lam_rows:
            st_a, ua = _segments(env_a.structure[ca_idx])
            st_b, ub = _segments(env_b.structure[cb_idx])
            for lam, rows in lam_rows.items():
                d = 2 * lam + 1
                t = np.zeros((nu_n, nI, nJ, d, d))
                t[:, pi, pj] = out[rows.ravel()].reshape(nu_n, d, d, len(pi)).transpose(0, 3, 1, 2)
                if diag:
                    low_i, low_j = np.tril_indices(nI, -1)
                    # k_λ(i', i) = k_λ(i, i')ᵀ
                    t[:, low_i, low_j] = t[:, low_j, low_i].transpose(0, 1, 3, 2)
                red = np.add.reduceat(np.add.reduceat(t, st_a, axis=1), st_b, axis=2)  # [ν, sA, sB, μ, μ']
                # advanced indices separated by a slice go first: the target view is [sA, sB, ν, μ, μ']
                if scale != 1.0:
                    red *= scale
                K_lam[lam][1:, ua[:, None], :, ub[None, :], :] += red.transpose(1, 2, 0, 3, 4)
                if symmetric and not diag:
                    K_lam[lam][1:, ub[:, None], :, ua[None, :], :] += red.transpose(2, 1, 0, 4, 3)


def hypers_json(hypers: Hypers) -> str:
    """JSON string of every hyperparameter (stored as ``hypers`` in K.npz)."""
    return json.dumps(hypers.to_dict(), sort_keys=True)
