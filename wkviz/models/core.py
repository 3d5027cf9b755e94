"""Kernel ridge / Gaussian-process regression on mixtures of per-body-order Wigner kernels.

The model is kernel ridge regression (equivalently the mean of a Gaussian process) on

    K = Σ_ν c_ν K̃^ν,     K̃^ν = K^ν / s_ν,

where ``K^ν`` is the ν-th slice of a stacked precomputed kernel ``[nu_max+1, n, n]`` (``K[0]`` the composition
kernel) and ``s_ν`` the mean of its *training* diagonal, so that the weights ``c_ν`` of different body orders are
comparable (raw ``K^ν`` grow roughly like h^ν). The regularised system ``(K + λ I) a = y − baseline`` is solved by
Cholesky with increasing jitter and an eigendecomposition fallback, so a singular matrix never crashes a fit.

Weights are either ``"exponential"`` (default: the published "kernel exponential" ``c_ν = C α^ν/ν!`` for
ν ≥ 1, plus a free ``c_0``) or ``"free"`` (one positive ``c_ν`` per body order). They are chosen on the training
set only, by ``selection``: ``"cv"`` (default) minimises the k-fold cross-validated loss, ``"evidence"`` maximises
the Gaussian-process log marginal likelihood of the training targets (type-II maximum likelihood). Both search a
coarse grid, then run L-BFGS-B on the log-parameters with the exact gradient. The regulariser λ is fixed to 1
while the overall scale of the ``c_ν`` is optimised (the predictive mean only depends on ``c/λ``); the
Gaussian-process signal variance is then the maximum-likelihood scale, which gives the predictive standard
deviation. Cross-validated errors are reported at the chosen hyperparameters whichever way they were chosen.

Estimators (scikit-learn conventions: ``__init__`` stores keyword arguments, ``fit`` validates and learns
attributes with a trailing underscore, ``predict`` starts with ``check_is_fitted``):

* :class:`MixedKernelRidge` — the core, on any stacked precomputed kernel ``[n_kernels, n_rows, n_rows]``.
* :class:`ScalarRegressor` — structure scalars (energies: sum kernel, per-element baseline Σ_Z n_Z ε_Z;
  ``intensive=True``: mean kernel K/(n_A n_B) and a per-atom baseline on composition fractions).
* :class:`EquivariantRegressor` — λ=1 polar vectors on ``K_vector`` ``[nu+1, n, 3, n, 3]`` or λ=2 targets on
  ``K_tensor`` ``[nu+1, n, 5, n, 5]``; predictions rotate exactly with the structure.
* :class:`TensorRegressor` — symmetric 3×3 tensors as λ=0 (trace, scalar model) ⊕ λ=2 (traceless part).
* :class:`AtomicRegressor` — per-atom scalars on atom-level kernels ``K_atomic``, per-element mean baseline.

Dataset-level helpers used by the CLI, the app and :mod:`wkviz.evaluation`: :class:`KernelSet`,
:class:`TargetData`, :func:`fit_predict`, :func:`standard_models` and :func:`compare_models`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..errors import Cancelled, InputError

__all__ = [
    "MixedKernelRidge",
    "ScalarRegressor",
    "EquivariantRegressor",
    "TensorRegressor",
    "AtomicRegressor",
    "KernelSet",
    "TargetData",
    "tensor_to_lambda2",
    "lambda2_to_tensor",
    "split_symmetric_tensor",
    "join_symmetric_tensor",
    "standard_models",
    "model_nus",
    "make_regressor",
    "fit_predict",
    "compare_models",
    "check_cancel",
]

WEIGHT_MODES = ("exponential", "free")
CV_LOSSES = ("mae", "rmse")
SELECTIONS = ("cv", "evidence")
TARGET_KINDS = ("scalar", "vector", "tensor", "atomic")

# Bounds of the log-weights relative to the regulariser: c/λ from 1e-7 (that body order switched off) to 1e9
# (noise a billionth of the normalised signal; beyond that the Cholesky factor loses all digits).
_LOG_C_MIN = math.log(1e-7)
_LOG_C_MAX = math.log(1e9)
_LOG_ALPHA = (math.log(1e-4), math.log(50.0))
# Coarse grid of signal-to-noise ratios c/λ tried for every weight shape before the gradient refinement.
_GRID_LOG_SCALES = tuple(math.log(10.0**p) for p in (-1, 1, 3, 5, 7))


# ----------------------------------------------------------------------------------------------------------------
# small utilities
# ----------------------------------------------------------------------------------------------------------------
def check_cancel(cancel) -> None:
    """Raise :class:`wkviz.errors.Cancelled` if ``cancel`` (``threading.Event``-like or callable) is set."""
    if cancel is None:
        return
    flag = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if flag:
        raise Cancelled("computation cancelled")


# OpenBLAS threads spin while they wait: on a busy machine (other sessions, Numba kernels, the app) a
# 160×160 Cholesky ran 100× and a 1600×1600 one 10× slower with 2 threads than with 1 (measured on the 2-core
# reference machine). The CV search does hundreds of such solves, so it uses at most half the cores.
_SMALL_SOLVE = 1200


def _blas_threads(n: int):
    """Context limiting BLAS threads for the many solves of a CV search (1 below ``_SMALL_SOLVE`` rows)."""
    threads = 1 if n < _SMALL_SOLVE else max(1, (os.cpu_count() or 2) // 2)
    return threadpool_limits(limits=threads, user_api="blas")


# Above this many training groups the coarse grid is scored on a random subset of this size (its optimum is
# close, and L-BFGS then refines on the full training set): the grid is most of the evaluations.
_GRID_SUBSET = 800


def _as_kernel_stack(K, name: str, ndim: int = 3) -> np.ndarray:
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array; got {type(K).__name__}") from None
    if K.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimensions, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise InputError(f"{name} contains NaN or infinite values; recompute the kernels")
    return K


def _as_target(y, n: int | None, name: str = "y") -> np.ndarray:
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric") from None
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains NaN or infinite values; remove those structures first")
    if n is not None and y.shape[0] != n:
        raise InputError(f"{name} has {y.shape[0]} entries but the kernel has {n} rows")
    return y


def _ridge(X: np.ndarray, y: np.ndarray, rel: float = 1e-8) -> np.ndarray:
    """Least squares ``X β ≈ y`` with a tiny ridge: columns that are all zero (an element absent from the
    fitting set) get β = 0 instead of making the system singular."""
    G = X.T @ X
    d = np.diag(G)
    ref = float(d[d > 0].mean()) if np.any(d > 0) else 1.0
    G = G + rel * ref * np.eye(G.shape[0])
    try:
        return scipy.linalg.solve(G, X.T @ y, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return np.linalg.lstsq(X, y, rcond=None)[0]


def _weight_family(weights, regularization, used, shape):
    """The body-order weight family of a fit and its regulariser λ.

    Free λ (``regularization=None``): λ = 1 and the overall weight scale is optimised instead (the predictive
    mean depends only on c/λ). Fixed relative weights (``shape``): only their scale is searched, or nothing when
    λ is fixed too.
    """
    lam = float(regularization) if regularization is not None else 1.0
    if shape is None:
        return _WeightParam(weights, used, lam), lam
    if regularization is not None:
        return _WeightParam("fixed", used, lam, shape=shape[used]), lam
    return _WeightParam("scale", used, lam, shape=shape[used] / shape[used].max()), lam


def _store_weights(est, param, theta, used, n_kernels, lam) -> np.ndarray:
    """Set ``coef_weights_``, ``weights_``, ``regularization_`` and ``relative_regularization_`` of a fitted
    estimator from the chosen θ; returns the weights c_ν of the used kernels."""
    c = param.weights(theta) if len(used) else np.zeros(0)
    est.coef_weights_ = np.zeros(n_kernels)
    est.coef_weights_[used] = c
    total = float(c.sum())
    est.weights_ = est.coef_weights_ / total if total > 0 else est.coef_weights_.copy()
    est.regularization_ = lam
    est.relative_regularization_ = lam / total if total > 0 else float("inf")
    return c


def _mix(K, nus, scales, c, out=None, tmp=None):
    """Σ_j c_j K[ν_j] / s_{ν_j}: the mixed kernel of normalised slices (into ``out``, with the scratch ``tmp``,
    when given: the hyperparameter searches mix hundreds of times into the same buffers)."""
    if out is None:
        out = np.zeros(K.shape[1:])
    else:
        out[...] = 0.0
    for cj, nu in zip(c, nus):
        if tmp is None:
            out += (cj / scales[nu]) * K[nu]
        else:
            np.multiply(K[nu], cj / scales[nu], out=tmp)
            out += tmp
    return out


def _fit_baseline(features, y):
    """Least-squares linear baseline on ``features`` (None: no baseline); returns (coefficients, residual)."""
    if features is None:
        return None, y.copy()
    coef = _ridge(features, y)
    return coef, y - features @ coef



def _fold_residuals(folds, features, y) -> list:
    """Per CV fold ``(train, validation, train residual, validation baseline, validation target)``.

    The linear baseline is refitted on each fold's training rows only, so no validation value leaks into it.
    """
    out = []
    for t, v in folds:
        if features is not None:
            beta = _ridge(features[t], y[t])
            r_t, b_v = y[t] - features[t] @ beta, features[v] @ beta
        else:
            r_t, b_v = y[t], np.zeros(len(v))
        out.append((t, v, r_t, b_v, y[v]))
    return out

class _PSDFactor:
    """Factorisation of a symmetric positive (semi-)definite matrix ``A`` for repeated solves.

    Cholesky first. If it fails (``A`` singular to working precision: duplicated structures, a zero
    regulariser), retry with a jitter of 1e-12 … 1e-4 × the mean diagonal added to the diagonal, as
    scikit-learn's ``_solve_cholesky_kernel`` falls back rather than crash. The last resort is an
    eigendecomposition used as a pseudo-inverse (eigenvalues below n·eps·max are dropped).
    """

    _JITTERS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4)

    def __init__(self, A: np.ndarray, *, quiet: bool = False, what: str = "regularised kernel matrix"):
        n = A.shape[0]
        self.n = n
        self.jitter = 0.0
        self.method = "cholesky"
        diag = np.abs(np.diag(A))
        ref = float(diag.mean()) if n else 1.0
        if not np.isfinite(ref) or ref <= 0:
            ref = 1.0
        L = self._cholesky(A, overwrite=False)
        if L is None:
            for jitter in self._JITTERS:
                B = A.copy()
                B.flat[:: n + 1] += jitter * ref
                L = self._cholesky(B, overwrite=True)
                if L is not None:
                    self.jitter = jitter
                    if not quiet:
                        warnings.warn(
                            f"the {what} is singular to working precision; added a jitter of {jitter:g} × its "
                            "mean diagonal (consider a larger regularisation)",
                            RuntimeWarning,
                            stacklevel=3,
                        )
                    break
        if L is not None:
            self.L = L
            return
        self.method = "eigh"
        w, V = scipy.linalg.eigh(A, check_finite=False)
        tol = max(float(np.abs(w).max()) if n else 0.0, 1e-300) * n * np.finfo(float).eps
        keep = w > tol
        self.V = V[:, keep]
        self.w = w[keep]
        if not quiet:
            warnings.warn(
                f"the {what} is numerically singular even with jitter; using a pseudo-inverse "
                f"({int(keep.sum())} of {n} eigenvalues kept)",
                RuntimeWarning,
                stacklevel=3,
            )

    @staticmethod
    def _cholesky(A, overwrite):
        try:
            L = scipy.linalg.cholesky(A, lower=True, overwrite_a=overwrite, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return None
        # LAPACK does not always report NaNs as failures.
        if not np.all(np.isfinite(np.diag(L))):
            return None
        return L

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``A⁻¹ b`` (pseudo-inverse in the eigendecomposition fallback)."""
        if self.method == "cholesky":
            return scipy.linalg.cho_solve((self.L, True), b, check_finite=False)
        return self.V @ ((self.V.T @ b) / (self.w if b.ndim == 1 else self.w[:, None]))

    def half_solve(self, b: np.ndarray) -> np.ndarray:
        """``W b`` with ``WᵀW = A⁻¹``, so that ``bᵀA⁻¹b = ‖W b‖²`` (used for predictive variances)."""
        if self.method == "cholesky":
            return scipy.linalg.solve_triangular(self.L, b, lower=True, check_finite=False)
        scale = 1.0 / np.sqrt(self.w)
        return (self.V.T @ b) * (scale if b.ndim == 1 else scale[:, None])


