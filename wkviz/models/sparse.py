"""Sparse (projected-process / Nyström) models on M farthest-point-sampled active structures or environments.

When N training structures make the N × N kernel too expensive (its cost grows like N², QM9's ~125 centre pairs
per molecule pair), a sparse Gaussian process needs only the kernel between the N training structures and M ≪ N
*active* structures, K_NM, and among the active ones, K_MM (a sub-block of K_NM when the active structures are
training structures): cost N·M instead of N².

Model (projected process, Rasmussen & Williams §8.3.4, in the normalised units of :mod:`wkviz.models`). With the
mixed kernel k = Σ_ν c_ν K^ν / s_ν and regulariser λ,

    w = (λ K_MM + K_MN K_NM)⁻¹ K_MN r,    f(x) = k_xM w + baseline(x),

r = y − baseline. It is solved through Nyström features φ(x) = k_xM U S^{-1/2} (K_MM = U S Uᵀ, eigenvalues below
``rcond`` × the largest dropped), i.e. ridge regression (λ I + ΦᵀΦ) z = Φᵀ r, w = U S^{-1/2} z: the condition
number is that of the exact model's (K + λ I), never its square, and a singular K_MM (duplicated active
structures) is harmless. With M = N (every training structure active) the model *is* the exact kernel ridge
model of :class:`wkviz.models.MixedKernelRidge`. Predictive variance (projected process):

    σ²(x) = σ_f² [k(x,x) − φ(x)·φ(x) + λ φ(x)ᵀ (λ I + ΦᵀΦ)⁻¹ φ(x)],

σ_f² the maximum-likelihood signal scale rᵀ(Q + λI)⁻¹r / N with Q = Φ Φᵀ.

Hyperparameters are those of the exact model — the same weight families (``"exponential"``, ``"free"`` or
fixed), the same per-element baseline, the same grouped k folds (same seed → same folds), the same CV loss —
and are searched the same way in spirit: a coarse grid of weight *shapes*, then a local refinement. Because
only one eigendecomposition per fold is needed for all overall scales of a given shape, the overall
signal-to-noise ratio is optimised exactly for every shape (a profile), and the shape is refined by
Nelder–Mead on that profile.

Active points are structures (K_NM = structure kernel to M structures) or atomic environments (K_NM[A, m] =
Σ_{i∈A} k(i, m), the sum kernel between a structure and one environment, K_MM the atom kernel among the active
environments; :func:`sparse_kernels`). The estimator does not care which: both are the projected process of the
same sum-kernel GP, and with *every* training environment active the environment model is again the exact model
(P K_AA K_AA⁺ K_AA Pᵀ = P K_AA Pᵀ = K_NN for the atom-to-structure sum P).

Active structures are chosen by farthest-point sampling (:func:`fps`) in the metric of explicit ν = 2
(power-spectrum, SOAP-equivalent) features per atom (:func:`selection_features`), which costs O(N) and no
kernel. skmatter's FPS works on explicit feature matrices too, but skmatter 0.4 pins scikit-learn < 1.9 (it
would downgrade this project's scikit-learn) and gives nothing the 20 lines of :func:`fps` do not; the kernel
metric variant (``K=``) covers precomputed kernels, which skmatter does not take.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from .core import (
    CV_LOSSES,
    WEIGHT_MODES,
    ScalarRegressor,
    _align_columns,
    _as_kernel_stack,
    _as_target,
    _blas_threads,
    _fit_baseline,
    _fold_residuals,
    _make_folds,
    _mix,
    _store_weights,
    _warn_unrepresented,
    _weight_family,
    _WeightParam,
    check_cancel,
)

__all__ = [
    "fps",
    "selection_features",
    "environment_features",
    "select_active",
    "select_active_environments",
    "SparseKernelRidge",
    "SparseScalarRegressor",
    "sparse_kernels",
]

# Relative eigenvalue floor of K_MM: directions below it carry no information the data could constrain.
_RCOND = 1e-10
# Overall log-scale grid of the profile (relative to the regulariser): c/λ from 1e-4 to 1e9.
_PROFILE_GRID = np.log(10.0) * np.arange(-4.0, 9.5, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# farthest-point sampling
# ----------------------------------------------------------------------------------------------------------------
def fps(X=None, n_select: int = 10, *, K=None, seed: int = 0, first: int | None = None):
    """Farthest-point sampling: each new point is the one farthest from those already chosen.

    Parameters
    ----------
    X : ndarray of shape (n, d), optional
        Explicit features (Euclidean distance).
    n_select : int
        Points to select (1..n).
    K : ndarray of shape (n, n), optional
        Kernel instead of features: d²(i, j) = K_ii + K_jj − 2 K_ij.
    seed : int
        Chooses the first point when ``first`` is not given.
    first : int, optional
        Index of the first point.

    Returns
    -------
    idx : ndarray of int, shape (n_select,)
        Selected indices in selection order (every prefix is an FPS subset).
    radius : ndarray of shape (n_select,)
        Distance of each selected point to the earlier ones when it was chosen (non-increasing after the first,
        which gets ``inf``): the covering radius of the prefix.
    """
    if (X is None) == (K is None):
        raise InputError("fps needs exactly one of X (features) or K (kernel)")
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise InputError(f"fps features must be a 2-D array (n, d), got shape {X.shape}")
        n = X.shape[0]
        sq = np.einsum("ij,ij->i", X, X)

        def dist2(j):
            return sq + sq[j] - 2.0 * (X @ X[j])
    else:
        K = np.asarray(K, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise InputError(f"fps needs a square kernel (n, n), got shape {K.shape}")
        n = K.shape[0]
        diag = np.diag(K).copy()

        def dist2(j):
            return diag + diag[j] - 2.0 * K[j]
    n_select = int(n_select)
    if not 1 <= n_select <= n:
        raise InputError(f"cannot select {n_select} points out of {n}; choose between 1 and {n}")
    if not np.all(np.isfinite(X if X is not None else K)):
        raise InputError("fps input contains NaN or infinite values")
    j = int(np.random.default_rng(seed).integers(n)) if first is None else int(first)
    idx = np.empty(n_select, dtype=np.int64)
    radius = np.empty(n_select)
    idx[0], radius[0] = j, np.inf
    mind = np.maximum(dist2(j), 0.0)
    mind[j] = -1.0
    for k in range(1, n_select):
        j = int(np.argmax(mind))
        idx[k], radius[k] = j, math.sqrt(max(mind[j], 0.0))
        mind = np.minimum(mind, np.maximum(dist2(j), 0.0))
        mind[idx[: k + 1]] = -1.0
    return idx, radius


def selection_features(frames, hypers, *, n_radial: int = 4, per_atom: bool = True, batch: int = 1000,
                       species=None) -> np.ndarray:
    """Explicit structure features for choosing active structures: ν = 2 power spectra of every centre,
    summed per structure and centre element (``per_atom``: divided by the number of atoms).

    Their dot product is the ν = 2 (SOAP-equivalent) sum kernel of :mod:`wkviz.engine.kernels` up to the constant 8π²
    and the radial truncation (``n_radial`` optimal functions per l), which is all a selection needs; the cost
    is linear in the number of structures.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    hypers : Hypers
    n_radial : int
        Optimal radial functions kept per l.
    per_atom : bool
        Mean instead of sum over atoms, so that the selection spreads over chemistry rather than size.
    batch : int
        Structures per batch (bounds the memory of the per-atom features).
    species : sequence of int, optional
        Elements to use as channels and centre blocks (default: all present).

    Returns
    -------
    ndarray of shape (n_structures, n_features)
    """
    from ..engine.features import body_ordered_features, density_features

    frames = list(frames)
    if species is None:
        species = np.unique(np.concatenate([np.asarray(a.numbers) for a in frames]))
    species = np.asarray(species, dtype=np.int64)
    blocks = []
    for s in range(0, len(frames), batch):
        part = frames[s:s + batch]
        dens = density_features(part, hypers, n_radial=n_radial, species=species)
        inv = body_ordered_features(dens, 2).invariants[2]
        X = np.zeros((len(part), len(species), inv.shape[1]))
        zpos = np.searchsorted(species, dens.numbers)
        np.add.at(X, (dens.structure, zpos), inv)
        X = X.reshape(len(part), -1)
        if per_atom:
            X /= np.array([len(a) for a in part], dtype=np.float64)[:, None]
        blocks.append(X)
    return np.concatenate(blocks, axis=0)


def select_active(frames, n_active: int, hypers, *, seed: int = 0, method: str = "fps", n_radial: int = 4):
    """Indices of ``n_active`` active structures among ``frames``.

    ``method="fps"``: farthest-point sampling on :func:`selection_features`; ``"random"``: a seeded random
    draw (the baseline FPS is compared with in ``benchmarks/bench_sparse.py``).
    """
    n = len(frames)
    n_active = int(n_active)
    if not 1 <= n_active <= n:
        raise InputError(f"n_active must be between 1 and the {n} training structures, got {n_active}")
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=n_active, replace=False))
    if method != "fps":
        raise InputError(f"active-set method must be 'fps' or 'random', got {method!r}")
    idx, _ = fps(selection_features(frames, hypers, n_radial=n_radial), n_active, seed=seed)
    return idx


def environment_features(frames, hypers, *, n_radial: int = 4, batch: int = 1000):
    """ν = 2 power spectrum of every atomic environment (atoms of all structures in order) and its element.

    Returns
    -------
    X : ndarray of shape (n_atoms_total, n_features)
    numbers : ndarray of int, shape (n_atoms_total,)
    """
    from ..engine.features import body_ordered_features, density_features

    frames = list(frames)
    species = np.unique(np.concatenate([np.asarray(a.numbers) for a in frames]))
    X, Z = [], []
    for s in range(0, len(frames), batch):
        dens = density_features(frames[s:s + batch], hypers, n_radial=n_radial, species=species)
        X.append(body_ordered_features(dens, 2).invariants[2])
        Z.append(dens.numbers)
    return np.concatenate(X, axis=0), np.concatenate(Z)


def _allocate(n_active, sizes):
    """Split n_active over groups proportionally to their sizes (largest remainder), ≥ 1 per group, ≤ size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if n_active < len(sizes):
        raise InputError(f"{n_active} active environments cannot cover the {len(sizes)} elements present; "
                         f"use at least {len(sizes)}")
    share = n_active * sizes / sizes.sum()
    alloc = np.maximum(1, np.floor(share).astype(np.int64))
    alloc = np.minimum(alloc, sizes)
    while alloc.sum() < n_active:
        room = alloc < sizes
        k = int(np.argmax(np.where(room, share - alloc, -np.inf)))
        alloc[k] += 1
    while alloc.sum() > n_active:
        k = int(np.argmax(np.where(alloc > 1, alloc - share, -np.inf)))
        alloc[k] -= 1
    return alloc


