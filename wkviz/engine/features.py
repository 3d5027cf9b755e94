"""Explicit body-ordered invariant features: the feature-space counterpart of the Wigner kernels.

A feature-space model (NICE, ACE, featomic's ``DensityCorrelations``) builds ν-fold tensor products of the
density coefficients and couples them to irreducible blocks with Clebsch–Gordan (CG) coefficients. wkviz
computes the *same* kernels without ever forming these features (MATH.md §4): products of Wigner D-matrices
(the kernel trick over rotations) replace products of features. This module builds the features explicitly,
so that the two routes can be compared number by number and cost by cost (``benchmarks/bench_body_order.py``,
the Teach page).

Construction
------------
ν = 1: the density coefficients c^a_{nlm}(i) of the optimal radial basis (``wkviz.engine.density``), one feature
channel q = (a, n) per neighbour species a and radial function n, block (l, parity +1), l ≤ L:

    A^1_{l,+}[q, m](i) = c^a_{nlm}(i).

ν → ν+1 (real CG, ``wkviz.engine.spherical.real_cg``), for every block (l1, σ1) of order ν and l2 ≤ L:

    A^{ν+1}_{λσ}[(path, p, q), μ] = Σ_{m1 m2} C^{l1 l2 λ}[m1, m2, μ] A^ν_{l1σ1}[p, m1] A^1_{l2}[q, m2],
    σ = σ1 (−1)^{l1+l2+λ},   |l1 − l2| ≤ λ ≤ min(l1 + l2, L_int),

the features of all paths (l1, σ1, l2) landing in the same (λ, σ) concatenated. The invariants of order ν are
the block (λ=0, σ=+1); the feature count is the product of channel counts along each path, so it grows like
(n_species · n_radial)^ν (exactly: :func:`feature_counts`).

Truncation
----------
``truncation="engine"`` keeps intermediates λ ≤ L, exactly as the Wigner iteration does, so the invariant
kernels agree with wkviz's for *every* ν (MATH.md §7). ``truncation="complete"`` keeps everything the
invariants can see (order k up to λ ≤ min(k, ν_max − k)·L): the invariants are then those of the untruncated
ν-fold product of the seed h_L, ∫h_L^ν. Both are identical for ν ≤ 3 (an order-2 block with λ > L cannot
couple with l2 ≤ L to λ = 0), and differ from ν = 4 on (MATH.md §6).

Kernel identity (the constant 8π²)
----------------------------------
With H^l_{mm'}(i,i') = Σ_q A^1_l[q,m](i) A^1_l[q,m'](i') the overlap is h(R) = Σ_l H^l : D^l(R) and the Wigner
kernel is k^ν_λ = ∫dR D^λ(R) h(R)^ν = 8π²/(2λ+1) F^ν_λ, F^ν the D-coefficients of h^ν (Haar volume 8π²). By
induction F^ν_{λσ}[μ,μ'] = Σ_p A^ν_{λσ}[p,μ](i) A^ν_{λσ}[p,μ'](i'): true for ν = 1, and inserting it into the
product rule F^{ν+1} = Σ C C F^ν F^1 factorises every term into (C A^ν A^1)(i)·(C A^ν A^1)(i'). Hence, for the
invariants (λ = 0, D^0 = 1),

    k^ν_{0,+}(i, i') = 8π² · Σ_p A^ν_{0,+}[p](i) A^ν_{0,+}[p](i')   (same-species centres),

with one constant for all ν, paths and species because the product rule holds with the *orthonormal* real CG
(stacked over λ they form an orthogonal matrix; MATH.md §4). Other coupling normalisations (featomic's
(−1)^l/√(2l+1) power spectrum, lab-cosmo's reweighting, MATH.md §8, §10) give path-dependent weights and no
single constant.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, MemoryBudgetError
from ..runtime import check_cancel

EIGHT_PI2 = 8.0 * math.pi**2
#: The constant of the kernel identity k^ν_{0,+} = FEATURE_KERNEL_CONSTANT · (linear kernel of the features).
FEATURE_KERNEL_CONSTANT = EIGHT_PI2
DEFAULT_MEMORY_BUDGET = 4 * 2**30
TRUNCATIONS = ("engine", "complete")


# --------------------------------------------------------------------------------------------------------
# bookkeeping shared by the counts, the memory estimate and the computation


def _per_l(n_radial, lambda_max) -> tuple:
    """Radial functions per l as a tuple of length L+1 (an int means the same number for every l)."""
    if np.isscalar(n_radial):
        n = int(n_radial)
        if n < 1:
            raise InputError(f"n_radial must be at least 1, got {n_radial}; use one radial function or more.")
        return (n,) * (lambda_max + 1)
    out = tuple(int(v) for v in n_radial)
    if len(out) != lambda_max + 1:
        raise InputError(f"n_radial has {len(out)} entries but lambda_max={lambda_max} needs {lambda_max + 1} "
                         f"(one per l = 0..{lambda_max}); pass one number per l or a single int.")
    if min(out) < 0:
        raise InputError("n_radial entries must be non-negative radial-function counts.")
    return out


def _lambda_top(order, nu_max, lambda_max, truncation, invariants_only):
    """Largest λ stored at ``order``: what the requested outputs can still see."""
    if truncation == "engine":
        top = lambda_max
    else:
        top = order * lambda_max
    if invariants_only:
        # an order-k block needs λ ≤ (ν_max − k)·L to reach λ = 0 with the remaining ν_max − k seeds (l ≤ L)
        top = min(top, (nu_max - order) * lambda_max)
    return top


@functools.lru_cache(maxsize=256)
def _schedule(nu_max, lambda_max, channels, truncation, invariants_only):
    """Coupling paths and block sizes of every order.

    Returns
    -------
    list of dict
        ``out[nu]`` (nu = 1..nu_max) maps (λ, σ) → (n_features, paths), paths being tuples
        (l1, σ1, l2, offset, size) with ``offset``/``size`` the slice of the block's feature axis they fill.
    """
    L = lambda_max
    if truncation not in TRUNCATIONS:
        raise InputError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}.")
    orders = [None, {}]
    top1 = 0 if invariants_only and nu_max == 1 else _lambda_top(1, nu_max, L, truncation, invariants_only)
    for l in range(min(L, top1) + 1):
        if channels[l]:
            orders[1][(l, 1)] = (channels[l], ())
    for nu in range(2, nu_max + 1):
        top = _lambda_top(nu, nu_max, L, truncation, invariants_only)
        if nu == nu_max and invariants_only:
            top = 0
        blocks = {}
        for (l1, s1), (n1, _) in sorted(orders[nu - 1].items()):
            for l2 in range(L + 1):
                if not channels[l2]:
                    continue
                for lam in range(abs(l1 - l2), min(l1 + l2, top) + 1):
                    if nu == nu_max and invariants_only and lam != 0:
                        continue
                    sigma = s1 * (-1) ** (l1 + l2 + lam)
                    if nu == nu_max and invariants_only and sigma != 1:
                        continue
                    size, paths = blocks.get((lam, sigma), (0, ()))
                    blocks[(lam, sigma)] = (size + n1 * channels[l2], paths + ((l1, s1, l2, size, n1 * channels[l2]),))
        orders.append(dict(sorted(blocks.items())))
    return orders


def feature_counts(nu, n_radial, n_species, lambda_max, *, truncation="engine", invariants_only=False) -> dict:
    """Number of equivariant features of order ν per block, without computing them.

    Parameters
    ----------
    nu : int
        Body order (ν ≥ 1): features are ν-fold products of density coefficients.
    n_radial : int or sequence of int
        Radial functions per angular channel (one number, or one per l = 0..lambda_max).
    n_species : int
        Neighbour species channels.
    lambda_max : int
        L: the seed carries l ≤ L; with ``truncation="engine"`` every intermediate too.
    truncation : {"engine", "complete"}
    invariants_only : bool
        Count only what invariants of order ``nu`` need (the last order then has the (0, +1) block only).

    Returns
    -------
    dict
        (λ, σ) → number of features per environment (each with 2λ+1 components).
    """
    _check_orders(nu, lambda_max)
    if int(n_species) < 1:
        raise InputError(f"n_species must be at least 1, got {n_species}.")
    channels = tuple(int(n_species) * n for n in _per_l(n_radial, lambda_max))
    sched = _schedule(int(nu), int(lambda_max), channels, truncation, bool(invariants_only))
    return {key: size for key, (size, _) in sched[nu].items()}


def n_invariant_features(nu, n_radial, n_species, lambda_max, *, truncation="engine") -> int:
    """Number of invariant (λ = 0, parity +1) features of order ν per environment, without computing them.

    Closed forms for checking: ν = 1: N_0; ν = 2: Σ_l N_l²; ν = 3: Σ N_{l1} N_{l2} N_{l3} over l1, l2, l3 ≤ L
    with |l1 − l2| ≤ l3 ≤ l1 + l2 and l1 + l2 + l3 even, where N_l = n_species · n_radial[l]. Both truncations
    give the same count for ν ≤ 3.

    Parameters
    ----------
    nu, n_radial, n_species, lambda_max, truncation
        As in :func:`feature_counts`.

    Returns
    -------
    int
    """
    return int(feature_counts(nu, n_radial, n_species, lambda_max, truncation=truncation,
                              invariants_only=True).get((0, 1), 0))


def _check_orders(nu, lambda_max):
    if isinstance(nu, bool) or int(nu) != nu or nu < 1:
        raise InputError(f"nu must be a whole number ≥ 1, got {nu!r}.")
    if isinstance(lambda_max, bool) or int(lambda_max) != lambda_max or lambda_max < 0:
        raise InputError(f"lambda_max must be a whole number ≥ 0, got {lambda_max!r}.")


def _block_bytes(blocks, n_env) -> int:
    return sum(8 * n_env * size * (2 * lam + 1) for (lam, _), size in blocks.items())


def estimate_memory(n_environments, nu_max, n_radial, n_species, lambda_max, *, truncation="engine",
                    chunk_size=None, kernels=True, keep_equivariant=False) -> dict:
    """Peak memory of :func:`body_ordered_features` (and the linear kernels), without computing anything.

    Parameters
    ----------
    n_environments : int
        Atom-centred environments (all centres of all structures).
    nu_max, n_radial, n_species, lambda_max, truncation
        As in :func:`feature_counts`.
    chunk_size : int, optional
        Environments coupled at a time; by default as many as fit in a quarter of the default budget.
    kernels : bool
        Include the ``nu_max+1`` atom kernel matrices (n_environments² doubles each).
    keep_equivariant : bool
        Include every equivariant block of every order for all environments (as returned for tests).

    Returns
    -------
    dict
        ``invariants`` (bytes of the stored invariant features of all orders), ``working`` (per-chunk
        equivariant blocks and coupling temporaries), ``kernels``, ``total`` (bytes), ``chunk_size`` and
        ``n_invariant`` (features per environment, per order).
    """
    _check_orders(nu_max, lambda_max)
    channels = tuple(n_species * n for n in _per_l(n_radial, lambda_max))
    sched = _schedule(int(nu_max), int(lambda_max), channels, truncation, not keep_equivariant)
    n_inv = [0] + [sched[nu].get((0, 1), (0, ()))[0] for nu in range(1, nu_max + 1)]
    inv_bytes = 8 * n_environments * sum(n_inv)
    if chunk_size is None:
        chunk_size = choose_chunk_size(sched, channels, n_environments, DEFAULT_MEMORY_BUDGET // 4)
    per_env = _working_bytes_per_env(sched, channels)
    working = per_env * min(chunk_size, max(n_environments, 1))
    if keep_equivariant:
        working += sum(_block_bytes({k: v[0] for k, v in sched[nu].items()}, n_environments)
                       for nu in range(1, nu_max + 1))
    # the nu_max+1 kernels plus one being formed in the species-sorted order
    kern = 8 * (nu_max + 2) * n_environments**2 if kernels else 0
    # the density coefficients (padded, as wkviz.engine.density returns them) are held while the features are built
    seed = 8 * n_environments * (lambda_max + 1) * max(channels) * (2 * lambda_max + 1)
    return {"invariants": inv_bytes, "working": working, "kernels": kern, "seed": seed,
            "total": inv_bytes + working + kern + seed, "chunk_size": int(chunk_size), "n_invariant": n_inv}


def _working_bytes_per_env(sched, channels):
    """Per-environment bytes of two consecutive orders' blocks plus the largest coupling temporaries."""
    nu_max = len(sched) - 1
    worst = 0
    for nu in range(2, nu_max + 1):
        prev = _block_bytes({k: v[0] for k, v in sched[nu - 1].items()}, 1)
        cur = _block_bytes({k: v[0] for k, v in sched[nu].items()}, 1)
        temp = 0
        for (l1, s1), (n1, _) in sched[nu - 1].items():
            for l2, n2 in enumerate(channels):
                lams = [lam for (lam, s) in sched[nu] if abs(l1 - l2) <= lam <= l1 + l2]
                k = sum(2 * lam + 1 for lam in set(lams))
                # a path with several λ holds its GEMM result (p1·q2·K) and one strided λ slice copy; a scalar
                # output is written in place
                if k > 1:
                    temp = max(temp, 8 * n1 * n2 * k * 2)
        worst = max(worst, prev + cur + temp)
    return worst