def _make_folds(groups: np.ndarray, n_folds: int, seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds over *groups* (structures), shuffled with ``seed``: the rows of one structure (its vector
    components, its atoms) are always held out together."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    k = min(int(n_folds), len(uniq))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    fold_of_group[rng.permutation(len(uniq))] = np.arange(len(uniq)) % k
    fold_of_row = fold_of_group[inverse]
    return [(np.flatnonzero(fold_of_row != f), np.flatnonzero(fold_of_row == f)) for f in range(k)]


# ----------------------------------------------------------------------------------------------------------------
# weight parameterisations
# ----------------------------------------------------------------------------------------------------------------
class _WeightParam:
    """Maps unconstrained log-parameters θ to the weights ``c`` of the used kernels (normalised units).

    ``kind`` is ``"free"`` (θ = log c), ``"exponential"`` (θ = [log C, log α, (log c_0)], c_ν = C α^ν/ν!),
    ``"scale"`` (θ = [log C], c = C · shape) or ``"fixed"`` (no θ, c = shape).
    """

    def __init__(self, kind: str, nus: np.ndarray, lam: float, shape: np.ndarray | None = None):
        self.nus = np.asarray(nus, dtype=np.int64)
        self.lam = lam
        self.shape = None if shape is None else np.asarray(shape, dtype=np.float64)
        n_used = len(self.nus)
        if kind in ("free", "exponential") and n_used == 1:
            kind, self.shape = "scale", np.ones(1)
        if kind == "exponential" and np.sum(self.nus >= 1) <= 1:
            # one body order (plus c_0): C and α would be redundant, the law is just two free weights
            kind, self.shape = "free", None
        self.kind = kind
        self.has_c0 = kind == "exponential" and bool(np.any(self.nus == 0))
        self._pos = self.nus >= 1
        self._log_fact = np.array([math.lgamma(nu + 1.0) for nu in self.nus])
        log_lam = math.log(lam) if lam > 0 else 0.0
        cb = (log_lam + _LOG_C_MIN, log_lam + _LOG_C_MAX)
        if kind == "free":
            self.bounds = [cb] * n_used
        elif kind == "exponential":
            self.bounds = [cb, _LOG_ALPHA] + ([cb] if self.has_c0 else [])
        elif kind == "scale":
            self.bounds = [cb]
        else:
            self.bounds = []
        self.log_lam = log_lam

    @property
    def n_theta(self) -> int:
        return len(self.bounds)

    def clip(self, theta) -> np.ndarray:
        lo = np.array([b[0] for b in self.bounds])
        hi = np.array([b[1] for b in self.bounds])
        return np.clip(np.asarray(theta, dtype=np.float64), lo, hi)

    def weights(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if self.kind == "free":
            return np.exp(theta)
        if self.kind == "scale":
            return math.exp(theta[0]) * self.shape
        if self.kind == "fixed":
            return self.shape.copy()
        c = np.empty(len(self.nus))
        c[self._pos] = np.exp(theta[0] + self.nus[self._pos] * theta[1] - self._log_fact[self._pos])
        if self.has_c0:
            c[~self._pos] = math.exp(theta[2])
        return c

    def jacobian(self, theta) -> np.ndarray:
        """``dc/dθ``, shape (n_used, n_theta)."""
        c = self.weights(theta)
        if self.kind == "free":
            return np.diag(c)
        if self.kind == "scale":
            return c[:, None]
        if self.kind == "fixed":
            return np.zeros((len(c), 0))
        J = np.zeros((len(c), self.n_theta))
        J[self._pos, 0] = c[self._pos]
        J[self._pos, 1] = self.nus[self._pos] * c[self._pos]
        if self.has_c0:
            J[~self._pos, 2] = c[~self._pos]
        return J

    def shape_of(self, theta) -> np.ndarray:
        """The scale-free part of θ (relative log-weights), to tell different weight shapes apart."""
        theta = np.asarray(theta, dtype=np.float64)
        if self.kind == "free":
            return theta - theta.max()
        if self.kind == "exponential":
            return np.array([theta[1]] + ([theta[2] - theta[0]] if self.has_c0 else []))
        return np.zeros(0)

    def default(self) -> np.ndarray:
        """Used when there are too few training samples to cross-validate: c/λ = 100, α = 1, c_0 = C/10."""
        s = self.log_lam + math.log(100.0)
        if self.kind == "free":
            return np.full(len(self.nus), s - math.log(len(self.nus)))
        if self.kind == "exponential":
            return np.array([s, 0.0] + ([s - math.log(10.0)] if self.has_c0 else []))
        if self.kind == "scale":
            return np.array([s])
        return np.zeros(0)

    def grid(self) -> list[np.ndarray]:
        """Coarse starting points: every weight shape × signal-to-noise ratios 10^-1 … 10^7."""
        scales = [self.log_lam + s for s in _GRID_LOG_SCALES]
        points = []
        if self.kind == "scale":
            points = [np.array([s]) for s in scales + [self.log_lam + math.log(10.0**p) for p in (0, 2, 4, 6)]]
        elif self.kind == "exponential":
            for alpha in (0.01, 0.1, 0.5, 1.0, 2.0, 4.0):  # small α: ν=1 dominates, large: high ν
                for ratio in ((0.03, 1.0) if self.has_c0 else (None,)):
                    for s in scales:
                        extra = [s + math.log(ratio)] if ratio is not None else []
                        points.append(np.array([s, math.log(alpha)] + extra))
        elif self.kind == "free":
            n = len(self.nus)
            shapes = [np.full(n, 1.0 / n)]
            for j in range(n):  # each body order alone: the mixed model starts from every single-ν model
                one = np.full(n, 1e-4)
                one[j] = 1.0
                shapes.append(one)
            for alpha in (1.0, 3.0):
                w = np.array([alpha**nu / math.factorial(int(nu)) for nu in self.nus], dtype=float)
                w[self.nus == 0] = 0.1 * w.max()
                shapes.append(w)
            for w in shapes:
                w = w / w.sum()
                for s in scales:
                    points.append(s + np.log(w))
        return [self.clip(p) for p in points]


# ----------------------------------------------------------------------------------------------------------------
# cross-validation objective with an exact gradient
# ----------------------------------------------------------------------------------------------------------------
class _Objective:
    """What the hyperparameter objectives share: the kernel stack and weight family, the buffers that mix
    Σ_j c_j K[ν_j]/s_j, the count of evaluations and the best θ seen (lowest value), which :meth:`_optimise`
    reads back."""

    def __init__(self, K, nus, scales, lam, param, cancel):
        self.K, self.nus, self.scales = K, nus, scales
        self.lam, self.param, self.cancel = lam, param, cancel
        self.n = n = K.shape[1]
        self._mix = np.empty((n, n))
        self._tmp = np.empty((n, n))
        self.best_loss = np.inf
        self.best_theta = None
        self.n_evals = 0

    def _weights(self, theta):
        """Start an evaluation (honours ``cancel``): θ as an array and the weights c it stands for."""
        check_cancel(self.cancel)
        self.n_evals += 1
        theta = np.asarray(theta, dtype=np.float64)
        return theta, self.param.weights(theta)

    def mixed(self, c) -> np.ndarray:
        return _mix(self.K, self.nus, self.scales, c, out=self._mix, tmp=self._tmp)


class _CVObjective(_Objective):
    """k-fold CV loss of kernel ridge regression on Σ_j c_j K[ν_j]/s_j, as a function of θ.

    For fold (t, v): ``a = (K_tt + λI)⁻¹ r_t``, ``pred_v = K_vt a + baseline_v``. With ``g = ∂loss/∂pred_v``
    and ``u = (K_tt + λI)⁻¹ K_vtᵀ g``:  ``∂loss/∂c_j = gᵀ K̃ʲ_vt a − uᵀ K̃ʲ_tt a``. The optimiser sees the log of
    the loss, so its tolerances do not depend on the target's units.

    Residuals are grouped in blocks of ``block`` rows (the components of one vector / λ=2 target); the MAE is
    the mean Euclidean norm of a block's error, so the loss (and the chosen weights) are invariant when
    training structures are rotated together with their targets.
    """

    def __init__(self, K, nus, scales, y, folds, features, lam, loss, block, param, cancel):
        super().__init__(K, nus, scales, lam, param, cancel)
        self.loss, self.block = loss, block
        self.folds = _fold_residuals(folds, features, y)
        self.n_rows = sum(len(v) for _, v in folds)
        self.n_blocks = self.n_rows // block
        self._a_full = np.zeros(self.n)
        self.best_metrics = None

    def __call__(self, theta, need_grad: bool = True):
        theta, c = self._weights(theta)
        mix = self.mixed(c)
        grad_c = np.zeros(len(c))
        sum_abs = 0.0
        sum_sq = 0.0
        with np.errstate(all="ignore"):
            for t, v, r_t, b_v, y_v in self.folds:
                A = mix[np.ix_(t, t)]
                A.flat[:: len(t) + 1] += self.lam
                fac = _PSDFactor(A, quiet=True)
                a = fac.solve(r_t)
                Kvt = mix[np.ix_(v, t)]
                e = Kvt @ a + b_v - y_v
                E = e.reshape(-1, self.block)
                norms = np.sqrt(np.einsum("ij,ij->i", E, E))
                sum_abs += norms.sum()
                sum_sq += float(e @ e)
                if not need_grad:
                    continue
                if self.loss == "mae":
                    g = (E / np.where(norms > 0, norms, 1.0)[:, None]).ravel()
                else:
                    g = 2.0 * e
                u = fac.solve(Kvt.T @ g)
                self._a_full[:] = 0.0
                self._a_full[t] = a
                for j, nu in enumerate(self.nus):
                    z = (self.K[nu] @ self._a_full) / self.scales[nu]
                    grad_c[j] += g @ z[v] - u @ z[t]
        mae = sum_abs / self.n_blocks
        rmse = math.sqrt(sum_sq / self.n_rows)
        value = mae if self.loss == "mae" else rmse
        if not np.isfinite(value):
            return (1e30, np.zeros_like(theta)) if need_grad else 1e30
        if value < self.best_loss:
            self.best_loss, self.best_theta = value, theta.copy()
            self.best_metrics = {"mae": mae, "rmse": rmse}
        log_value = math.log(max(value, 1e-300))
        if not need_grad:
            return log_value
        if self.loss == "mae":
            d_value = grad_c / self.n_blocks
        else:
            d_value = grad_c / (2.0 * self.n_rows * max(rmse, 1e-300))
        grad_theta = self.param.jacobian(theta).T @ (d_value / max(value, 1e-300))
        if not np.all(np.isfinite(grad_theta)):
            grad_theta = np.zeros_like(theta)
        return log_value, grad_theta


class _EvidenceObjective(_Objective):
    """Negative log marginal likelihood per training row of the GP with covariance σ² (Σ_j c_j K̃ʲ + λI) on the
    baseline residuals ``r``, with the signal scale σ² at its maximum-likelihood value rᵀA⁻¹r/n:

        f(θ) = ½ log(rᵀA⁻¹r) + log|A| / 2n  (+ const),     A = Σ_j c_j K̃ʲ + λI,

        ∂f/∂c_j = −½ aᵀK̃ʲa / rᵀa + tr(A⁻¹K̃ʲ) / 2n,     a = A⁻¹r.

    An :class:`_Objective` like :class:`_CVObjective`, so the same search runs on either. A matrix that is not numerically positive definite scores +∞ (no jitter: a jittered
    determinant would not be the evidence of the θ asked for).
    """

    def __init__(self, K, nus, scales, r, lam, param, cancel):
        super().__init__(K, nus, scales, lam, param, cancel)
        self.r = r

    def __call__(self, theta, need_grad: bool = True):
        theta, c = self._weights(theta)
        A = self.mixed(c)
        A.flat[:: self.n + 1] += self.lam
        fail = (1e30, np.zeros_like(theta)) if need_grad else 1e30
        L = _PSDFactor._cholesky(A, overwrite=True)
        if L is None:
            return fail
        with np.errstate(all="ignore"):
            a = scipy.linalg.cho_solve((L, True), self.r, check_finite=False)
            q = max(float(self.r @ a), 1e-300)
            value = 0.5 * math.log(q) + float(np.log(np.diag(L)).sum()) / self.n
        if not np.isfinite(value):
            return fail
        if value < self.best_loss:
            self.best_loss, self.best_theta = value, theta.copy()
        if not need_grad:
            return value
        # tr(A⁻¹K̃ʲ) = Σ (A⁻¹ ∘ K̃ʲ) for symmetric K̃ʲ; one explicit inverse serves every j
        A_inv = scipy.linalg.cho_solve((L, True), np.eye(self.n), check_finite=False)
        grad_c = np.empty(len(c))
        for j, nu in enumerate(self.nus):
            Kj = self.K[nu]
            grad_c[j] = (-0.5 * float(a @ (Kj @ a)) / q + 0.5 * float(np.einsum("ij,ij->", A_inv, Kj)) / self.n) \
                / self.scales[nu]
        grad_theta = self.param.jacobian(theta).T @ grad_c
        if not np.all(np.isfinite(grad_theta)):
            grad_theta = np.zeros_like(theta)
        return value, grad_theta


# ----------------------------------------------------------------------------------------------------------------
# the core estimator
# ----------------------------------------------------------------------------------------------------------------
class MixedKernelRidge(RegressorMixin, BaseEstimator):
    """Kernel ridge / GP regression on a weighted sum of precomputed kernels, weights chosen on the training set
    by k-fold CV or by the GP evidence.

    Parameters
    ----------
    nus : sequence of int or None
        Which kernel slices (body orders ν) to use; ``None`` uses every slice that is not identically zero
        (e.g. ``K_vector[0]``). ``(0,)`` is the composition-only model, ``(2,)`` the ν=2 (SOAP-equivalent with
        the exact normalisation) model.
    weights : {"exponential", "free"} or array-like of shape (n_kernels,)
        Weight law of the normalised kernels: ``"exponential"`` (default) the published kernel exponential
        c_ν = C α^ν/ν! (ν ≥ 1) plus a free c_0; ``"free"`` one positive weight per ν; an array gives fixed
        relative weights (only their overall scale is cross-validated, or nothing at all when
        ``regularization`` is also given). The free search starts from every single-ν model (a corner of the
        family), so its CV error is never worse than the best single ν's (the CLI and the app default to it);
        the exponential law cannot isolate a middle ν, and needs α down to 1e-4 to isolate ν=1: on small QM9
        sets even a 1 % admixture of ν=2 to a ν=1 model raised the CV MAE by 30 % (measured).
    regularization : float or None
        λ of ``(Σ c_ν K̃^ν + λ I)``. ``None`` (default): λ = 1 and the overall scale of the weights is
        optimised, which is the same family. With fixed ``weights`` and a given λ no CV is run.
    baseline : bool
        Fit a linear baseline on the ``features`` passed to :meth:`fit` (per-element energies for
        structures) by least squares with a tiny ridge, subtract it before the regression, add it back.
    selection : {"cv", "evidence"}
        How the weights (and with them the regularisation) are chosen on the training set. ``"cv"`` (default)
        minimises the k-fold CV loss ``cv_loss``. ``"evidence"`` maximises the GP log marginal likelihood of
        the baseline residuals (type-II maximum likelihood): it uses every training row for every
        hyperparameter and is smooth in them, where the CV loss of a few hundred rows is noisy. On QM9 U0 with
        500 training molecules it was 2.3 ± 0.6 meV better than CV on four fresh validation draws, better on
        every one (BENCHMARKS.md §6, round 6), at a quarter of the fitting time; it is what
        ``python -m wkviz fit`` and the app use. It needs no folds, so it also works where there are too few
        structures to cross-validate.
    n_folds : int
        Number of cross-validation folds (over ``groups``; fewer if there are fewer groups).
    cv_loss : {"mae", "rmse"}
        Cross-validation loss minimised.
    max_iter : int
        Iterations of each L-BFGS-B refinement after the grid (0: grid only).
    random_state : int
        Seed of the fold assignment.

    Attributes
    ----------
    kernel_scales_ : ndarray of shape (n_kernels,)
        Mean of the training diagonal of every kernel slice (0 for unused or zero slices).
    nus_ : ndarray of int
        Kernel slices actually used.
    coef_weights_ : ndarray of shape (n_kernels,)
        c_ν applied to the normalised kernels K^ν / s_ν (0 for unused slices).
    weights_ : ndarray of shape (n_kernels,)
        ``coef_weights_`` divided by their sum: the relative importance of each body order.
    regularization_ : float
        λ used in the final fit.
    relative_regularization_ : float
        λ / Σ c_ν: noise-to-signal variance ratio of the normalised model.
    baseline_coef_ : ndarray of shape (n_features,) or None
        Linear baseline coefficients (e.g. per-element energies ε_Z).
    dual_coef_ : ndarray of shape (n_samples,)
        Coefficients a of ``pred = K_mixed(x, train) a + baseline(x)``.
    gp_variance_ : float
        Maximum-likelihood GP signal scale σ² (prior covariance σ² K_mixed, noise variance σ² λ).
    noise_std_ : float
        √(σ² λ), the fitted observation-noise standard deviation.
    cv_mae_, cv_rmse_ : float
        Cross-validated errors at the chosen hyperparameters (NaN when no CV was possible), for either
        ``selection``.
    cv_n_evals_ : int
        Number of objective evaluations (CV losses or evidences) the hyperparameter search spent.
    log_marginal_likelihood_ : float
        GP log marginal likelihood of the baseline residuals at the chosen hyperparameters, with the signal
        scale at its maximum (NaN when nothing was regressed or the factorisation needed a jitter).
    n_features_in_ : int
        Number of kernel slices seen in fit.
    """

    def __init__(
        self,
        *,
        nus=None,
        weights="exponential",
        regularization=None,
        baseline=True,
        selection="cv",
        n_folds=5,
        cv_loss="mae",
        max_iter=50,
        random_state=0,
    ):
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------------------------
    def _check_params(self, n_kernels: int):
        if self.cv_loss not in CV_LOSSES:
            raise InputError(f"cv_loss must be one of {', '.join(CV_LOSSES)}, got {self.cv_loss!r}")
        if self.selection not in SELECTIONS:
            raise InputError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not (isinstance(self.n_folds, (int, np.integer)) and self.n_folds >= 2):
            raise InputError(f"n_folds must be an integer ≥ 2, got {self.n_folds!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 0):
            raise InputError(f"max_iter must be a non-negative integer, got {self.max_iter!r}")
        if self.regularization is not None:
            lam = float(self.regularization)
            if not (np.isfinite(lam) and lam >= 0):
                raise InputError(f"regularization must be a non-negative number or None, got {self.regularization!r}")
        if self.nus is None:
            nus = list(range(n_kernels))
        else:
            nus = sorted({int(nu) for nu in np.atleast_1d(self.nus)})
            bad = [nu for nu in nus if not 0 <= nu < n_kernels]
            if bad:
                raise InputError(
                    f"nus {bad} are not available: the kernel has body orders 0..{n_kernels - 1}; "
                    f"compute the kernels with a larger nu_max or drop them"
                )
        if isinstance(self.weights, str):
            if self.weights not in WEIGHT_MODES:
                raise InputError(f"weights must be one of {', '.join(WEIGHT_MODES)} or an array, got {self.weights!r}")
            shape = None
        else:
            shape = np.asarray(self.weights, dtype=np.float64).ravel()
            if shape.shape != (n_kernels,) or np.any(shape < 0) or not np.all(np.isfinite(shape)):
                raise InputError(f"explicit weights must be {n_kernels} non-negative numbers, got {self.weights!r}")
        return nus, shape

    def fit(self, K, y, *, features=None, groups=None, block_size=1, cancel=None):
        """Choose the weights on this training set (k-fold CV or the GP evidence), then fit on all of it.

        Parameters
        ----------
        K : ndarray of shape (n_kernels, n_samples, n_samples)
            Stacked training kernels (symmetric).
        y : ndarray of shape (n_samples,)
            Targets.
        features : ndarray of shape (n_samples, n_features), optional
            Inputs of the linear baseline (element counts, fractions, one-hot elements).
        groups : ndarray of shape (n_samples,), optional
            Group label per row; rows of one group are held out together in CV (default: ``block_size``
            consecutive rows per group).
        block_size : int
            Rows per rotational block (3 for λ=1 vectors, 5 for λ=2), used by the rotation-invariant MAE.
        cancel : threading.Event-like or callable, optional
            Checked at every CV evaluation; raises :class:`wkviz.errors.Cancelled` when set.

        Returns
        -------
        self
        """
        K = _as_kernel_stack(K, "K")
        with _blas_threads(K.shape[1]):
            return self._fit(K, y, features, groups, block_size, cancel)

    def _fit(self, K, y, features, groups, block_size, cancel):
        n = K.shape[1]
        if K.shape[2] != n:
            raise InputError(f"the training kernel must be square in its last two axes, got shape {K.shape}")
        y = _as_target(y, n)
        if y.ndim != 1:
            raise InputError(f"y must be one-dimensional, got shape {y.shape}")
        if n == 0:
            raise InputError("cannot fit a model on zero training samples")
        block_size = int(block_size)
        if block_size < 1 or n % block_size:
            raise InputError(f"block_size {block_size} does not divide the {n} training rows")
        if groups is None:
            groups = np.arange(n) // block_size
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise InputError(f"groups must have one label per training row ({n}), got shape {groups.shape}")
        if features is not None:
            features = _as_target(features, n, "features")
            if features.ndim != 2:
                raise InputError(f"features must be 2-D (n_samples, n_features), got shape {features.shape}")
        nus, shape = self._check_params(K.shape[0])

        scales = np.einsum("kii->k", K) / n
        if np.any(scales[nus] < 0):
            bad = [nu for nu in nus if scales[nu] < 0]
            raise InputError(f"kernel slices {bad} have a negative mean diagonal, so they are not valid kernels")
        used = np.array([nu for nu in nus if scales[nu] > 0 and (shape is None or shape[nu] > 0)], dtype=np.int64)
        self.kernel_scales_ = np.where(np.isin(np.arange(K.shape[0]), used), scales, 0.0)
        self.nus_ = used
        self.n_features_in_ = K.shape[0]

        param, lam = _weight_family(self.weights, self.regularization, used, shape)

        use_features = features if (self.baseline and features is not None) else None
        self.baseline_coef_, r = _fit_baseline(use_features, y)
        evidence = self.selection == "evidence"
        searching = bool(len(used) and param.n_theta)
        folds = _make_folds(groups, self.n_folds, self.random_state) if searching else []

        def cv_objective(rows=None):
            if rows is None:
                return _CVObjective(K, used, scales, y, folds, use_features, lam, self.cv_loss, block_size, param,
                                    cancel)
            return _CVObjective(K[:, rows][:, :, rows], used, scales, y[rows],
                                _make_folds(groups[rows], self.n_folds, self.random_state),
                                None if use_features is None else use_features[rows], lam, self.cv_loss,
                                block_size, param, cancel)

        def evidence_objective(rows=None):
            if rows is None:
                return _EvidenceObjective(K, used, scales, r, lam, param, cancel)
            return _EvidenceObjective(K[:, rows][:, :, rows], used, scales, r[rows], lam, param, cancel)

        make = evidence_objective if evidence else cv_objective
        objective = make() if searching and (evidence and n >= 2 or folds) else None
        if objective is not None:
            coarse = None
            uniq = np.unique(groups)
            if len(uniq) > _GRID_SUBSET:
                rng = np.random.default_rng(self.random_state)
                coarse = make(np.flatnonzero(np.isin(groups, rng.choice(uniq, _GRID_SUBSET, replace=False))))
            theta = self._optimise(objective, param, coarse)
            self.cv_n_evals_ = objective.n_evals + (coarse.n_evals if coarse is not None else 0)
            del coarse
            if theta is None:  # every evaluation failed (non-finite); keep going with safe defaults
                warnings.warn(f"{'the evidence' if evidence else 'cross-validation'} failed at every "
                              "hyperparameter tried; using defaults", RuntimeWarning, stacklevel=2)
                theta = param.default()
            # the CV errors at the chosen point, reported whichever way it was chosen
            nan = {"mae": float("nan"), "rmse": float("nan")}
            scorer = objective
            if evidence:
                scorer = cv_objective() if folds else None
                if scorer is not None:
                    scorer(theta, need_grad=False)
            metrics = (scorer.best_metrics if scorer is not None else None) or nan
            self.cv_mae_ = metrics["mae"]
            self.cv_rmse_ = metrics["rmse"]
            del scorer
        else:
            if len(used) and param.n_theta:
                warnings.warn(
                    f"only {len(np.unique(groups))} training group(s): cannot cross-validate, using default "
                    "hyperparameters",
                    RuntimeWarning,
                    stacklevel=2,
                )
            theta = param.default()
            self.cv_mae_ = self.cv_rmse_ = float("nan")
            self.cv_n_evals_ = 0
        del objective

        c = _store_weights(self, param, theta, used, K.shape[0], lam)
        self.log_marginal_likelihood_ = float("nan")
        if len(used):
            A = self._mix(K)
            A.flat[:: n + 1] += lam
            self._factor = _PSDFactor(A)
            self.dual_coef_ = self._factor.solve(r)
            self.gp_variance_ = max(float(r @ self.dual_coef_) / n, 0.0)
            if self._factor.method == "cholesky" and self._factor.jitter == 0.0 and self.gp_variance_ > 0:
                # log N(r | 0, σ²A) at σ² = rᵀA⁻¹r/n
                self.log_marginal_likelihood_ = float(
                    -0.5 * n * (1.0 + math.log(2.0 * math.pi * self.gp_variance_))
                    - np.log(np.diag(self._factor.L)).sum())
        else:
            self._factor = None
            self.dual_coef_ = np.zeros(n)
            self.gp_variance_ = float(r @ r) / n
        self.noise_std_ = math.sqrt(self.gp_variance_ * lam) if len(used) else math.sqrt(self.gp_variance_)
        self.n_train_ = n
        return self

    def _optimise(self, objective: _CVObjective, param: _WeightParam, coarse: _CVObjective | None = None):
        """Grid (on ``coarse`` when given), then L-BFGS-B from the best points on the full objective; returns
        the best θ the full objective has seen."""
        grid_objective = objective if coarse is None else coarse
        scored = []
        for theta in param.grid():
            scored.append((grid_objective(theta, need_grad=False), tuple(theta)))
        if param.kind == "free" and len(param.nus) > 1:
            # Every single-ν model is a corner of the free family (other weights at their lower bound); a 1-D
            # search along each makes the mixed model's CV loss (to that bound) no worse than any single ν's.
            lows = np.array([b[0] for b in param.bounds])
            for j in range(len(param.nus)):
                def along(x, j=j):
                    theta = lows.copy()
                    theta[j] = x
                    return grid_objective(theta, need_grad=False)

                grid = [param.log_lam + s for s in _GRID_LOG_SCALES]
                values = [along(x) for x in grid]
                k = int(np.argmin(values))
                lo = grid[max(k - 1, 0)]
                hi = grid[min(k + 1, len(grid) - 1)]
                try:
                    res = scipy.optimize.minimize_scalar(along, bounds=(lo, hi), method="bounded",
                                                         options={"xatol": 1e-3, "maxiter": 25})
                    x = float(res.x) if res.fun <= values[k] else grid[k]
                except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                    x = grid[k]
                theta = lows.copy()
                theta[j] = x
                scored.append((grid_objective(theta, need_grad=False), tuple(theta)))
        scored.sort(key=lambda s: s[0])
        if coarse is not None:
            # re-score the best distinct candidates on the full training set
            best = []
            for _, th in scored:
                if all(np.max(np.abs(np.array(th) - np.array(b))) > 0.1 for b in best):
                    best.append(th)
                if len(best) == 4:
                    break
            scored = sorted(((objective(np.array(th), need_grad=False), th) for th in best), key=lambda s: s[0])
        if self.max_iter > 0:
            starts = [np.array(scored[0][1])]
            # A second start from the best point with a clearly different weight shape guards against the
            # grid's best basin being a poor local minimum.
            if param.kind in ("free", "exponential"):
                first = param.shape_of(starts[0])
                for _, th in scored[1:]:
                    th = np.array(th)
                    if np.max(np.abs(param.shape_of(th) - first)) > 0.5:
                        starts.append(th)
                        break
            for start in starts:
                try:
                    scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=param.bounds,
                                            options={"maxiter": int(self.max_iter)})
                except Cancelled:
                    raise
                except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                    continue  # best point seen so far is kept by the objective
        return objective.best_theta

    def _mix(self, K: np.ndarray) -> np.ndarray:
        return _mix(K, self.nus_, self.kernel_scales_, self.coef_weights_[self.nus_])

    # -- prediction ------------------------------------------------------------------------------------------
    def predict(self, K, *, features=None, K_diag=None, return_std=False):
        """Predict from test-vs-train kernels.

        Parameters
        ----------
        K : ndarray of shape (n_kernels, n_test, n_train)
            Kernels between test and training samples (same slices, same units as in fit).
        features : ndarray of shape (n_test, n_features), optional
            Baseline inputs; required when a baseline was fitted.
        K_diag : ndarray of shape (n_kernels, n_test), optional
            Self-kernels k^ν(x, x) of the test samples, needed for ``return_std`` (for structures: the
            diagonal of the kernel of the test set with itself, or one ``compute([x])`` per structure).
        return_std : bool
            Also return the GP predictive standard deviation of the latent function (add ``noise_std_`` in
            quadrature for the standard deviation of a new observation).

        Returns
        -------
        y_pred : ndarray of shape (n_test,)
        y_std : ndarray of shape (n_test,), only if ``return_std``
        """
        check_is_fitted(self, "dual_coef_")
        K = _as_kernel_stack(K, "K")
        with _blas_threads(self.n_train_):
            return self._predict(K, features, K_diag, return_std)

    def _predict(self, K, features, K_diag, return_std):
        if K.shape[0] != self.n_features_in_ or K.shape[2] != self.n_train_:
            raise InputError(
                f"test kernel has shape {K.shape}; expected ({self.n_features_in_}, n_test, {self.n_train_}) — "
                "kernels between the test structures and the training structures, same nu_max"
            )
        m = K.shape[1]
        mix = self._mix(K)
        pred = mix @ self.dual_coef_
        if self.baseline_coef_ is not None:
            if features is None:
                raise InputError("this model was fitted with a baseline: pass the test features (element counts)")
            features = _as_target(features, m, "features")
            pred = pred + features @ self.baseline_coef_
        if not return_std:
            return pred
        if K_diag is None:
            raise InputError(
                "return_std needs K_diag, the self-kernels k(x, x) of every test sample, shape (n_kernels, n_test)"
            )
        K_diag = _as_kernel_stack(K_diag, "K_diag", ndim=2)
        if K_diag.shape != (self.n_features_in_, m):
            raise InputError(f"K_diag must have shape ({self.n_features_in_}, {m}), got {K_diag.shape}")
        prior = np.zeros(m)
        for nu in self.nus_:
            prior += (self.coef_weights_[nu] / self.kernel_scales_[nu]) * K_diag[nu]
        if self._factor is None:
            return pred, np.zeros(m)
        W = self._factor.half_solve(mix.T)
        var = self.gp_variance_ * (prior - np.einsum("ij,ij->j", W, W))
        return pred, np.sqrt(np.clip(var, 0.0, None))

    def summary(self) -> dict:
        """Fitted hyperparameters as a plain dict (weights per ν, regularisation, CV errors)."""
        check_is_fitted(self, "dual_coef_")
        return {
            "nus": [int(nu) for nu in self.nus_],
            "weights": {int(nu): float(self.weights_[nu]) for nu in self.nus_},
            "relative_regularization": float(self.relative_regularization_),
            "cv_mae": float(self.cv_mae_),
            "cv_rmse": float(self.cv_rmse_),
            "cv_evaluations": int(self.cv_n_evals_),
            "noise_std": float(self.noise_std_),
            "selection": self.selection,
            "log_marginal_likelihood": float(self.log_marginal_likelihood_),
        }


_CORE_PARAMS = ("nus", "weights", "regularization", "baseline", "selection", "n_folds", "cv_loss", "max_iter",
                "random_state")


class _Wrapper(RegressorMixin, BaseEstimator):
    """Shared plumbing of the target-specific estimators (they hold a fitted :class:`MixedKernelRidge`)."""

    def _core(self, **overrides) -> MixedKernelRidge:
        params = {p: getattr(self, p) for p in _CORE_PARAMS}
        params.update(overrides)
        return MixedKernelRidge(**params)

    def _expose(self, model: MixedKernelRidge):
        for attr in ("kernel_scales_", "nus_", "coef_weights_", "weights_", "regularization_",
                     "relative_regularization_", "cv_mae_", "cv_rmse_", "cv_n_evals_", "gp_variance_",
                     "noise_std_", "log_marginal_likelihood_"):
            setattr(self, attr, getattr(model, attr))

    def summary(self) -> dict:
        check_is_fitted(self, "model_")
        return self.model_.summary()


def _align_columns(counts, species, species_fit, what="element"):
    """Re-order composition columns to the species seen in fit; elements new at predict time get a baseline
    of 0 (with a warning), since nothing was learned about them."""
    counts = np.asarray(counts, dtype=np.float64)
    if species is None or species_fit is None:
        if species_fit is not None and counts.shape[1] != len(species_fit):
            raise InputError(
                f"counts have {counts.shape[1]} columns but the model was fitted on {len(species_fit)} elements; "
                "pass species= to align them"
            )
        return counts
    species = np.asarray(species).ravel()
    if counts.ndim != 2 or counts.shape[1] != len(species):
        raise InputError(f"counts must have one column per species ({len(species)}), got shape {counts.shape}")
    out = np.zeros((counts.shape[0], len(species_fit)))
    index = {int(z): j for j, z in enumerate(species_fit)}
    unseen = []
    for k, z in enumerate(species):
        j = index.get(int(z))
        if j is None:
            if np.any(counts[:, k] != 0):
                unseen.append(int(z))
        else:
            out[:, j] = counts[:, k]
    if unseen:
        warnings.warn(
            f"{what}(s) with atomic number {unseen} were not in the training set; their baseline contribution "
            "is taken as 0 and predictions for structures containing them are unreliable",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


def _warn_unrepresented(counts, species):
    """Elements listed but absent from every training structure get ε = 0 from the ridge; say so."""
    missing = np.flatnonzero(np.all(counts == 0, axis=0))
    if len(missing):
        names = [int(species[j]) for j in missing] if species is not None else [int(j) for j in missing]
        warnings.warn(
            f"element(s) {names} do not occur in the training set; their baseline energy is set to 0",
            RuntimeWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------------------------
# structure scalars
# ----------------------------------------------------------------------------------------------------------------
class ScalarRegressor(_Wrapper):
    """Structure-level scalar targets (energies, gaps, …) on stacked invariant kernels ``[nu+1, n, n]``.

    Extensive (default): sum kernels as given, baseline ``y ≈ Σ_Z n_Z ε_Z``. ``intensive=True``: mean kernels
    ``K^ν(A,B) / (n_A n_B)`` and a baseline on composition fractions ``y ≈ Σ_Z (n_Z/n) ε_Z`` (per-atom ε_Z).
    Other parameters as :class:`MixedKernelRidge`.
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=True,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def _n_atoms(self, counts, n_atoms, n):
        if n_atoms is None:
            if counts is None:
                raise InputError("an intensive model needs the number of atoms: pass counts= or n_atoms=")
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        n_atoms = np.asarray(n_atoms, dtype=np.float64).ravel()
        if n_atoms.shape != (n,) or np.any(n_atoms <= 0):
            raise InputError(f"n_atoms must be {n} positive numbers, got shape {n_atoms.shape}")
        return n_atoms

    def _features(self, counts, n_atoms, n):
        if counts is None:
            return None
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] != n:
            raise InputError(f"counts must have shape ({n}, n_species), got {counts.shape}")
        return counts / n_atoms[:, None] if self.intensive else counts

    def fit(self, K, y, *, counts=None, species=None, n_atoms=None, cancel=None):
        """Fit on the training kernel.

        Parameters
        ----------
        K : ndarray of shape (nu_max+1, n, n)
            Sum kernels of the training structures (``KernelResult.K``).
        y : ndarray of shape (n,)
        counts : ndarray of shape (n, n_species), optional
            Element counts (``wkviz.data.composition_counts``); needed for the baseline and for
            ``intensive``.
        species : ndarray of shape (n_species,), optional
            Atomic numbers of the ``counts`` columns; lets :meth:`predict` align different species lists.
        n_atoms : ndarray of shape (n,), optional
            Atoms per structure (default ``counts.sum(1)``).
        cancel : optional
            Cancel flag checked during the hyperparameter search.
        """
        K = _as_kernel_stack(K, "K")
        n = K.shape[1]
        y = _as_target(y, n)
        if self.baseline and counts is None:
            raise InputError("the per-element baseline needs counts= (wkviz.data.composition_counts); "
                             "or use baseline=False")
        self.n_atoms_train_ = self._n_atoms(counts, n_atoms, n) if (self.intensive or counts is not None) else None
        if self.intensive:
            K = K / np.outer(self.n_atoms_train_, self.n_atoms_train_)[None]
        features = self._features(counts, self.n_atoms_train_, n) if self.baseline else None
        if features is not None:
            _warn_unrepresented(np.asarray(counts), species)
        self.species_ = None if species is None else np.asarray(species).ravel().copy()
        self.model_ = self._core().fit(K, y, features=features, cancel=cancel)
        self._expose(self.model_)
        self.baseline_coef_ = self.model_.baseline_coef_
        return self

    def predict(self, K, *, counts=None, species=None, n_atoms=None, K_diag=None, return_std=False):
        """Predict test structures from test-vs-train kernels ``[nu_max+1, n_test, n_train]``.

        ``K_diag`` ``[nu_max+1, n_test]`` (self-kernels K^ν(x, x), sum kernels) is needed for ``return_std``.
        """
        check_is_fitted(self, "model_")
        K = _as_kernel_stack(K, "K")
        m = K.shape[1]
        if counts is not None:
            counts = _align_columns(counts, species, self.species_ if species is not None else None)
        features = None
        if self.intensive:
            n_atoms = self._n_atoms(counts, n_atoms, m)
            K = K / np.outer(n_atoms, self.n_atoms_train_)[None]
            if K_diag is not None:
                K_diag = np.asarray(K_diag, dtype=np.float64) / (n_atoms**2)[None]
        else:
            n_atoms = None if counts is None else counts.sum(axis=1)
        if self.model_.baseline_coef_ is not None:
            if counts is None:
                raise InputError("this model has a per-element baseline: pass counts= of the test structures")
            features = self._features(counts, n_atoms, m)
        return self.model_.predict(K, features=features, K_diag=K_diag, return_std=return_std)


# ----------------------------------------------------------------------------------------------------------------
# tensorial targets
# ----------------------------------------------------------------------------------------------------------------
_S2 = math.sqrt(2.0)
_S6 = math.sqrt(6.0)


def tensor_to_lambda2(T) -> np.ndarray:
    """Symmetric traceless part of 3×3 tensors as 5 real-spherical λ=2 components, m = −2 … 2.

    With the real-SH convention of MATH.md §2 (Y_1 ∝ (y, z, x)), for T = r rᵀ − r²/3 I the components are
    √2 × the real solid harmonics with one common factor: (xy, yz, (3z² − r²)/(2√3), xz, (x² − y²)/2), i.e.

        t = (√2 T_xy, √2 T_yz, (2T_zz − T_xx − T_yy)/√6, √2 T_xz, (T_xx − T_yy)/√2),

    so the map is an isometry (‖t‖ = ‖T − tr(T)/3 I‖_F) and t(Q T Qᵀ) = D²(Q) t(T) for Q ∈ O(3).

    Parameters
    ----------
    T : array_like of shape (..., 3, 3)
        Only the symmetric part is used.

    Returns
    -------
    ndarray of shape (..., 5)
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (3, 3):
        raise InputError(f"tensors must have shape (..., 3, 3), got {T.shape}")
    S = 0.5 * (T + np.swapaxes(T, -1, -2))
    xx, yy, zz = S[..., 0, 0], S[..., 1, 1], S[..., 2, 2]
    return np.stack(
        [_S2 * S[..., 0, 1], _S2 * S[..., 1, 2], (2 * zz - xx - yy) / _S6, _S2 * S[..., 0, 2], (xx - yy) / _S2],
        axis=-1,
    )


def lambda2_to_tensor(t) -> np.ndarray:
    """Inverse of :func:`tensor_to_lambda2`: 5 λ=2 components → symmetric traceless 3×3 tensors."""
    t = np.asarray(t, dtype=np.float64)
    if t.shape[-1] != 5:
        raise InputError(f"λ=2 components must have a last axis of length 5, got {t.shape}")
    a, b, c, d, e = (t[..., k] for k in range(5))
    T = np.zeros(t.shape[:-1] + (3, 3))
    T[..., 0, 1] = T[..., 1, 0] = a / _S2
    T[..., 1, 2] = T[..., 2, 1] = b / _S2
    T[..., 0, 2] = T[..., 2, 0] = d / _S2
    T[..., 0, 0] = -c / _S6 + e / _S2
    T[..., 1, 1] = -c / _S6 - e / _S2
    T[..., 2, 2] = 2 * c / _S6
    return T


def split_symmetric_tensor(T):
    """3×3 tensors → (isotropic part tr(T)/3, shape (n,); λ=2 components, shape (n, 5))."""
    T = np.asarray(T, dtype=np.float64)
    return np.trace(T, axis1=-2, axis2=-1) / 3.0, tensor_to_lambda2(T)


def join_symmetric_tensor(iso, t2) -> np.ndarray:
    """Inverse of :func:`split_symmetric_tensor`: iso · I + the traceless tensor of ``t2``."""
    iso = np.asarray(iso, dtype=np.float64)
    return iso[..., None, None] * np.eye(3) + lambda2_to_tensor(t2)


class EquivariantRegressor(_Wrapper):
    """Equivariant targets on tensorial kernels: λ=1 vectors (``K_vector``) or λ=2 components (``K_tensor``).

    The kernel ``[nu+1, n, d, n, d]`` is flattened to ``(n·d, n·d)`` (row ``i·d + c``) and regressed without
    a baseline (an equivariant target has no invariant offset). Since ``K(QA, B) = D(Q) K(A, B)``, the
    prediction for a rotated (or, for polar vectors, inverted) structure is exactly the rotated (inverted)
    prediction. Zero slices (``K_vector[0]``) are skipped. CV folds hold out whole structures and the MAE is
    the mean Euclidean norm of the per-structure error, so it does not depend on the frame.
    ``intensive=True`` divides the kernels by n_A n_B (needs ``n_atoms``).
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=False,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    @staticmethod
    def _flatten(K, name):
        K = _as_kernel_stack(K, name, ndim=5)
        nk, n, d, m, d2 = K.shape
        if d != d2 or d not in (3, 5):
            raise InputError(f"{name} must have shape (nu+1, n, d, m, d) with d = 3 (λ=1) or 5 (λ=2), got {K.shape}")
        return K.reshape(nk, n * d, m * d), n, d, m

    def _scale(self, K, n_a, n_b, d):
        ra = np.repeat(np.asarray(n_a, dtype=np.float64), d)
        rb = np.repeat(np.asarray(n_b, dtype=np.float64), d)
        return K / np.outer(ra, rb)[None]

    def fit(self, K, y, *, n_atoms=None, cancel=None):
        """Fit on ``K`` ``(nu+1, n, d, n, d)`` and targets ``y`` ``(n, d)`` (Cartesian x, y, z for d = 3;
        λ=2 components m = −2 … 2 for d = 5, see :func:`tensor_to_lambda2`)."""
        Kf, n, d, m = self._flatten(K, "K")
        if m != n:
            raise InputError(f"the training kernel must be square, got shape {np.shape(K)}")
        y = _as_target(y, n)
        if y.shape != (n, d):
            raise InputError(f"y must have shape ({n}, {d}), got {y.shape}")
        if self.intensive:
            if n_atoms is None:
                raise InputError("an intensive equivariant model needs n_atoms=")
            self.n_atoms_train_ = np.asarray(n_atoms, dtype=np.float64).ravel()
            Kf = self._scale(Kf, self.n_atoms_train_, self.n_atoms_train_, d)
        self.n_components_ = d
        self.model_ = self._core(baseline=False).fit(
            Kf, y.reshape(-1), groups=np.repeat(np.arange(n), d), block_size=d, cancel=cancel
        )
        self._expose(self.model_)
        return self

    def predict(self, K, *, n_atoms=None, K_diag=None, return_std=False):
        """Predict ``(n_test, d)`` from ``K`` ``(nu+1, n_test, d, n_train, d)``; ``K_diag`` ``(nu+1, n_test, d)``
        holds the diagonal entries K^ν(x, c; x, c) for ``return_std``."""
        check_is_fitted(self, "model_")
        Kf, m, d, _ = self._flatten(K, "K")
        if d != self.n_components_:
            raise InputError(f"test kernel has {d} components per structure, the model was fitted with "
                             f"{self.n_components_}")
        if self.intensive:
            if n_atoms is None:
                raise InputError("an intensive equivariant model needs n_atoms= of the test structures")
            n_atoms = np.asarray(n_atoms, dtype=np.float64).ravel()
            Kf = self._scale(Kf, n_atoms, self.n_atoms_train_, d)
        if K_diag is not None:
            K_diag = np.asarray(K_diag, dtype=np.float64).reshape(Kf.shape[0], m * d)
            if self.intensive:
                K_diag = K_diag / np.repeat(n_atoms**2, d)[None]
        out = self.model_.predict(Kf, K_diag=K_diag, return_std=return_std)
        if return_std:
            return out[0].reshape(m, d), out[1].reshape(m, d)
        return out.reshape(m, d)


class TensorRegressor(_Wrapper):
    """Symmetric 3×3 tensors (polarisabilities, …) as λ=0 ⊕ λ=2.

    The isotropic part tr(T)/3 is a :class:`ScalarRegressor` on the invariant kernel (with the per-element
    baseline), the symmetric traceless part an :class:`EquivariantRegressor` on ``K_tensor``'s 5 real-SH
    components (:func:`tensor_to_lambda2`). Any antisymmetric part of the targets is dropped (with a
    warning). Predictions transform as Q T Qᵀ.
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=True,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def _params(self):
        return {p: getattr(self, p) for p in ("intensive",) + _CORE_PARAMS}

    def fit(self, K, K_tensor, y, *, counts=None, species=None, n_atoms=None, cancel=None):
        """Fit on invariant ``K`` ``(nu+1, n, n)``, ``K_tensor`` ``(nu+1, n, 5, n, 5)`` and ``y`` ``(n, 3, 3)``."""
        y = _as_target(y, None)
        if y.ndim != 3 or y.shape[1:] != (3, 3):
            raise InputError(f"tensor targets must have shape (n, 3, 3), got {y.shape}")
        asym = np.abs(y - np.swapaxes(y, 1, 2)).max()
        if asym > 1e-8 * max(np.abs(y).max(), 1e-300):
            warnings.warn("tensor targets are not symmetric; only their symmetric part is learned",
                          RuntimeWarning, stacklevel=2)
        iso, t2 = split_symmetric_tensor(y)
        if n_atoms is None and counts is not None:
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        self.iso_model_ = ScalarRegressor(**self._params()).fit(K, iso, counts=counts, species=species,
                                                                n_atoms=n_atoms, cancel=cancel)
        eq_params = self._params()
        eq_params["baseline"] = False
        self.aniso_model_ = EquivariantRegressor(**eq_params).fit(K_tensor, t2, n_atoms=n_atoms, cancel=cancel)
        self.model_ = self.iso_model_.model_
        return self

    def predict(self, K, K_tensor, *, counts=None, species=None, n_atoms=None, K_diag=None, K_tensor_diag=None,
                return_std=False):
        """Predict ``(n_test, 3, 3)`` from test-vs-train ``K`` and ``K_tensor``.

        With ``return_std`` (needs ``K_diag`` ``(nu+1, n_test)`` and ``K_tensor_diag`` ``(nu+1, n_test, 5)``, the
        self-kernels of the test structures) also returns the GP standard deviations of the isotropic part
        ``(n_test,)`` and of the 5 λ=2 components ``(n_test, 5)`` (the two models are independent).
        """
        check_is_fitted(self, "aniso_model_")
        if n_atoms is None and counts is not None:
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        if not return_std:
            iso = self.iso_model_.predict(K, counts=counts, species=species, n_atoms=n_atoms)
            t2 = self.aniso_model_.predict(K_tensor, n_atoms=n_atoms)
            return join_symmetric_tensor(iso, t2)
        iso, iso_std = self.iso_model_.predict(K, counts=counts, species=species, n_atoms=n_atoms, K_diag=K_diag,
                                               return_std=True)
        t2, t2_std = self.aniso_model_.predict(K_tensor, n_atoms=n_atoms, K_diag=K_tensor_diag, return_std=True)
        return join_symmetric_tensor(iso, t2), iso_std, t2_std

    def summary(self) -> dict:
        check_is_fitted(self, "aniso_model_")
        return {"lambda0": self.iso_model_.summary(), "lambda2": self.aniso_model_.summary()}


# ----------------------------------------------------------------------------------------------------------------
# atomic targets
# ----------------------------------------------------------------------------------------------------------------
class AtomicRegressor(_Wrapper):
    """Per-atom scalars (Mulliken charges, …) on atom-level kernels ``K_atomic`` ``[nu+1, atoms, atoms]``.

    The baseline is the per-element mean of the training targets (one-hot element features with a tiny
    ridge); an element unseen in training gets 0 with a warning. CV folds hold out whole structures when
    ``structure_index`` is given.
    """

    def __init__(self, *, nus=None, weights="exponential", regularization=None, baseline=True, selection="cv",
                 n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, K, y, *, numbers, structure_index=None, cancel=None):
        """Fit on ``K`` ``(nu+1, atoms, atoms)``, ``y`` ``(atoms,)``, ``numbers`` (atomic number per atom) and
        ``structure_index`` (structure of each atom, for grouped CV)."""
        K = _as_kernel_stack(K, "K")
        n = K.shape[1]
        y = _as_target(y, n)
        numbers = np.asarray(numbers).ravel().astype(np.int64)
        if numbers.shape != (n,):
            raise InputError(f"numbers must give one atomic number per atom ({n}), got shape {numbers.shape}")
        self.species_ = np.unique(numbers)
        features = (numbers[:, None] == self.species_[None, :]).astype(np.float64) if self.baseline else None
        self.model_ = self._core().fit(K, y, features=features, groups=structure_index, cancel=cancel)
        self._expose(self.model_)
        self.element_baseline_ = (
            dict(zip(self.species_.tolist(), self.model_.baseline_coef_.tolist())) if self.baseline else {}
        )
        return self

    def predict(self, K, *, numbers, K_diag=None, return_std=False):
        """Predict ``(atoms_test,)`` from ``K`` ``(nu+1, atoms_test, atoms_train)``; ``K_diag``
        ``(nu+1, atoms_test)`` for ``return_std``."""
        check_is_fitted(self, "model_")
        numbers = np.asarray(numbers).ravel().astype(np.int64)
        features = None
        if self.model_.baseline_coef_ is not None:
            test_species = np.unique(numbers)
            onehot = (numbers[:, None] == test_species[None, :]).astype(np.float64)
            features = _align_columns(onehot, test_species, self.species_)
        return self.model_.predict(K, features=features, K_diag=K_diag, return_std=return_std)


# ----------------------------------------------------------------------------------------------------------------
# dataset-level helpers (CLI, app, learning curves)
# ----------------------------------------------------------------------------------------------------------------
def _offsets(n_atoms) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(n_atoms, dtype=np.int64))])


def _atom_rows(n_atoms, idx) -> np.ndarray:
    off = _offsets(n_atoms)
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])