def select_active_environments(frames, n_active: int, hypers, *, seed: int = 0, method: str = "fps",
                               n_radial: int = 4):
    """Global atom indices (atoms of all ``frames`` in order) of ``n_active`` active environments.

    Environments of different elements never share a kernel, so the active set is split over the elements in
    proportion to their number of atoms (at least one each) and each element's share is chosen by FPS on the
    ν = 2 power spectra (:func:`environment_features`) or at random (``method="random"``).
    """
    n_total = sum(len(a) for a in frames)
    n_active = int(n_active)
    if not 1 <= n_active <= n_total:
        raise InputError(f"n_active must be between 1 and the {n_total} training environments, got {n_active}")
    if method not in ("fps", "random"):
        raise InputError(f"active-set method must be 'fps' or 'random', got {method!r}")
    numbers = np.concatenate([np.asarray(a.numbers) for a in frames])
    X = environment_features(frames, hypers, n_radial=n_radial)[0] if method == "fps" else None
    elements, sizes = np.unique(numbers, return_counts=True)
    rng = np.random.default_rng(seed)
    out = []
    for z, m in zip(elements, _allocate(n_active, sizes)):
        idx = np.flatnonzero(numbers == z)
        if method == "random":
            out.append(np.sort(rng.choice(idx, size=int(m), replace=False)))
        else:
            out.append(idx[fps(X[idx], int(m), seed=seed)[0]])
    return np.concatenate(out)


