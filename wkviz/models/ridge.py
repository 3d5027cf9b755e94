"""The shared ridge core of the exact and the sparse models: input and parameter checks, the linear baseline,
the mixed kernel Σ_ν c_ν K^ν / s_ν, the body-order weight families, grouped CV folds and the guarded solver.

Everything here is shared on purpose by :mod:`wkviz.models.mixed` (exact kernel ridge / GP) and
:mod:`wkviz.models.sparse` (projected process), so that both estimators validate their parameters with ONE
check (:func:`check_params`), search the same weight families and hold out the same folds. The names carry no
leading underscore because other model modules import them; they are not re-exported by :mod:`wkviz.models`
and are no public API of the package.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg

from ..errors import InputError

__all__ = [
    "WEIGHT_MODES", "CV_LOSSES", "SELECTIONS", "GRID_LOG_SCALES",
    "as_kernel_stack", "as_target", "check_params", "ridge_lstsq", "weight_family", "store_weights",
    "mix_kernels", "fit_baseline", "fold_residuals", "PSDFactor", "make_folds", "WeightParam",
]

WEIGHT_MODES = ("exponential", "free")
CV_LOSSES = ("mae", "rmse")
SELECTIONS = ("cv", "evidence")

# Bounds of the log-weights relative to the regulariser: c/λ from 1e-7 (that body order switched off) to 1e9
# (noise a billionth of the normalised signal; beyond that the Cholesky factor loses all digits).
_LOG_C_MIN = math.log(1e-7)
_LOG_C_MAX = math.log(1e9)
_LOG_ALPHA = (math.log(1e-4), math.log(50.0))
# Coarse grid of signal-to-noise ratios c/λ tried for every weight shape before the gradient refinement.
GRID_LOG_SCALES = tuple(math.log(10.0**p) for p in (-1, 1, 3, 5, 7))




def as_kernel_stack(K, name: str, ndim: int = 3) -> np.ndarray:
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array; got {type(K).__name__}") from None
    if K.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimensions, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise InputError(f"{name} contains NaN or infinite values; recompute the kernels")
    return K


def as_target(y, n: int | None, name: str = "y") -> np.ndarray:
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric") from None
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains NaN or infinite values; remove those structures first")
    if n is not None and y.shape[0] != n:
        raise InputError(f"{name} has {y.shape[0]} entries but the kernel has {n} rows")
    return y


def check_params(est, n_kernels: int):
    """The one parameter check of the exact and sparse estimators; returns ``(nus, shape)``.

    ``nus`` are the requested kernel slices (sorted), ``shape`` the explicit relative weights or None for a
    weight family. ``selection`` is checked when the estimator has it (the sparse model is CV-only).

    ``regularization`` must be a positive number (or None): λ is the noise-to-signal variance ratio of the GP,
    every weight search is laid out relative to log λ, and the sparse solution divides by it (σ_f² and the
    predictive variance through the Woodbury identity). λ = 0 was accepted by the exact model but never honoured
    on a singular kernel (the factorisation then adds a jitter) and made its weight search fall back to λ = 1;
    a noise-free interpolant is a tiny positive λ.
    """
    if est.cv_loss not in CV_LOSSES:
        raise InputError(f"cv_loss must be one of {', '.join(CV_LOSSES)}, got {est.cv_loss!r}")
    selection = getattr(est, "selection", None)
    if selection is not None and selection not in SELECTIONS:
        raise InputError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if not (isinstance(est.n_folds, (int, np.integer)) and est.n_folds >= 2):
        raise InputError(f"n_folds must be an integer ≥ 2, got {est.n_folds!r}")
    if not (isinstance(est.max_iter, (int, np.integer)) and est.max_iter >= 0):
        raise InputError(f"max_iter must be a non-negative integer, got {est.max_iter!r}")
    if est.regularization is not None:
        try:
            lam = float(est.regularization)
        except (TypeError, ValueError):
            lam = float("nan")
        if not (np.isfinite(lam) and lam > 0):
            raise InputError(f"regularization must be a positive number or None, got {est.regularization!r}")
    if est.nus is None:
        nus = list(range(n_kernels))
    else:
        nus = sorted({int(nu) for nu in np.atleast_1d(est.nus)})
        bad = [nu for nu in nus if not 0 <= nu < n_kernels]
        if bad:
            raise InputError(
                f"nus {bad} are not available: the kernel has body orders 0..{n_kernels - 1}; "
                f"compute the kernels with a larger nu_max or drop them"
            )
    if isinstance(est.weights, str):
        if est.weights not in WEIGHT_MODES:
            raise InputError(f"weights must be one of {', '.join(WEIGHT_MODES)} or an array, got {est.weights!r}")
        shape = None
    else:
        shape = np.asarray(est.weights, dtype=np.float64).ravel()
        if shape.shape != (n_kernels,) or np.any(shape < 0) or not np.all(np.isfinite(shape)):
            raise InputError(f"explicit weights must be {n_kernels} non-negative numbers, got {est.weights!r}")
    return nus, shape


def ridge_lstsq(X: np.ndarray, y: np.ndarray, rel: float = 1e-8) -> np.ndarray:
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


def weight_family(weights, regularization, used, shape):
    """The body-order weight family of a fit and its regulariser λ.

    Free λ (``regularization=None``): λ = 1 and the overall weight scale is optimised instead (the predictive
    mean depends only on c/λ). Fixed relative weights (``shape``): only their scale is searched, or nothing when
    λ is fixed too.
    """
    lam = float(regularization) if regularization is not None else 1.0
    if shape is None:
        return WeightParam(weights, used, lam), lam
    if regularization is not None:
        return WeightParam("fixed", used, lam, shape=shape[used]), lam
    return WeightParam("scale", used, lam, shape=shape[used] / shape[used].max()), lam


def store_weights(est, param, theta, used, n_kernels, lam) -> np.ndarray:
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


def mix_kernels(K, nus, scales, c, out=None, tmp=None):
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


def fit_baseline(features, y):
    """Least-squares linear baseline on ``features`` (None: no baseline); returns (coefficients, residual)."""
    if features is None:
        return None, y.copy()
    coef = ridge_lstsq(features, y)
    return coef, y - features @ coef



def fold_residuals(folds, features, y) -> list:
    """Per CV fold ``(train, validation, train residual, validation baseline, validation target)``.

    The linear baseline is refitted on each fold's training rows only, so no validation value leaks into it.
    """
    out = []
    for t, v in folds:
        if features is not None:
            beta = ridge_lstsq(features[t], y[t])
            r_t, b_v = y[t] - features[t] @ beta, features[v] @ beta
        else:
            r_t, b_v = y[t], np.zeros(len(v))
        out.append((t, v, r_t, b_v, y[v]))
    return out

class PSDFactor:
    """Factorisation of a symmetric positive (semi-)definite matrix ``A`` for repeated solves.

    Cholesky first. If it fails (``A`` singular to working precision: duplicated structures, a tiny
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


def make_folds(groups: np.ndarray, n_folds: int, seed, features=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds over *groups* (structures), shuffled with ``seed``: the rows of one structure (its vector
    components, its atoms) are always held out together.

    With ``features`` (the inputs of the composition baseline: element counts, fractions or one-hot elements,
    one row per row of ``groups``) no fold's training part lacks an element that its held-out part has: a
    baseline refitted on such a training part gives that element ε = 0, and the held-out structures holding it
    then miss their whole energy (on the bundled QM9 subset one fluorine molecule made the CV MAE 11 eV against a
    test MAE of 0.09 eV). A structure that is the only holder of an element is therefore never held out, and
    when a fold's held-out part would take every holder of an element, one of them stays in training. Such
    structures are still in every fold's training part; folds left with nothing to hold out are dropped.
    """
    uniq, inverse = np.unique(groups, return_inverse=True)
    k = min(int(n_folds), len(uniq))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    fold_of_group[order] = np.arange(len(uniq)) % k
    if features is not None:
        present = np.zeros((len(uniq), np.shape(features)[1]), dtype=bool)
        np.logical_or.at(present, inverse, np.asarray(features) != 0)
        present = present[:, present.any(axis=0)]
        # -1: in every fold's training part, never held out
        fold_of_group[present[:, present.sum(axis=0) == 1].any(axis=1)] = -1
        rank = np.argsort(order)  # position of every group in the shuffled order
        for f in range(k):
            held = fold_of_group == f
            while True:
                missing = present[held].any(axis=0) & ~present[~held].any(axis=0)
                if not missing.any():
                    break
                # keep the first (in shuffled order) held-out holder of the first missing element in training
                holders = np.flatnonzero(held & present[:, np.argmax(missing)])
                g = holders[np.argmin(rank[holders])]
                fold_of_group[g] = -1
                held[g] = False
    fold_of_row = fold_of_group[inverse]
    folds = [(np.flatnonzero(fold_of_row != f), np.flatnonzero(fold_of_row == f)) for f in range(k)]
    return [(t, v) for t, v in folds if len(v)]


# ----------------------------------------------------------------------------------------------------------------
# weight parameterisations
# ----------------------------------------------------------------------------------------------------------------
class WeightParam:
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
        log_lam = math.log(lam)
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
        scales = [self.log_lam + s for s in GRID_LOG_SCALES]
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