@dataclass
class KernelSet:
    """Every kernel block between structures A (rows) and B (columns) that a model may need.

    Attributes mirror :class:`wkviz.engine.kernels.KernelResult`: ``K`` ``[nu+1, nA, nB]``, ``K_atomic``
    ``[nu+1, atomsA, atomsB]``, ``K_vector`` ``[nu+1, nA, 3, nB, 3]``, ``K_tensor`` ``[nu+1, nA, 5, nB, 5]``
    (any may be None) and the atom counts per structure.
    """

    K: np.ndarray | None = None
    K_atomic: np.ndarray | None = None
    K_vector: np.ndarray | None = None
    K_tensor: np.ndarray | None = None
    n_atoms_A: np.ndarray | None = None
    n_atoms_B: np.ndarray | None = None

    @classmethod
    def from_result(cls, result) -> "KernelSet":
        """From a :class:`wkviz.engine.kernels.KernelResult` (or anything with the same attributes)."""
        return cls(
            K=getattr(result, "K", None),
            K_atomic=getattr(result, "K_atomic", None),
            K_vector=getattr(result, "K_vector", None),
            K_tensor=getattr(result, "K_tensor", None),
            n_atoms_A=getattr(result, "n_atoms_A", None),
            n_atoms_B=getattr(result, "n_atoms_B", None),
        )

    @property
    def nu_max(self) -> int:
        for K in (self.K, self.K_atomic, self.K_vector, self.K_tensor):
            if K is not None:
                return K.shape[0] - 1
        raise InputError("this KernelSet holds no kernels")

    def subset(self, rows, cols) -> "KernelSet":
        """Sub-block between structures ``rows`` of A and ``cols`` of B (no kernel is recomputed)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = KernelSet(
            n_atoms_A=None if self.n_atoms_A is None else np.asarray(self.n_atoms_A)[rows],
            n_atoms_B=None if self.n_atoms_B is None else np.asarray(self.n_atoms_B)[cols],
        )
        if self.K is not None:
            out.K = self.K[:, rows][:, :, cols]
        if self.K_vector is not None:
            out.K_vector = self.K_vector[:, rows][:, :, :, cols]
        if self.K_tensor is not None:
            out.K_tensor = self.K_tensor[:, rows][:, :, :, cols]
        if self.K_atomic is not None:
            if self.n_atoms_A is None or self.n_atoms_B is None:
                raise InputError("slicing atomic kernels needs n_atoms_A and n_atoms_B")
            ra, cb = _atom_rows(self.n_atoms_A, rows), _atom_rows(self.n_atoms_B, cols)
            out.K_atomic = self.K_atomic[:, ra][:, :, cb]
        return out


@dataclass
class TargetData:
    """A target over a list of structures with what the models need besides kernels.

    Attributes
    ----------
    kind : {"scalar", "vector", "tensor", "atomic"}
    values : ndarray or None
        ``(n,)``, ``(n, 3)``, ``(n, 3, 3)`` or ``(total_atoms,)``; None for structures to be predicted.
    n_atoms : ndarray of int, shape (n,)
    counts : ndarray of shape (n, n_species)
        Element counts (columns = ``species``).
    species : ndarray of int
    numbers : ndarray of int, shape (total_atoms,)
        Atomic number of every atom, structures in order.
    key, unit : str
    """

    kind: str
    values: np.ndarray | None
    n_atoms: np.ndarray
    counts: np.ndarray | None = None
    species: np.ndarray | None = None
    numbers: np.ndarray | None = None
    key: str = ""
    unit: str = ""
    extensive: bool = True

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise InputError(f"target kind must be one of {', '.join(TARGET_KINDS)}, got {self.kind!r}")
        self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @classmethod
    def from_frames(cls, frames, key: str, *, species=None, require_values: bool = True) -> "TargetData":
        """Read target ``key`` of ``frames`` (via :mod:`wkviz.data`): kind, unit, values, composition.

        ``species`` fixes the composition columns (use the union of training and test species).
        """
        from .. import data  # lazy: models sit downstream of data and most users pass arrays

        infos = {info.key: info for info in data.describe_targets(frames)}
        if key not in infos:
            available = ", ".join(sorted(infos)) or "none"
            raise InputError(f"target {key!r} not found in the structures; available targets: {available}")
        info = infos[key]
        values = data.get_target(frames, key) if require_values else None
        counts, species = data.composition_counts(frames, species=species)
        numbers = np.concatenate([np.asarray(a.numbers) for a in frames]) if len(frames) else np.zeros(0, int)
        return cls(
            kind=info.kind, values=None if values is None else np.asarray(values, dtype=np.float64),
            n_atoms=np.array([len(a) for a in frames]), counts=np.asarray(counts, dtype=np.float64),
            species=np.asarray(species), numbers=numbers, key=key, unit=info.unit or "",
            extensive=bool(getattr(info, "extensive", True)),
        )

    def subset(self, idx) -> "TargetData":
        """The same target restricted to structures ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        atoms = _atom_rows(self.n_atoms, idx)
        values = None
        if self.values is not None:
            values = self.values[atoms] if self.kind == "atomic" else self.values[idx]
        return TargetData(
            kind=self.kind, values=values, n_atoms=self.n_atoms[idx],
            counts=None if self.counts is None else self.counts[idx], species=self.species,
            numbers=None if self.numbers is None else self.numbers[atoms], key=self.key, unit=self.unit,
            extensive=self.extensive,
        )

    def structure_of_atom(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)

    def row_labels(self):
        """(structure, atom, component) of every entry of ``values.ravel()`` — the CSV layout of
        ``python -m wkviz fit`` (atom = −1 for structure targets, component 0..8 row-major for tensors)."""
        n = len(self.n_atoms)
        if self.kind == "atomic":
            structure = self.structure_of_atom()
            atom = np.arange(len(structure)) - _offsets(self.n_atoms)[structure]
            return structure, atom, np.zeros(len(structure), dtype=np.int64)
        d = {"scalar": 1, "vector": 3, "tensor": 9}[self.kind]
        return np.repeat(np.arange(n), d), np.full(n * d, -1), np.tile(np.arange(d), n)