def sparse_kernels(frames, active, hypers, *, kind: str = "structures", frames_test=None, engine=None,
                   batch: int | None = None, progress=None, cancel=None):
    """The kernels a sparse model needs: training-vs-active, active-vs-active and test-vs-active.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Training structures (N).
    active : array of int
        ``kind="structures"``: indices of active structures in ``frames``; ``"environments"``: global atom
        indices (atoms of ``frames`` in order, :func:`select_active_environments`).
    hypers : Hypers
    kind : {"structures", "environments"}
    frames_test : sequence of ase.Atoms, optional
        Also the test-vs-active kernel.
    engine : WignerKernel, optional
        Engine to use (memory budget); a default one otherwise.
    batch : int, optional
        Environments only: training structures per engine call. By default the calls are as large as the
        engine's memory budget allows for their atom kernels (atoms × M, half the budget).
    progress : callable, optional
        ``progress(fraction_done, None)``.
    cancel : threading.Event or callable, optional

    Returns
    -------
    dict
        ``K_NM`` ``[nu+1, N, M]``, ``K_MM`` ``[nu+1, M, M]`` and, with ``frames_test``, ``K_TM``; ``seconds``.
        For environments ``K_NM[ν, A, m] = Σ_{i ∈ A} k^ν(i, m)`` (sum kernel between a structure and an
        environment) and ``K_MM`` is the atom kernel among the active environments.

    Notes
    -----
    For environments the engine computes only the columns of the active centres
    (``WignerKernel.compute(..., centers_B=active)``, each active centre with its full neighbourhood), so the
    cost is (training + test atoms) × M centre pairs of the same element. ``K_MM`` is the rows of the active
    atoms in the training calls' atom kernels, so it costs nothing extra; the test rows need no atom kernels.
    """
    from ..engine.kernels import WignerKernel

    engine = engine or WignerKernel(hypers)
    active = np.asarray(active, dtype=np.int64)
    frames = list(frames)
    t0 = time.perf_counter()
    if kind == "structures":
        B = [frames[i] for i in active]
        K_NM = engine.compute(frames, B, progress=progress, cancel=cancel).K
        out = {"K_NM": K_NM, "K_MM": K_NM[:, active, :]}
        if frames_test is not None:
            out["K_TM"] = engine.compute(list(frames_test), B, cancel=cancel).K
        out["seconds"] = time.perf_counter() - t0
        return out
    if kind != "environments":
        raise InputError(f"kind must be 'structures' or 'environments', got {kind!r}")
    sizes = np.array([len(a) for a in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    if active.ndim != 1 or active.size == 0 or active.min() < 0 or active.max() >= offsets[-1]:
        raise InputError(f"active environments must be atom indices in 0..{offsets[-1] - 1}")
    m = len(active)
    nu1 = engine.hypers.nu_max + 1
    if batch is None:
        # atoms per call whose atom kernels (atoms × M) take at most half the budget
        cap = max(1, int(engine.memory_budget // 2 // (8 * nu1 * m)))
        bounds = [0]
        for k in range(1, len(frames)):
            if offsets[k + 1] - offsets[bounds[-1]] > cap:
                bounds.append(k)
        bounds.append(len(frames))
    else:
        if int(batch) < 1:
            raise InputError(f"batch must be a positive number of structures, got {batch!r}")
        bounds = list(range(0, len(frames), int(batch))) + [len(frames)]
    test = None if frames_test is None else list(frames_test)
    total = float(offsets[-1] + (0 if test is None else sum(len(a) for a in test)))
    done = [0.0]

    def call_progress(n_atoms):
        """Engine progress of a call over ``n_atoms`` rows, as a fraction of all rows."""
        if progress is None:
            return None
        return lambda frac, eta: progress(min(1.0, (done[0] + frac * n_atoms) / total), None)

    blocks = []
    K_MM = np.empty((nu1, m, m))
    for s, e in zip(bounds[:-1], bounds[1:]):
        inside = np.flatnonzero((active >= offsets[s]) & (active < offsets[e]))
        n_rows = float(offsets[e] - offsets[s])
        res = engine.compute(frames[s:e], frames, centers_B=active, atomic=inside.size > 0,
                             progress=call_progress(n_rows), cancel=cancel)
        blocks.append(res.K)
        if inside.size:
            K_MM[:, inside, :] = res.K_atomic[:, active[inside] - offsets[s], :]
        done[0] += n_rows
    out = {"K_NM": np.concatenate(blocks, axis=1), "K_MM": K_MM}
    if test is not None:
        out["K_TM"] = engine.compute(test, frames, centers_B=active, cancel=cancel,
                                     progress=call_progress(total - done[0])).K
    if progress is not None:
        progress(1.0, None)
    out["seconds"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------------------------------------------
# the core estimator
# ----------------------------------------------------------------------------------------------------------------
class _Nystrom:
    """Nyström map of one weight vector: K_MM(c) = U S Uᵀ, φ(x) = k_xM(c) U S^{-1/2}."""

    def __init__(self, K_MM, nus, scales, c, rcond):
        Kmm = _mix(K_MM, nus, scales, c)
        s, U = scipy.linalg.eigh(Kmm, check_finite=False)
        keep = s > rcond * max(float(s[-1]), 1e-300)
        self.P = U[:, keep] / np.sqrt(s[keep])  # M × r
        self.rank = int(keep.sum())


class _ProfileCV:
    """CV loss of the projected-process model for a weight shape, minimised over the overall scale.

    For weights e^δ·c the Nyström features scale as e^{δ/2}·φ, so with the decomposition G_t = V E Vᵀ of each
    fold's ΦᵀΦ (from a thin SVD of Φ_t) the validation predictions for every δ are
    e^δ (Φ_v V) (Vᵀ Φ_tᵀ r_t) / (λ + e^δ E): one decomposition per fold and shape, any number of scales.
    """

    def __init__(self, K_NM, K_MM, nus, scales, y, folds, features, lam, loss, rcond, cancel):
        self.K_NM, self.K_MM, self.nus, self.scales = K_NM, K_MM, nus, scales
        self.y, self.lam, self.loss, self.rcond, self.cancel = y, lam, loss, rcond, cancel
        self.folds = _fold_residuals(folds, features, y)
        self.n_rows = sum(len(v) for _, v in folds)
        self.n_evals = 0

    def prepare(self, c):
        """Per-fold spectral pieces for the weight vector c (one shape)."""
        check_cancel(self.cancel)
        ny = _Nystrom(self.K_MM, self.nus, self.scales, c, self.rcond)
        Phi = _mix(self.K_NM, self.nus, self.scales, c) @ ny.P
        parts = []
        for t, v, r_t, b_v, y_v in self.folds:
            # thin SVD Φ_t = W Σ Vᵀ: G_t = V Σ² Vᵀ without forming ΦᵀΦ, and Φ_tᵀ r_t lies in span(V), so
            # the directions outside it (more active points than training rows) never matter
            _, sv, Vt = scipy.linalg.svd(Phi[t], full_matrices=False, check_finite=False, lapack_driver="gesdd")
            parts.append((Phi[v] @ Vt.T, Vt @ (Phi[t].T @ r_t), sv**2, b_v, y_v))
        return parts

    def loss_at(self, parts, delta):
        self.n_evals += 1
        s = math.exp(delta)
        sum_abs = sum_sq = 0.0
        for PvV, q, E, b_v, y_v in parts:
            e = PvV @ (s * q / (self.lam + s * E)) + b_v - y_v
            sum_abs += float(np.abs(e).sum())
            sum_sq += float(e @ e)
        mae = sum_abs / self.n_rows
        rmse = math.sqrt(sum_sq / self.n_rows)
        return (mae if self.loss == "mae" else rmse), mae, rmse

    def profile(self, c, lo, hi):
        """Best shift δ of log-weights (within [lo, hi]) for weights c; returns (loss, δ, mae, rmse)."""
        parts = self.prepare(c)
        grid = [d for d in _PROFILE_GRID if lo <= d <= hi] or [0.5 * (lo + hi)]
        values = [self.loss_at(parts, d)[0] for d in grid]
        k = int(np.argmin(values))
        a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        best = grid[k]
        if b > a:
            res = scipy.optimize.minimize_scalar(lambda d: self.loss_at(parts, d)[0], bounds=(a, b),
                                                 method="bounded", options={"xatol": 1e-3, "maxiter": 30})
            if res.fun <= values[k]:
                best = float(res.x)
        loss, mae, rmse = self.loss_at(parts, best)
        return loss, best, mae, rmse


def _split_theta(param: _WeightParam):
    """(indices of θ that carry the overall scale, indices that set the shape)."""
    n = param.n_theta
    if param.kind == "exponential":
        scale_idx = [0, 2] if param.has_c0 else [0]
        shape_idx = [1] + ([2] if param.has_c0 else [])
    elif param.kind == "free":
        scale_idx, shape_idx = list(range(n)), list(range(1, n))
    else:  # "scale": no shape
        scale_idx, shape_idx = [0], []
    return scale_idx, shape_idx


class SparseKernelRidge(RegressorMixin, BaseEstimator):
    """Projected-process (Nyström / subset-of-regressors) kernel ridge model on mixed body-order kernels.

    Same parameters and fitted attributes as :class:`wkviz.models.MixedKernelRidge` (``kernel_scales_``,
    ``nus_``, ``coef_weights_``, ``weights_``, ``regularization_``, ``relative_regularization_``,
    ``baseline_coef_``, ``gp_variance_``, ``noise_std_``, ``cv_mae_``, ``cv_rmse_``, ``cv_n_evals_``), except
    that ``dual_coef_`` has one entry per *active* sample and the kernel scales s_ν are the mean diagonal of
    K_MM (the exact model uses the training diagonal; with M = N they coincide).

    Parameters
    ----------
    nus, weights, regularization, baseline, n_folds, cv_loss, random_state
        As :class:`~wkviz.models.MixedKernelRidge`.
    max_iter : int
        Nelder–Mead iterations refining the weight shape after the grid (0: grid only).
    rcond : float
        Eigenvalues of K_MM below ``rcond`` × the largest are dropped (Nyström pseudo-inverse).

    Attributes
    ----------
    n_active_ : int
    nystrom_rank_ : int
        Directions of K_MM kept.
    """

    def __init__(self, *, nus=None, weights="exponential", regularization=None, baseline=True, n_folds=5,
                 cv_loss="mae", max_iter=50, random_state=0, rcond=_RCOND):
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state
        self.rcond = rcond

    def _check(self, K_NM, K_MM):
        if K_NM.shape[0] != K_MM.shape[0] or K_MM.shape[1] != K_MM.shape[2] or K_NM.shape[2] != K_MM.shape[1]:
            raise InputError(f"K_NM {K_NM.shape} and K_MM {K_MM.shape} do not match: expected "
                             "(n_kernels, N, M) and (n_kernels, M, M)")
        if self.cv_loss not in CV_LOSSES:
            raise InputError(f"cv_loss must be one of {', '.join(CV_LOSSES)}, got {self.cv_loss!r}")
        if not (isinstance(self.n_folds, (int, np.integer)) and self.n_folds >= 2):
            raise InputError(f"n_folds must be an integer ≥ 2, got {self.n_folds!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 0):
            raise InputError(f"max_iter must be a non-negative integer, got {self.max_iter!r}")
        nk = K_NM.shape[0]
        if self.nus is None:
            nus = list(range(nk))
        else:
            nus = sorted({int(nu) for nu in np.atleast_1d(self.nus)})
            bad = [nu for nu in nus if not 0 <= nu < nk]
            if bad:
                raise InputError(f"nus {bad} are not available: the kernel has body orders 0..{nk - 1}")
        if isinstance(self.weights, str):
            if self.weights not in WEIGHT_MODES:
                raise InputError(f"weights must be one of {', '.join(WEIGHT_MODES)} or an array, got {self.weights!r}")
            shape = None
        else:
            shape = np.asarray(self.weights, dtype=np.float64).ravel()
            if shape.shape != (nk,) or np.any(shape < 0) or not np.all(np.isfinite(shape)):
                raise InputError(f"explicit weights must be {nk} non-negative numbers, got {self.weights!r}")
        if self.regularization is not None and not (np.isfinite(float(self.regularization))
                                                    and float(self.regularization) > 0):
            raise InputError(f"regularization must be a positive number or None, got {self.regularization!r}")
        return nus, shape

    def fit(self, K_NM, K_MM, y, *, features=None, groups=None, cancel=None):
        """Choose the weights by k-fold CV (projected-process model on the training rows), then fit on all.

        Parameters
        ----------
        K_NM : ndarray of shape (n_kernels, n_samples, n_active)
            Kernels between training samples and active samples.
        K_MM : ndarray of shape (n_kernels, n_active, n_active)
            Kernels among active samples.
        y : ndarray of shape (n_samples,)
        features : ndarray of shape (n_samples, n_features), optional
            Baseline inputs (element counts).
        groups : ndarray of shape (n_samples,), optional
            CV groups (default: one per sample).
        cancel : optional
            Checked at every shape evaluation.
        """
        K_NM = _as_kernel_stack(K_NM, "K_NM")
        K_MM = _as_kernel_stack(K_MM, "K_MM")
        with _blas_threads(max(K_MM.shape[1], 1)):
            return self._fit(K_NM, K_MM, y, features, groups, cancel)

    def _fit(self, K_NM, K_MM, y, features, groups, cancel):
        nus, shape = self._check(K_NM, K_MM)
        n, m = K_NM.shape[1], K_MM.shape[1]
        y = _as_target(y, n)
        if y.ndim != 1:
            raise InputError(f"y must be one-dimensional, got shape {y.shape}")
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if groups.shape != (n,):
            raise InputError(f"groups must have one label per training row ({n}), got shape {groups.shape}")
        if features is not None:
            features = _as_target(features, n, "features")
            if features.ndim != 2:
                raise InputError(f"features must be 2-D (n_samples, n_features), got shape {features.shape}")
        scales = np.einsum("kii->k", K_MM) / m
        used = np.array([nu for nu in nus if scales[nu] > 0 and (shape is None or shape[nu] > 0)], dtype=np.int64)
        self.kernel_scales_ = np.where(np.isin(np.arange(K_NM.shape[0]), used), scales, 0.0)
        self.nus_ = used
        self.n_features_in_ = K_NM.shape[0]
        self.n_active_ = m

        param, lam = _weight_family(self.weights, self.regularization, used, shape)
        use_features = features if (self.baseline and features is not None) else None
        folds = _make_folds(groups, self.n_folds, self.random_state) if len(used) and param.n_theta else []

        if folds:
            cv = _ProfileCV(K_NM, K_MM, used, scales, y, folds, use_features, lam, self.cv_loss, self.rcond, cancel)
            theta, metrics = self._search(cv, param)
            self.cv_mae_, self.cv_rmse_ = metrics
            self.cv_n_evals_ = cv.n_evals
        else:
            if len(used) and param.n_theta:
                warnings.warn(f"only {len(np.unique(groups))} training group(s): cannot cross-validate, using "
                              "default hyperparameters", RuntimeWarning, stacklevel=2)
            theta = param.default()
            self.cv_mae_ = self.cv_rmse_ = float("nan")
            self.cv_n_evals_ = 0

        c = _store_weights(self, param, theta, used, K_NM.shape[0], lam)
        self.baseline_coef_, r = _fit_baseline(use_features, y)
        if len(used):
            ny = _Nystrom(K_MM, used, scales, c, self.rcond)
            Phi = _mix(K_NM, used, scales, c) @ ny.P
            A = Phi.T @ Phi
            A.flat[:: A.shape[0] + 1] += lam
            self._chol = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
            z = scipy.linalg.cho_solve(self._chol, Phi.T @ r, check_finite=False)
            self._P = ny.P
            self.nystrom_rank_ = ny.rank
            self.dual_coef_ = ny.P @ z
            # σ_f² = rᵀ (Q + λI)⁻¹ r / N with (Q + λI)⁻¹ r = (r − Φ z) / λ (Woodbury)
            self.gp_variance_ = max(float(r @ (r - Phi @ z)) / (lam * n), 0.0)
        else:
            self._chol = self._P = None
            self.nystrom_rank_ = 0
            self.dual_coef_ = np.zeros(m)
            self.gp_variance_ = float(r @ r) / n
        self.noise_std_ = math.sqrt(self.gp_variance_ * lam) if len(used) else math.sqrt(self.gp_variance_)
        # the projected-process evidence is not computed: sparse weights are chosen by CV only
        self.log_marginal_likelihood_ = float("nan")
        return self

    def _search(self, cv: _ProfileCV, param: _WeightParam):
        scale_idx, shape_idx = _split_theta(param)
        lo_b, hi_b = param.bounds[0]

        def theta_of(shape_coords, delta):
            th = np.zeros(param.n_theta)
            th[scale_idx] = delta
            if param.kind == "exponential":
                th[1] = shape_coords[0]
                if param.has_c0:
                    th[2] = delta + shape_coords[1]
            elif param.kind == "free":
                th[1:] = delta + np.asarray(shape_coords)
            return th

        def shape_of(theta):
            if param.kind == "exponential":
                return [theta[1]] + ([theta[2] - theta[0]] if param.has_c0 else [])
            if param.kind == "free":
                return list(theta[1:] - theta[0])
            return []

        cache = {}

        def evaluate(shape_coords):
            key = tuple(np.round(shape_coords, 10))
            if key not in cache:
                c0 = param.weights(theta_of(shape_coords, 0.0))
                loss, delta, mae, rmse = cv.profile(c0, lo_b, hi_b)
                cache[key] = (loss, delta, mae, rmse)
            return cache[key]

        starts = {tuple(np.round(shape_of(th), 10)) for th in param.grid()}
        scored = sorted((evaluate(np.array(s))[0], s) for s in starts)
        best_shape = np.array(scored[0][1])
        if shape_idx and self.max_iter > 0:
            for _, s in scored[:2]:
                # log-loss keeps the simplex tolerances independent of the target's units
                res = scipy.optimize.minimize(lambda x: math.log(max(evaluate(x)[0], 1e-300)), np.array(s),
                                              method="Nelder-Mead",
                                              options={"maxiter": int(self.max_iter) * max(1, len(shape_idx)),
                                                       "xatol": 1e-2, "fatol": 1e-4})
                if evaluate(res.x)[0] < evaluate(best_shape)[0]:
                    best_shape = np.array(res.x)
        loss, delta, mae, rmse = evaluate(best_shape)
        return param.clip(theta_of(best_shape, delta)), (mae, rmse)

    def _mix_test(self, K):
        return _mix(K, self.nus_, self.kernel_scales_, self.coef_weights_[self.nus_])

    def predict(self, K, *, features=None, K_diag=None, return_std=False):
        """Predict from test-vs-active kernels ``(n_kernels, n_test, n_active)``.

        ``K_diag`` ``(n_kernels, n_test)`` (self-kernels of the test samples) is needed for ``return_std``;
        the standard deviation is that of the latent function (add ``noise_std_`` in quadrature for a new
        observation).
        """
        check_is_fitted(self, "dual_coef_")
        K = _as_kernel_stack(K, "K")
        if K.shape[0] != self.n_features_in_ or K.shape[2] != self.n_active_:
            raise InputError(f"test kernel has shape {K.shape}; expected ({self.n_features_in_}, n_test, "
                             f"{self.n_active_}) — kernels between the test and the active structures")
        t = K.shape[1]
        mix = self._mix_test(K)
        pred = mix @ self.dual_coef_
        if self.baseline_coef_ is not None:
            if features is None:
                raise InputError("this model was fitted with a baseline: pass the test features (element counts)")
            pred = pred + _as_target(features, t, "features") @ self.baseline_coef_
        if not return_std:
            return pred
        if K_diag is None:
            raise InputError("return_std needs K_diag, the self-kernels k(x, x) of every test sample, "
                             "shape (n_kernels, n_test)")
        K_diag = _as_kernel_stack(K_diag, "K_diag", ndim=2)
        if K_diag.shape != (self.n_features_in_, t):
            raise InputError(f"K_diag must have shape ({self.n_features_in_}, {t}), got {K_diag.shape}")
        if self._P is None:
            return pred, np.zeros(t)
        prior = np.zeros(t)
        for nu in self.nus_:
            prior += (self.coef_weights_[nu] / self.kernel_scales_[nu]) * K_diag[nu]
        phi = mix @ self._P
        L = np.tril(self._chol[0])
        W = scipy.linalg.solve_triangular(L, phi.T, lower=True, check_finite=False)
        var = prior - np.einsum("ij,ij->i", phi, phi) + self.regularization_ * np.einsum("ij,ij->j", W, W)
        return pred, np.sqrt(np.clip(self.gp_variance_ * var, 0.0, None))

    def summary(self) -> dict:
        """Fitted hyperparameters as a plain dict."""
        check_is_fitted(self, "dual_coef_")
        return {"nus": [int(nu) for nu in self.nus_],
                "weights": {int(nu): float(self.weights_[nu]) for nu in self.nus_},
                "relative_regularization": float(self.relative_regularization_), "cv_mae": float(self.cv_mae_),
                "cv_rmse": float(self.cv_rmse_), "cv_evaluations": int(self.cv_n_evals_),
                "noise_std": float(self.noise_std_), "n_active": int(self.n_active_),
                "nystrom_rank": int(self.nystrom_rank_)}


# ----------------------------------------------------------------------------------------------------------------
# structure scalars
# ----------------------------------------------------------------------------------------------------------------
class SparseScalarRegressor(ScalarRegressor):
    """Structure scalars with a sparse model: :class:`wkviz.models.ScalarRegressor` conventions (sum kernel and
    per-element baseline Σ_Z n_Z ε_Z; ``intensive=True``: mean kernels and per-atom baseline) on K_NM / K_MM.

    Parameters as :class:`~wkviz.models.ScalarRegressor`, plus ``rcond`` (:class:`SparseKernelRidge`).
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=True,
                 n_folds=5, cv_loss="mae", max_iter=50, random_state=0, rcond=_RCOND):
        super().__init__(intensive=intensive, nus=nus, weights=weights, regularization=regularization,
                         baseline=baseline, n_folds=n_folds, cv_loss=cv_loss, max_iter=max_iter,
                         random_state=random_state)
        self.rcond = rcond

    def _core(self, **overrides):
        params = {p: getattr(self, p) for p in ("nus", "weights", "regularization", "baseline", "n_folds",
                                                "cv_loss", "max_iter", "random_state", "rcond")}
        params.update(overrides)
        return SparseKernelRidge(**params)

    def fit(self, K_NM, K_MM, y, *, counts=None, species=None, n_atoms=None, n_atoms_active=None, cancel=None):
        """Fit on the training-vs-active kernels.

        Parameters
        ----------
        K_NM : ndarray of shape (nu_max+1, N, M)
        K_MM : ndarray of shape (nu_max+1, M, M)
        y : ndarray of shape (N,)
        counts, species, n_atoms
            As :meth:`wkviz.models.ScalarRegressor.fit`.
        n_atoms_active : ndarray of shape (M,), optional
            Atoms of the active structures; needed with ``intensive=True`` (all ones for active environments).
        """
        K_NM = _as_kernel_stack(K_NM, "K_NM")
        K_MM = _as_kernel_stack(K_MM, "K_MM")
        n = K_NM.shape[1]
        y = _as_target(y, n)
        if self.baseline and counts is None:
            raise InputError("the per-element baseline needs counts= (wkviz.data.composition_counts); "
                             "or use baseline=False")
        self.n_atoms_train_ = self._n_atoms(counts, n_atoms, n) if (self.intensive or counts is not None) else None
        if self.intensive:
            if n_atoms_active is None:
                raise InputError("an intensive sparse model needs n_atoms_active= (atoms of the active structures)")
            n_act = np.asarray(n_atoms_active, dtype=np.float64).ravel()
            if n_act.shape != (K_MM.shape[1],) or np.any(n_act <= 0):
                raise InputError(f"n_atoms_active must be {K_MM.shape[1]} positive numbers")
            self.n_atoms_active_ = n_act
            K_NM = K_NM / np.outer(self.n_atoms_train_, n_act)[None]
            K_MM = K_MM / np.outer(n_act, n_act)[None]
        features = self._features(counts, self.n_atoms_train_, n) if self.baseline else None
        if features is not None:
            _warn_unrepresented(np.asarray(counts), species)
        self.species_ = None if species is None else np.asarray(species).ravel().copy()
        self.model_ = self._core().fit(K_NM, K_MM, y, features=features, cancel=cancel)
        self._expose(self.model_)
        self.baseline_coef_ = self.model_.baseline_coef_
        self.n_active_ = self.model_.n_active_
        self.nystrom_rank_ = self.model_.nystrom_rank_
        return self

    def predict(self, K, *, counts=None, species=None, n_atoms=None, K_diag=None, return_std=False):
        """Predict from test-vs-active kernels ``[nu_max+1, n_test, M]`` (``K_diag`` ``[nu_max+1, n_test]``,
        sum kernels, for ``return_std``)."""
        check_is_fitted(self, "model_")
        K = _as_kernel_stack(K, "K")
        m = K.shape[1]
        if counts is not None:
            counts = _align_columns(counts, species, self.species_ if species is not None else None)
        if self.intensive:
            n_atoms = self._n_atoms(counts, n_atoms, m)
            K = K / np.outer(n_atoms, self.n_atoms_active_)[None]
            if K_diag is not None:
                K_diag = np.asarray(K_diag, dtype=np.float64) / (n_atoms**2)[None]
        else:
            n_atoms = None if counts is None else counts.sum(axis=1)
        features = None
        if self.model_.baseline_coef_ is not None:
            if counts is None:
                raise InputError("this model has a per-element baseline: pass counts= of the test structures")
            features = self._features(counts, n_atoms, m)
        return self.model_.predict(K, features=features, K_diag=K_diag, return_std=return_std)
