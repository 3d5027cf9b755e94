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

This module holds :class:`MixedKernelRidge` (scikit-learn conventions: ``__init__`` stores keyword arguments,
``fit`` validates and learns attributes with a trailing underscore, ``predict`` starts with ``check_is_fitted``)
and its two hyperparameter objectives; what it shares with the sparse model lives in :mod:`wkviz.models.ridge`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import Cancelled, InputError
from ..runtime import blas_threads, check_cancel
from .ridge import (
    GRID_LOG_SCALES,
    PSDFactor,
    WeightParam,
    as_kernel_stack,
    as_target,
    check_params,
    fit_baseline,
    fold_residuals,
    make_folds,
    mix_kernels,
    store_weights,
    weight_family,
)

__all__ = ["MixedKernelRidge"]


# Above this many training groups the coarse grid is scored on a random subset of this size (its optimum is
# close, and L-BFGS then refines on the full training set): the grid is most of the evaluations.
GRID_SUBSET = 800


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
        return mix_kernels(self.K, self.nus, self.scales, c, out=self._mix, tmp=self._tmp)


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
        self.folds = fold_residuals(folds, features, y)
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
                fac = PSDFactor(A, quiet=True)
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
        L = PSDFactor._cholesky(A, overwrite=True)
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
# the exact estimator
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
        λ > 0 of ``(Σ c_ν K̃^ν + λ I)``. ``None`` (default): λ = 1 and the overall scale of the weights is
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
        Seed of the fold assignment (and of the coarse grid's subset).
    grid_subset : int
        Above this many training groups the coarse grid is scored on a random subset of this many groups;
        the refinement always runs on the whole training set.

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
        grid_subset=GRID_SUBSET,
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
        self.grid_subset = grid_subset

    # -- fitting ---------------------------------------------------------------------------------------------
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
        K = as_kernel_stack(K, "K")
        with blas_threads(K.shape[1]):
            return self._fit(K, y, features, groups, block_size, cancel)

    def _fit(self, K, y, features, groups, block_size, cancel):
        n = K.shape[1]
        if K.shape[2] != n:
            raise InputError(f"the training kernel must be square in its last two axes, got shape {K.shape}")
        y = as_target(y, n)
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
            features = as_target(features, n, "features")
            if features.ndim != 2:
                raise InputError(f"features must be 2-D (n_samples, n_features), got shape {features.shape}")
        nus, shape = check_params(self, K.shape[0])

        scales = np.einsum("kii->k", K) / n
        if np.any(scales[nus] < 0):
            bad = [nu for nu in nus if scales[nu] < 0]
            raise InputError(f"kernel slices {bad} have a negative mean diagonal, so they are not valid kernels")
        used = np.array([nu for nu in nus if scales[nu] > 0 and (shape is None or shape[nu] > 0)], dtype=np.int64)
        self.kernel_scales_ = np.where(np.isin(np.arange(K.shape[0]), used), scales, 0.0)
        self.nus_ = used
        self.n_features_in_ = K.shape[0]

        param, lam = weight_family(self.weights, self.regularization, used, shape)

        use_features = features if (self.baseline and features is not None) else None
        self.baseline_coef_, r = fit_baseline(use_features, y)
        evidence = self.selection == "evidence"
        searching = bool(len(used) and param.n_theta)
        folds = make_folds(groups, self.n_folds, self.random_state, features=use_features) if searching else []

        def cv_objective(rows=None):
            if rows is None:
                return _CVObjective(K, used, scales, y, folds, use_features, lam, self.cv_loss, block_size, param,
                                    cancel)
            return _CVObjective(K[:, rows][:, :, rows], used, scales, y[rows],
                                make_folds(groups[rows], self.n_folds, self.random_state,
                                           features=None if use_features is None else use_features[rows]),
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
            subset = int(self.grid_subset)
            if len(uniq) > subset:
                rng = np.random.default_rng(self.random_state)
                coarse = make(np.flatnonzero(np.isin(groups, rng.choice(uniq, subset, replace=False))))
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

        c = store_weights(self, param, theta, used, K.shape[0], lam)
        self.log_marginal_likelihood_ = float("nan")
        if len(used):
            A = self._mix(K)
            A.flat[:: n + 1] += lam
            self._factor = PSDFactor(A)
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

    def _optimise(self, objective: _CVObjective, param: WeightParam, coarse: _CVObjective | None = None):
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

                grid = [param.log_lam + s for s in GRID_LOG_SCALES]
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
        return mix_kernels(K, self.nus_, self.kernel_scales_, self.coef_weights_[self.nus_])

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
        K = as_kernel_stack(K, "K")
        with blas_threads(self.n_train_):
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
            features = as_target(features, m, "features")
            pred = pred + features @ self.baseline_coef_
        if not return_std:
            return pred
        if K_diag is None:
            raise InputError(
                "return_std needs K_diag, the self-kernels k(x, x) of every test sample, shape (n_kernels, n_test)"
            )
        K_diag = as_kernel_stack(K_diag, "K_diag", ndim=2)
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