def standard_models(nu_max: int, kind: str = "scalar") -> list[str]:
    """Names of the models compared everywhere: composition only (ν=0), every single ν, and the mixed
    kernel. With the exact normalisation ``"nu=2"`` is the SOAP-equivalent model. Vectors have no
    composition model (``K_vector[0] = 0``).

    A single-ν model ``"nu=k"`` uses the composition kernel K^0 next to K^k (``nus=(0, k)``), exactly as the
    mixed model does, so that comparisons isolate the body-ordered part: with the composition kernel
    the linear composition part is fitted jointly with the rest (a GP with a linear kernel on the
    counts), which alone is worth ~5–25 % on QM9 energies and would otherwise be credited to the mixing.
    """
    names = [] if kind == "vector" else ["composition"]
    return names + [f"nu={nu}" for nu in range(1, nu_max + 1)] + ["mixed"]


def model_nus(model: str, nu_max: int):
    """``nus`` parameter of a named model: ``"mixed"`` → None (all), ``"composition"`` → (0,),
    ``"nu=k"`` → (0, k) (see :func:`standard_models`)."""
    name = model.strip().lower().replace(" ", "")
    if name == "mixed":
        return None
    if name in ("composition", "nu=0", "nu0"):
        return (0,)
    for prefix in ("nu=", "nu"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            nu = int(name[len(prefix):])
            if nu == 0:
                return (0,)
            if 1 <= nu <= nu_max:
                return (0, nu)
            raise InputError(f"model {model!r} needs body order {nu} but the kernels stop at nu_max={nu_max}")
    raise InputError(f"unknown model {model!r}; use 'mixed', 'composition' or 'nu=<k>'")


def make_regressor(kind: str, model: str = "mixed", *, nu_max: int, intensive: bool = False, **params):
    """The estimator for a target ``kind`` restricted to a named ``model`` (see :func:`model_nus`)."""
    nus = model_nus(model, nu_max)
    if kind == "scalar":
        return ScalarRegressor(intensive=intensive, nus=nus, **params)
    if kind == "vector":
        params.pop("baseline", None)
        return EquivariantRegressor(intensive=intensive, nus=nus, **params)
    if kind == "tensor":
        return TensorRegressor(intensive=intensive, nus=nus, **params)
    if kind == "atomic":
        return AtomicRegressor(nus=nus, **params)
    raise InputError(f"target kind must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")


def _need(kernels: KernelSet, attr: str, kind: str):
    K = getattr(kernels, attr)
    if K is None:
        raise InputError(f"a {kind} target needs {attr}; compute the kernels with the matching option "
                         f"(--atomic for atomic targets, --tensor-rank 1 for vectors, 2 for tensors)")
    return K


def fit_predict(train_kernels: KernelSet, train: TargetData, test_kernels: KernelSet, test: TargetData, *,
                model: str = "mixed", intensive: bool = False, cancel=None, **params):
    """Fit a model on ``train`` and predict the structures of ``test``.

    ``test.values`` is never read (the test set is touched once, for the final prediction, through its
    kernels and composition only). ``test_kernels`` are test-vs-train blocks.

    Returns
    -------
    pred : ndarray shaped like the target (``(n_test,)``, ``(n_test, 3)``, ``(n_test, 3, 3)``, ``(atoms,)``)
    estimator : the fitted estimator
    """
    kind = train.kind
    if train.values is None:
        raise InputError("the training set has no target values")
    nu_max = train_kernels.nu_max
    est = make_regressor(kind, model, nu_max=nu_max, intensive=intensive, **params)
    if kind == "scalar":
        est.fit(_need(train_kernels, "K", kind), train.values, counts=train.counts, species=train.species,
                n_atoms=train.n_atoms, cancel=cancel)
        pred = est.predict(_need(test_kernels, "K", kind), counts=test.counts, species=test.species,
                           n_atoms=test.n_atoms)
    elif kind == "vector":
        est.fit(_need(train_kernels, "K_vector", kind), train.values, n_atoms=train.n_atoms, cancel=cancel)
        pred = est.predict(_need(test_kernels, "K_vector", kind), n_atoms=test.n_atoms)
    elif kind == "tensor":
        est.fit(_need(train_kernels, "K", kind), _need(train_kernels, "K_tensor", kind), train.values,
                counts=train.counts, species=train.species, n_atoms=train.n_atoms, cancel=cancel)
        pred = est.predict(_need(test_kernels, "K", kind), _need(test_kernels, "K_tensor", kind),
                           counts=test.counts, species=test.species, n_atoms=test.n_atoms)
    else:
        est.fit(_need(train_kernels, "K_atomic", kind), train.values, numbers=train.numbers,
                structure_index=train.structure_of_atom(), cancel=cancel)
        pred = est.predict(_need(test_kernels, "K_atomic", kind), numbers=test.numbers)
    return pred, est


def _errors(y_true, y_pred) -> dict:
    e = np.ravel(y_pred) - np.ravel(y_true)
    t = np.ravel(y_true)
    ss = float(((t - t.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e**2).mean())),
        "max_error": float(np.abs(e).max()),
        "r2": float(1.0 - (e**2).sum() / ss) if ss > 0 else float("nan"),
    }