def choose_chunk_size(sched, channels, n_env, budget) -> int:
    """Environments per chunk so that one chunk's intermediates stay within ``budget`` bytes (1..512)."""
    per_env = max(_working_bytes_per_env(sched, channels), 1)
    return int(max(1, min(max(n_env, 1), 512, budget // per_env)))


# --------------------------------------------------------------------------------------------------------
# density coefficients as ν = 1 features


class TruncatedRadialBasis:
    """The optimal radial basis of ``wkviz.engine.density`` restricted to its first ``n`` functions per l.

    The optimal functions are Nyström eigenfunctions of the radial kernel k_l ordered by decreasing eigenvalue,
    so the first n of them give the best rank-n approximation k_l ≈ Σ_{n'<n} φ_ln'(r) φ_ln'(r'): a
    size-controllable, still orthonormal, basis. Same interface as :class:`wkviz.engine.density.RadialBasis`
    (``l_max``, ``cutoff``, ``n_radial``, ``n_max``, ``evaluate``), so it can stand in for it.

    Parameters
    ----------
    basis : wkviz.engine.density.RadialBasis
    n : int
        Functions kept per l (at most what the full basis has for that l).
    """

    def __init__(self, basis, n: int):
        if int(n) < 1:
            raise InputError(f"a radial basis needs at least one function, got n={n}.")
        self.full = basis
        self.l_max = basis.l_max
        self.cutoff = basis.cutoff
        self.n_radial = np.minimum(np.asarray(basis.n_radial, dtype=np.int64), int(n))
        self.n_max = int(max(self.n_radial.max(), 1))

    def evaluate(self, r) -> np.ndarray:
        """φ_ln(r), shape (len(r), l_max+1, n_max), zero past ``n_radial[l]``."""
        phi = self.full.evaluate(r)[:, :, : self.n_max].copy()
        for l, n in enumerate(self.n_radial):
            phi[:, l, n:] = 0.0
        return phi


@dataclass
class Density:
    """ν = 1 features of every environment: density coefficients grouped by l.

    Attributes
    ----------
    blocks : list of ndarray
        ``blocks[l]`` has shape (n_environments, n_species·n_radial[l], 2l+1): channel q = a·n_radial[l] + n.
    numbers : ndarray of int, shape (n_environments,)
        Atomic number of each centre.
    structure : ndarray of int, shape (n_environments,)
        Structure index of each centre.
    species : ndarray of int
        Neighbour species channels (atomic numbers).
    n_radial : ndarray of int, shape (lambda_max+1,)
        Radial functions kept per l.
    lambda_max : int
    """

    blocks: list
    numbers: np.ndarray
    structure: np.ndarray
    species: np.ndarray
    n_radial: np.ndarray
    lambda_max: int

    @property
    def n_environments(self) -> int:
        return len(self.numbers)

    @property
    def channels(self) -> tuple:
        return tuple(int(b.shape[1]) for b in self.blocks)


def density_from_coefficients(coef, n_radial_full, n_channels, *, n_radial=None) -> list:
    """Regroup ``DensityExpansion.coefficients`` output c[i, l, f, m] into per-l blocks, dropping padding.

    Parameters
    ----------
    coef : ndarray of shape (n_env, L+1, n_channels·n_max, 2L+1)
        f = channel·n_max + n, m padded to 2L+1 (the layout of ``wkviz.engine.density``).
    n_radial_full : sequence of int
        Radial functions per l in ``coef`` (entries past them are padding zeros).
    n_channels : int
        Species channels.
    n_radial : int, optional
        Keep only the first ``n_radial`` functions per l (the truncated basis, since coefficients are linear in
        the radial functions).

    Returns
    -------
    list of ndarray
        ``[l]`` of shape (n_env, n_channels·n_kept[l], 2l+1).
    """
    n_env, n_l, n_f, _ = coef.shape
    n_max = n_f // n_channels
    out = []
    for l in range(n_l):
        keep = int(n_radial_full[l]) if n_radial is None else min(int(n_radial), int(n_radial_full[l]))
        c = coef[:, l, :, : 2 * l + 1].reshape(n_env, n_channels, n_max, 2 * l + 1)[:, :, :keep, :]
        out.append(np.ascontiguousarray(c.reshape(n_env, n_channels * keep, 2 * l + 1)))
    return out


def density_features(frames, hypers, *, n_radial=None, species=None, radial_basis=None) -> Density:
    """ν = 1 features: density coefficients of every atom of ``frames`` on the optimal radial basis.

    Uses ``wkviz.engine.density.DensityExpansion`` (the engine's own coefficients and basis), so that the engine's
    ν = 1 kernel H^l = Σ_q c c' is built from exactly these numbers when ``hypers.nu1_route == "basis"``.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    hypers : Hypers
        ``cutoff``, ``cutoff_width``, ``density_width``, ``density_scaling`` and ``lambda_max`` are used.
    n_radial : int, optional
        Keep the first ``n_radial`` optimal functions per l (:class:`TruncatedRadialBasis`); all when omitted.
    species : sequence of int, optional
        Neighbour species channels; by default every neighbour species present (the engine's choice for a
        symmetric request).
    radial_basis : RadialBasis-like, optional
        Expand on this basis instead of the optimal one of ``hypers`` (as ``WignerKernel(radial_basis=...)``).

    Returns
    -------
    Density
    """
    from .density import DensityExpansion
    from .neighbors import environments_for

    env = environments_for(frames, hypers)
    if species is None:
        species = np.unique(env.neighbor_numbers)
    species = np.asarray(species, dtype=np.int64)
    if len(species) == 0:
        raise InputError("no atom has a neighbour within the cutoff; raise the cutoff or load larger structures.")
    dens = DensityExpansion(env, hypers, species, radial_basis=radial_basis)
    coef = dens.coefficients(np.arange(env.n_centers))
    n_full = np.asarray(dens.basis.n_radial, dtype=np.int64)
    blocks = density_from_coefficients(coef, n_full, len(species), n_radial=n_radial)
    kept = np.array([b.shape[1] // len(species) for b in blocks], dtype=np.int64)
    return Density(blocks=blocks, numbers=env.numbers.copy(), structure=env.structure.copy(), species=species,
                   n_radial=kept, lambda_max=hypers.lambda_max)


# --------------------------------------------------------------------------------------------------------
# the CG products


@functools.lru_cache(maxsize=None)
def _stacked_cg(l1, l2, lams):
    """Real CG C^{l1 l2 λ} for the λ in ``lams`` stacked on the last axis: (2l1+1, 2l2+1, Σ(2λ+1))."""
    from .spherical import real_cg

    c = np.concatenate([real_cg(l1, l2, lam) for lam in lams], axis=2)
    c.setflags(write=False)
    return c


def _couple_chunk(prev, seed, targets):
    """Blocks of order ν+1 for one chunk of environments.

    prev: {(l1, σ1): (n_env, p1, 2l1+1)}, seed: [l] → (n_env, q2, 2l2+1); targets: the schedule of order ν+1.
    """
    n_env = seed[0].shape[0]
    out = {key: np.empty((n_env, size, 2 * key[0] + 1)) for key, (size, _) in targets.items()}
    # group the target paths by (l1, σ1, l2): one CG contraction serves every λ of that pair
    groups = {}
    for (lam, sigma), (_, paths) in targets.items():
        for l1, s1, l2, off, size in paths:
            groups.setdefault((l1, s1, l2), []).append((lam, sigma, off, size))
    for (l1, s1, l2), dests in groups.items():
        x = prev[(l1, s1)]
        y = seed[l2]
        p1, d1 = x.shape[1], 2 * l1 + 1
        q2, d2 = y.shape[1], 2 * l2 + 1
        lams = tuple(sorted({lam for lam, *_ in dests}))
        c = _stacked_cg(l1, l2, lams)
        k = c.shape[2]
        # contract the small seed side first, U[i, m1, (q, k)] = Σ_m2 y[i, q, m2] C[m1, m2, k], so that the
        # large order-ν block x is read once, as it is, by one batched GEMM: R[i, p, (q, k)] = x[i] @ U[i]
        u = np.einsum("iqn,mnk->imqk", y, c, optimize=True).reshape(n_env, d1, q2 * k)
        if k == 1:
            # one scalar output (always the case for invariants): write straight into the block when the
            # destination can be viewed as (n_env, p1, q2) without a copy
            lam, sigma, off, size = dests[0]
            block = out[(lam, sigma)]
            target = block[:, off:off + size, 0].reshape(n_env, p1, q2)
            if np.shares_memory(target, block):
                np.matmul(x, u, out=target)
            else:
                block[:, off:off + size, 0] = np.matmul(x, u).reshape(n_env, size)
            continue
        r = np.matmul(x, u).reshape(n_env, p1, q2, k)
        start = {}
        s = 0
        for lam in lams:
            start[lam] = s
            s += 2 * lam + 1
        for lam, sigma, off, size in dests:
            d = 2 * lam + 1
            # feature index within the path: p1-major, then q2 (any fixed order works: both environments of a
            # kernel entry use the same one)
            out[(lam, sigma)][:, off:off + size, :] = r[:, :, :, start[lam]:start[lam] + d].reshape(n_env, size, d)
    return out


@dataclass
class FeatureResult:
    """Body-ordered features of a set of environments.

    Attributes
    ----------
    invariants : dict
        ν → ndarray (n_environments, n_invariant(ν)): the (λ=0, parity +1) features of order ν.
    equivariants : dict or None
        ν → {(λ, σ): ndarray (n_environments, n_features, 2λ+1)} when ``keep_equivariant`` was requested.
    numbers, structure : ndarray of int
        Centre atomic numbers and structure indices.
    counts : dict
        ν → {(λ, σ): n_features} of the blocks that were formed.
    seconds : float
    """

    invariants: dict
    numbers: np.ndarray
    structure: np.ndarray
    counts: dict
    equivariants: dict | None = None
    seconds: float = 0.0
    estimate: dict = field(default_factory=dict)


def body_ordered_features(density: Density, nu_max: int, *, truncation="engine", keep_equivariant=False,
                          memory_budget=DEFAULT_MEMORY_BUDGET, chunk_size=None, progress=None,
                          cancel=None) -> FeatureResult:
    """Every equivariant ν-body feature up to ``nu_max`` by iterated CG products, A^{ν+1} = CG(A^ν ⊗ A^1).

    Parameters
    ----------
    density : Density
        ν = 1 features (:func:`density_features`).
    nu_max : int
        Highest order ν.
    truncation : {"engine", "complete"}
        ``"engine"``: intermediates λ ≤ L (identical invariant kernels to the Wigner iteration for every ν).
        ``"complete"``: no truncation beyond the seed's l ≤ L (∫h_L^ν; identical to ``"engine"`` for ν ≤ 3).
    keep_equivariant : bool
        Also return every (λ, σ) block of every order (memory grows fast: tests and teaching only).
    memory_budget : int
        Bytes; :class:`~wkviz.errors.MemoryBudgetError` is raised *before* any work when
        :func:`estimate_memory` exceeds it.
    chunk_size : int, optional
        Environments coupled at a time (the intermediates of one chunk are alive at once).
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every chunk (as in ``WignerKernel.compute``).
    cancel : threading.Event or callable, optional
        Checked between chunks; raises :class:`~wkviz.errors.Cancelled` when set.

    Returns
    -------
    FeatureResult
    """
    start = time.perf_counter()
    L = density.lambda_max
    _check_orders(nu_max, L)
    nu_max = int(nu_max)
    channels = density.channels
    sched = _schedule(nu_max, L, channels, truncation, not keep_equivariant)
    n_env = density.n_environments
    n_species = len(density.species)
    n_rad = tuple(int(c // n_species) for c in channels)
    if chunk_size is None:
        chunk_size = choose_chunk_size(sched, channels, n_env, max(memory_budget // 4, 64 * 2**20))
    est = estimate_memory(n_env, nu_max, n_rad, n_species, L, truncation=truncation, chunk_size=chunk_size,
                          kernels=False, keep_equivariant=keep_equivariant)
    if est["total"] > memory_budget:
        raise MemoryBudgetError(
            f"explicit features up to nu={nu_max} need about {est['total'] / 2**30:.2f} GiB "
            f"({est['n_invariant'][nu_max]:,} invariant features per environment × {n_env} environments) but the "
            f"memory budget is {memory_budget / 2**30:.2f} GiB; lower nu_max, the radial basis size or the number "
            f"of structures, or raise the budget")

    invariants = {nu: np.empty((n_env, sched[nu][(0, 1)][0] if (0, 1) in sched[nu] else 0))
                  for nu in range(1, nu_max + 1)}
    equivariants = None
    if keep_equivariant:
        equivariants = {nu: {key: np.empty((n_env, size, 2 * key[0] + 1)) for key, (size, _) in sched[nu].items()}
                        for nu in range(1, nu_max + 1)}
    for s in range(0, max(n_env, 1), chunk_size):
        check_cancel(cancel, "feature computation")
        sl = slice(s, min(s + chunk_size, n_env))
        seed = [b[sl] for b in density.blocks]
        blocks = {(l, 1): seed[l] for l in range(L + 1) if (l, 1) in sched[1]}
        for nu in range(1, nu_max + 1):
            if nu > 1:
                blocks = _couple_chunk(blocks, seed, sched[nu])
            if (0, 1) in blocks:
                invariants[nu][sl] = blocks[(0, 1)][:, :, 0]
            if keep_equivariant:
                for key, arr in blocks.items():
                    equivariants[nu][key][sl] = arr
        if progress is not None:
            frac = min(1.0, sl.stop / max(n_env, 1))
            elapsed = time.perf_counter() - start
            progress(frac, elapsed * (1.0 - frac) / frac if frac > 0 else None)
    counts = {nu: {key: size for key, (size, _) in sched[nu].items()} for nu in range(1, nu_max + 1)}
    return FeatureResult(invariants=invariants, numbers=density.numbers, structure=density.structure,
                         counts=counts, equivariants=equivariants, seconds=time.perf_counter() - start,
                         estimate=est)


# --------------------------------------------------------------------------------------------------------
# linear kernels of the features


def linear_kernel(features, numbers, features_b=None, numbers_b=None) -> np.ndarray:
    """Same-species linear kernel X Xᵀ of atom features (zero between centres of different elements).

    Parameters
    ----------
    features : ndarray of shape (n, d)
    numbers : ndarray of int, shape (n,)
        Atomic number of each centre.
    features_b, numbers_b : optional
        Second set; the first set again when omitted.

    Returns
    -------
    ndarray of shape (n, n_b)
    """
    symmetric = features_b is None
    xb = features if symmetric else features_b
    zb = numbers if numbers_b is None else numbers_b
    out = np.zeros((features.shape[0], xb.shape[0]))
    for z in np.intersect1d(numbers, zb):
        ia = np.flatnonzero(numbers == z)
        ib = ia if symmetric else np.flatnonzero(zb == z)
        # a contiguous run of centres is a view; otherwise fancy indexing copies, so copy each side once
        xa = _rows(features, ia)
        out[np.ix_(ia, ib)] = xa @ (xa if symmetric else _rows(xb, ib)).T
    return out


def _rows(x, idx):
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return x[idx[0]:idx[-1] + 1]
    return x[idx]


@dataclass
class FeatureKernelResult:
    """Kernels of the explicit-feature route, laid out like :class:`wkviz.engine.kernels.KernelResult`.

    Attributes
    ----------
    K_atomic : ndarray of shape (nu_max+1, n_atoms, n_atoms)
        K_atomic[0] = same-element indicator; K_atomic[ν] = 8π² × (same-species linear kernel of the order-ν
        invariant features) — equal to the Wigner atom kernel (module docstring).
    K : ndarray of shape (nu_max+1, n_structures, n_structures)
        Structure sum kernels (K[0] = composition kernel).
    n_features : list of int
        Invariant features per environment, per order (index 0 unused).
    seconds : dict
        ``density``, ``features``, ``kernels`` and ``total`` wall times.
    estimate : dict
        :func:`estimate_memory` of the computation.
    """

    K_atomic: np.ndarray
    K: np.ndarray
    n_features: list
    n_radial: np.ndarray
    species: np.ndarray
    seconds: dict
    estimate: dict


def feature_kernels(frames, hypers, *, nu_max=None, n_radial=None, truncation="engine",
                    memory_budget=DEFAULT_MEMORY_BUDGET, progress=None, cancel=None,
                    radial_basis=None) -> FeatureKernelResult:
    """Invariant kernels of every order from explicit features: density → CG products → linear kernel.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    hypers : Hypers
        Density and truncation settings (``lambda_max``); ``nu_max`` defaults to ``hypers.nu_max``.
    nu_max : int, optional
    n_radial : int, optional
        Truncate the optimal radial basis to its first ``n_radial`` functions per l.
    truncation : {"engine", "complete"}
    memory_budget : int
        Bytes for features *and* kernels; refused with :class:`~wkviz.errors.MemoryBudgetError` beforehand.
    progress, cancel
        As in :func:`body_ordered_features`.
    radial_basis : RadialBasis-like, optional
        As in :func:`density_features`.

    Returns
    -------
    FeatureKernelResult
    """
    t0 = time.perf_counter()
    nu_max = hypers.nu_max if nu_max is None else int(nu_max)
    dens = density_features(frames, hypers, n_radial=n_radial, radial_basis=radial_basis)
    # centres sorted by element: each species' feature rows are then one contiguous view for the kernel GEMMs
    # (fancy indexing would copy up to the whole, possibly GiB-sized, feature matrix)
    order = np.argsort(dens.numbers, kind="stable")
    numbers_sorted = dens.numbers[order]
    dens_sorted = Density(blocks=[b[order] for b in dens.blocks], numbers=numbers_sorted,
                          structure=dens.structure[order], species=dens.species, n_radial=dens.n_radial,
                          lambda_max=dens.lambda_max)
    t1 = time.perf_counter()
    n_env = dens.n_environments
    est = estimate_memory(n_env, nu_max, tuple(dens.n_radial), len(dens.species), hypers.lambda_max,
                          truncation=truncation, kernels=True)
    if est["total"] > memory_budget:
        raise MemoryBudgetError(
            f"explicit features and kernels up to nu={nu_max} need about {est['total'] / 2**30:.2f} GiB "
            f"({est['n_invariant'][nu_max]:,} invariant features per environment × {n_env} environments) but the "
            f"memory budget is {memory_budget / 2**30:.2f} GiB; lower nu_max, the radial basis size or the number "
            f"of structures, or raise the budget")
    feats = body_ordered_features(dens_sorted, nu_max, truncation=truncation,
                                  memory_budget=memory_budget - est["kernels"], chunk_size=est["chunk_size"],
                                  progress=progress, cancel=cancel)
    t2 = time.perf_counter()
    K_atomic = np.empty((nu_max + 1, n_env, n_env))
    K_atomic[0] = dens.numbers[:, None] == dens.numbers[None, :]
    for nu in range(1, nu_max + 1):
        K_atomic[nu][np.ix_(order, order)] = FEATURE_KERNEL_CONSTANT * linear_kernel(feats.invariants[nu],
                                                                                  numbers_sorted)
        feats.invariants[nu] = None  # free each order once its kernel is formed
    n_struct = len(frames)
    onehot = np.zeros((n_env, n_struct))
    # structure sums weigh each centre by w_i (hypers.hydrogen_center_weight for H), as the engine's
    onehot[np.arange(n_env), dens.structure] = np.where(dens.numbers == 1, hypers.hydrogen_center_weight, 1.0)
    K = np.einsum("ia,vij,jb->vab", onehot, K_atomic, onehot, optimize=True)
    t3 = time.perf_counter()
    return FeatureKernelResult(K_atomic=K_atomic, K=K, n_features=[0] + [feats.counts[nu].get((0, 1), 0)
                                                                         for nu in range(1, nu_max + 1)],
                               n_radial=dens.n_radial, species=dens.species,
                               seconds={"density": t1 - t0, "features": t2 - t1, "kernels": t3 - t2,
                                        "total": t3 - t0}, estimate=est)