def compare_models(train_kernels: KernelSet, train: TargetData, test_kernels: KernelSet, test: TargetData, *,
                   models=None, intensive: bool = False, cancel=None, **params) -> list[dict]:
    """Fit every baseline and the mixed model on ``train``, score them on ``test``.

    ``models`` defaults to :func:`standard_models` (composition, each single ν — ν=2 being the SOAP-equivalent
    kernel with the exact normalisation — and mixed). Returns one row per model: ``model``, ``mae``, ``rmse``,
    ``max_error``, ``r2`` (test, components pooled), ``cv_mae``, ``cv_rmse`` (training CV), ``weights``
    ({ν: relative weight}), ``seconds``.
    """
    if test.values is None:
        raise InputError("comparing models needs the test target values")
    names = standard_models(train_kernels.nu_max, train.kind) if models is None else list(models)
    rows = []
    for name in names:
        check_cancel(cancel)
        start = time.perf_counter()
        pred, est = fit_predict(train_kernels, train, test_kernels, test, model=name, intensive=intensive,
                                cancel=cancel, **params)
        core = est.model_
        rows.append({
            "model": name, **_errors(test.values, pred), "cv_mae": float(core.cv_mae_),
            "cv_rmse": float(core.cv_rmse_), "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
            "seconds": time.perf_counter() - start,
        })
    return rows
