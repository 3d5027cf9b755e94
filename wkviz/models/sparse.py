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

Hyperparameters are those of the exact model — the same parameter check, weight families (``"exponential"``,
``"free"`` or fixed), per-element baseline, grouped k folds (same seed → same folds) and CV loss, all from
:mod:`wkviz.models.ridge`. ``selection="evidence"`` (default, as the exact model's CLI and app) maximises the GP
evidence of the projected-process model with its exact gradient, by the exact model's own search (grid, single-ν
corners, L-BFGS-B); it is computed from M × M products accumulated once from row blocks of K_NM, so that an
evaluation costs O(M³) whatever N, and K_NM never has to be in memory (:meth:`SparseKernelRidge.fit_blocks`,
:mod:`wkviz.models.sparse_evidence`). ``selection="cv"`` minimises the k-fold CV loss profiled over the overall
scale, shapes refined by Nelder–Mead (:mod:`wkviz.models.sparse_cv`; slow at large M: it factorises N × M
feature matrices at every shape).

With *every* training environment active the environment model is again the exact model
(P K_AA K_AA⁺ K_AA Pᵀ = P K_AA Pᵀ = K_NN for the atom-to-structure sum P). The active points, their kernels and
their cost (:func:`fps`, :func:`select_active`, :func:`select_active_environments`, :func:`sparse_kernels`,
:func:`sparse_estimate`) are in :mod:`wkviz.models.active` and re-exported here; :func:`fit_sparse` runs the
whole task (select, compute the kernels, fit, predict) for the CLI-less callers (the app).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from ..runtime import SMALL_SOLVE, ThreadChoice, blas_threads, check_cancel
from .active import (
    ACTIVE_KINDS,
    environment_features,
    fps,
    select_active,
    select_active_environments,
    selection_features,
    sparse_estimate,
    sparse_kernels,
)
from .mixed import MixedKernelRidge
from .ridge import (
    as_kernel_stack,
    as_target,
    check_params,
    fit_baseline,
    make_folds,
    mix_kernels,
    store_weights,
    weight_family,
)
from .sparse_cv import _Nystrom, _ProfileCV, profile_search
from .sparse_evidence import SparseEvidence, SparseGram, cv_errors
from .targets import ScalarRegressor, align_columns, warn_unrepresented
from .tasks import TargetData, model_nus

__all__ = [
    "ACTIVE_KINDS",
    "fps",
    "selection_features",
    "environment_features",
    "select_active",
    "select_active_environments",
    "SparseKernelRidge",
    "SparseScalarRegressor",
    "sparse_kernels",
    "sparse_estimate",
    "SparseFit",
    "fit_sparse",
]

# Relative eigenvalue floor of K_MM: directions below it carry no information the data could constrain.
_RCOND = 1e-10
# Jitter of K_MM(c) for the evidence route, relative to Σc, along the whitening reference (sparse_evidence).
_JITTER = 1e-8
# Above this many active points the evidence's grid is scored on this many (a random subset) first.
_COARSE_ACTIVE = 1000
# The refinement on all active points after the coarse search stops once an iteration gains less than this many
# nats of log evidence in total (the objective is per row, so its tolerance is this over the number of rows):
# hyperparameters whose evidence differs by 0.05 nats are equally supported, and on QM9 (2,000 molecules,
# M = 3,000) the last iterations before this point gained 1e-5 nats per row each at 2–4 s apiece.
_FULL_GAIN_NATS = 0.05
# Rows of K_NM per block of the evidence's products when K_NM is in memory.
_ROW_BLOCK = 2048


# the projected-process estimator
# ----------------------------------------------------------------------------------------------------------------
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
    selection : {"evidence", "cv"}
        Weights and regularisation by the GP evidence of the projected-process model (default) or by k-fold CV.
    max_iter : int
        Iterations of each refinement after the grid (L-BFGS-B for the evidence, Nelder–Mead for CV).
    rcond : float
        CV route: eigenvalues of K_MM below ``rcond`` × the largest are dropped (Nyström pseudo-inverse).
    jitter : float
        Evidence route: K_MM(c) gets ``jitter``·Σc times the whitening reference (mean normalised K_MM), which
        keeps it positive definite with repeated active points; 1e-8 moves predictions by ~1e-10 and the
        predictive std by ~1e-5 (relative) against the exact model with every point active.
    coarse_active : int
        Evidence route: above this many active points the grid and a first refinement run on a random
        ``coarse_active`` of them, then L-BFGS-B refines on all (as the exact model scores its grid on a subset).

    Attributes
    ----------
    n_active_ : int
    nystrom_rank_ : int
        Directions of K_MM kept (CV route; M for the evidence route).
    log_marginal_likelihood_ : float
        Evidence route: the projected-process log marginal likelihood at the chosen weights (NaN for CV).
    products_seconds_, search_seconds_ : float
        Evidence route: time of the M × M products and of the hyperparameter search.
    search_threads_ : int
        Evidence route: BLAS threads of the full-size evaluations (:class:`wkviz.runtime.ThreadChoice`).
    """

    def __init__(self, *, nus=None, weights="exponential", regularization=None, baseline=True, selection="evidence",
                 n_folds=5, cv_loss="mae", max_iter=50, random_state=0, rcond=_RCOND, jitter=_JITTER,
                 coarse_active=_COARSE_ACTIVE):
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state
        self.rcond = rcond
        self.jitter = jitter
        self.coarse_active = coarse_active

    def _check(self, K_NM, K_MM):
        if K_NM.shape[0] != K_MM.shape[0] or K_MM.shape[1] != K_MM.shape[2] or K_NM.shape[2] != K_MM.shape[1]:
            raise InputError(f"K_NM {K_NM.shape} and K_MM {K_MM.shape} do not match: expected "
                             "(n_kernels, N, M) and (n_kernels, M, M)")
        return check_params(self, K_NM.shape[0])

    def fit(self, K_NM, K_MM, y, *, features=None, groups=None, cancel=None, progress=None):
        """Choose the weights (GP evidence or k-fold CV of the projected-process model), then fit on all rows.

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
            Checked at every evaluation.
        progress : callable, optional
            ``progress(fraction_done, eta_seconds)`` of the evidence's products (:meth:`fit_blocks`).
        """
        K_NM = as_kernel_stack(K_NM, "K_NM")
        K_MM = as_kernel_stack(K_MM, "K_MM")
        if self.selection == "evidence":
            self._check(K_NM, K_MM)
            n = K_NM.shape[1]

            def blocks():
                for s in range(0, n, _ROW_BLOCK):
                    yield np.arange(s, min(s + _ROW_BLOCK, n)), K_NM[:, s:s + _ROW_BLOCK]

            return self.fit_blocks(blocks, K_MM, y, features=features, groups=groups, cancel=cancel, K_NM=K_NM,
                                   progress=progress)
        with blas_threads(max(K_MM.shape[1], 1)):
            return self._fit(K_NM, K_MM, y, features, groups, cancel)

    def fit_blocks(self, blocks, K_MM, y, *, features=None, groups=None, cancel=None, progress=None, K_NM=None):
        """Evidence fit from row blocks of K_NM, never holding all of it (``selection="evidence"`` only).

        Parameters
        ----------
        blocks : callable
            ``blocks()`` returns an iterable of ``(rows, K_block)``: training-row indices and their kernels
            ``(n_kernels, len(rows), n_active)``; every row exactly once (e.g. tiles read from a kernel store).
        K_MM : ndarray of shape (n_kernels, n_active, n_active)
        y : ndarray of shape (n_samples,)
        features, groups, cancel
            As :meth:`fit`.
        progress : callable, optional
            ``progress(fraction_done, eta_seconds)`` while the products are accumulated.
        K_NM : ndarray, optional
            The whole K_NM when it is in memory: then the CV errors at the chosen weights are computed too
            (``cv_mae_``; NaN otherwise).

        Notes
        -----
        The products K̃ʲ_MN K̃ᵏ_NM (:class:`wkviz.models.sparse_evidence.SparseGram`) cost O(N M² J²/2) once and
        take J(J+1)/2 + J + 1 matrices of M × M (:func:`wkviz.models.sparse_evidence.gram_bytes`); each evidence
        evaluation is then O(M³) whatever N. With more than ``coarse_active`` active points the grid (and a first
        refinement) run on a random ``coarse_active`` of them, as the exact model scores its grid on a subset.
        """
        if self.selection != "evidence":
            raise InputError("fit_blocks needs selection='evidence' (cross-validation needs all of K_NM: use fit)")
        K_MM = as_kernel_stack(K_MM, "K_MM")
        if K_MM.shape[1] != K_MM.shape[2]:
            raise InputError(f"K_MM must be square in its last two axes, got shape {K_MM.shape}")
        nus, shape = check_params(self, K_MM.shape[0])
        y = np.asarray(y, dtype=np.float64)
        n, m = len(y), K_MM.shape[1]
        y, groups, features, used, param, lam, use_features = self._prepare(n, K_MM, nus, shape, y, groups, features)
        self.baseline_coef_, r = fit_baseline(use_features, y)
        self._route = "evidence"
        self.cv_mae_ = self.cv_rmse_ = float("nan")
        self.cv_n_evals_ = 0
        if not len(used):
            c = store_weights(self, param, param.default() if param.n_theta else np.zeros(0), used, K_MM.shape[0],
                              lam)
            self._gram = None
            self.dual_coef_ = np.zeros(m)
            self.nystrom_rank_ = 0
            self.gp_variance_ = float(r @ r) / n
            self.noise_std_ = math.sqrt(self.gp_variance_)
            self.log_marginal_likelihood_ = float("nan")
            return self
        order = np.random.default_rng(self.random_state).permutation(m)
        t0 = time.perf_counter()
        gram = SparseGram(K_MM, used, self.kernel_scales_, r, y=y, features=use_features, order=order)
        for rows, K_block in blocks():
            check_cancel(cancel)
            gram.add(rows, as_kernel_stack(K_block, "K_NM block"))
            if progress is not None:
                frac = gram.rows_seen / n
                progress(frac, (time.perf_counter() - t0) * (1 - frac) / frac if frac > 0 else None)
        gram.finish()
        self.products_seconds_ = time.perf_counter() - t0
        t0 = time.perf_counter()
        # large full-size evaluations: threads chosen by timing the first two (one thread below SMALL_SOLVE)
        threads = ThreadChoice() if m >= SMALL_SOLVE else 1
        full = SparseEvidence(gram, lam, param, jitter=self.jitter, cancel=cancel, threads=threads)
        if param.n_theta and n >= 2:
            coarse = None
            if m > self.coarse_active:
                coarse = SparseEvidence(gram, lam, param, jitter=self.jitter, sub=self.coarse_active, cancel=cancel)
            theta = self._search_evidence(full, param, coarse)
            self.cv_n_evals_ = full.n_evals + (coarse.n_evals if coarse is not None else 0)
            self.coarse_n_evals_ = coarse.n_evals if coarse is not None else 0
            if theta is None:
                warnings.warn("the evidence failed at every hyperparameter tried; using defaults", RuntimeWarning,
                              stacklevel=2)
                theta = param.default()
        else:
            theta = param.default() if param.n_theta else np.zeros(0)
        self.search_seconds_ = time.perf_counter() - t0
        self.search_threads_ = threads.threads if isinstance(threads, ThreadChoice) else threads
        c = store_weights(self, param, theta, used, K_MM.shape[0], lam)
        st = full.state(c)
        if st is None:
            raise InputError("the sparse model's matrices are not positive definite at the chosen weights; "
                             "use fewer or more distinct active points, or a larger jitter")
        self._gram, self._state = gram, st
        self.dual_coef_ = gram.unpermute(scipy.linalg.solve_triangular(gram.L0, st["u"], lower=True, trans=1,
                                                                        check_finite=False))
        self.nystrom_rank_ = m
        self.gp_variance_ = max(st["q"] / n, 0.0)
        self.noise_std_ = math.sqrt(self.gp_variance_ * lam)
        self.log_marginal_likelihood_ = float(-0.5 * n * (1.0 + math.log(2.0 * math.pi * max(self.gp_variance_,
                                                                                                1e-300)))
                                              - 0.5 * st["logdet"])
        if K_NM is not None:
            folds = make_folds(groups, self.n_folds, self.random_state, features=use_features)
            if folds:
                self.cv_mae_, self.cv_rmse_ = cv_errors(K_NM, gram, full, c, folds, use_features, y)
        return self

    def _search_evidence(self, full, param, coarse):
        """The exact model's search (grid, single-ν corners, L-BFGS-B with the exact gradient) on the evidence.

        With a coarse problem: the whole search on it first, then the full problem re-scores the coarse grid's
        best distinct points and refines from the best with L-BFGS-B."""
        if coarse is None:
            return MixedKernelRidge._optimise(self, full, param)
        MixedKernelRidge._optimise(self, coarse, param)
        start = coarse.best_theta
        if start is None:
            return MixedKernelRidge._optimise(self, full, param)
        if self.max_iter > 0:
            try:
                # from the coarse optimum; stop once an iteration gains less than _FULL_GAIN_NATS in total
                scipy.optimize.minimize(full, start, jac=True, method="L-BFGS-B", bounds=param.bounds,
                                        options={"maxiter": int(self.max_iter),
                                                 "ftol": _FULL_GAIN_NATS / max(full.g.n, 1)})
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                pass
        else:
            full(start, need_grad=False)
        if full.best_theta is None:  # the coarse optimum is beyond what the full problem resolves: search it all
            return MixedKernelRidge._optimise(self, full, param)
        return full.best_theta

    def _prepare(self, n, K_MM, nus, shape, y, groups, features):
        """What both routes (evidence and CV) check and set before their search: the target, groups and baseline
        features of the ``n`` training rows, the used kernel slices and their scales (from K_MM's diagonal), the
        weight family; returns ``(y, groups, features, used, param, lam, use_features)``."""
        m = K_MM.shape[1]
        y = as_target(y, n)
        if y.ndim != 1:
            raise InputError(f"y must be one-dimensional, got shape {y.shape}")
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if groups.shape != (n,):
            raise InputError(f"groups must have one label per training row ({n}), got shape {groups.shape}")
        if features is not None:
            features = as_target(features, n, "features")
            if features.ndim != 2:
                raise InputError(f"features must be 2-D (n_samples, n_features), got shape {features.shape}")
        scales = np.einsum("kii->k", K_MM) / m
        used = np.array([nu for nu in nus if scales[nu] > 0 and (shape is None or shape[nu] > 0)], dtype=np.int64)
        self.kernel_scales_ = np.where(np.isin(np.arange(K_MM.shape[0]), used), scales, 0.0)
        self.nus_ = used
        self.n_features_in_ = K_MM.shape[0]
        self.n_active_ = m
        param, lam = weight_family(self.weights, self.regularization, used, shape)
        use_features = features if (self.baseline and features is not None) else None
        return y, groups, features, used, param, lam, use_features

    def _fit(self, K_NM, K_MM, y, features, groups, cancel):
        nus, shape = self._check(K_NM, K_MM)
        self._route = "cv"
        n, m = K_NM.shape[1], K_MM.shape[1]
        y, groups, features, used, param, lam, use_features = self._prepare(n, K_MM, nus, shape, y, groups, features)
        folds = (make_folds(groups, self.n_folds, self.random_state, features=use_features)
                 if len(used) and param.n_theta else [])

        if folds:
            cv = _ProfileCV(K_NM, K_MM, used, self.kernel_scales_, y, folds, use_features, lam, self.cv_loss,
                            self.rcond, cancel)
            theta, metrics = profile_search(cv, param, self.max_iter)
            self.cv_mae_, self.cv_rmse_ = metrics
            self.cv_n_evals_ = cv.n_evals
        else:
            if len(used) and param.n_theta:
                warnings.warn(f"only {len(np.unique(groups))} training group(s): cannot cross-validate, using "
                              "default hyperparameters", RuntimeWarning, stacklevel=2)
            theta = param.default()
            self.cv_mae_ = self.cv_rmse_ = float("nan")
            self.cv_n_evals_ = 0

        c = store_weights(self, param, theta, used, K_NM.shape[0], lam)
        self.baseline_coef_, r = fit_baseline(use_features, y)
        if len(used):
            ny = _Nystrom(K_MM, used, self.kernel_scales_, c, self.rcond)
            Phi = mix_kernels(K_NM, used, self.kernel_scales_, c) @ ny.P
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
        # this route (selection="cv") does not compute the evidence
        self.log_marginal_likelihood_ = float("nan")
        return self

    def _mix_test(self, K):
        return mix_kernels(K, self.nus_, self.kernel_scales_, self.coef_weights_[self.nus_])

    def predict(self, K, *, features=None, K_diag=None, return_std=False):
        """Predict from test-vs-active kernels ``(n_kernels, n_test, n_active)``.

        ``K_diag`` ``(n_kernels, n_test)`` (self-kernels of the test samples) is needed for ``return_std``;
        the standard deviation is that of the latent function (add ``noise_std_`` in quadrature for a new
        observation).
        """
        check_is_fitted(self, "dual_coef_")
        K = as_kernel_stack(K, "K")
        if K.shape[0] != self.n_features_in_ or K.shape[2] != self.n_active_:
            raise InputError(f"test kernel has shape {K.shape}; expected ({self.n_features_in_}, n_test, "
                             f"{self.n_active_}) — kernels between the test and the active structures")
        t = K.shape[1]
        mix = self._mix_test(K)
        pred = mix @ self.dual_coef_
        if self.baseline_coef_ is not None:
            if features is None:
                raise InputError("this model was fitted with a baseline: pass the test features (element counts)")
            pred = pred + as_target(features, t, "features") @ self.baseline_coef_
        if not return_std:
            return pred
        if K_diag is None:
            raise InputError("return_std needs K_diag, the self-kernels k(x, x) of every test sample, "
                             "shape (n_kernels, n_test)")
        K_diag = as_kernel_stack(K_diag, "K_diag", ndim=2)
        if K_diag.shape != (self.n_features_in_, t):
            raise InputError(f"K_diag must have shape ({self.n_features_in_}, {t}), got {K_diag.shape}")
        prior = np.zeros(t)
        for nu in self.nus_:
            prior += (self.coef_weights_[nu] / self.kernel_scales_[nu]) * K_diag[nu]
        if getattr(self, "_route", "cv") == "evidence":
            if self._gram is None:
                return pred, np.zeros(t)
            # σ² = σ_f² [k(x,x) − ŷ K̂_MM⁻¹ ŷᵀ + λ ŷ B̂⁻¹ ŷᵀ], ŷ = k_xM L₀⁻ᵀ in the whitened basis
            g, st = self._gram, self._state
            Yx = scipy.linalg.solve_triangular(g.L0, mix[:, g.order].T, lower=True, check_finite=False)
            a = scipy.linalg.solve_triangular(st["Lk"], Yx, lower=True, check_finite=False)
            b = scipy.linalg.solve_triangular(st["Lb"], Yx, lower=True, check_finite=False)
            var = prior - np.einsum("ij,ij->j", a, a) + self.regularization_ * np.einsum("ij,ij->j", b, b)
            return pred, np.sqrt(np.clip(self.gp_variance_ * var, 0.0, None))
        if self._P is None:
            return pred, np.zeros(t)
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
                 selection="evidence", n_folds=5, cv_loss="mae", max_iter=50, random_state=0, rcond=_RCOND,
                 jitter=_JITTER, coarse_active=_COARSE_ACTIVE):
        super().__init__(intensive=intensive, nus=nus, weights=weights, regularization=regularization,
                         baseline=baseline, selection=selection, n_folds=n_folds, cv_loss=cv_loss,
                         max_iter=max_iter, random_state=random_state)
        self.rcond = rcond
        self.jitter = jitter
        self.coarse_active = coarse_active

    def _core(self, **overrides):
        params = {p: getattr(self, p) for p in ("nus", "weights", "regularization", "baseline", "selection",
                                                "n_folds", "cv_loss", "max_iter", "random_state", "rcond",
                                                "jitter", "coarse_active")}
        params.update(overrides)
        return SparseKernelRidge(**params)

    def fit(self, K_NM, K_MM, y, *, counts=None, species=None, n_atoms=None, n_atoms_active=None, cancel=None,
            progress=None):
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
        cancel, progress
            As :meth:`SparseKernelRidge.fit`.
        """
        K_NM = as_kernel_stack(K_NM, "K_NM")
        K_MM = as_kernel_stack(K_MM, "K_MM")
        n = K_NM.shape[1]
        y = as_target(y, n)
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
            warn_unrepresented(np.asarray(counts), species)
        self.species_ = None if species is None else np.asarray(species).ravel().copy()
        self.model_ = self._core().fit(K_NM, K_MM, y, features=features, cancel=cancel, progress=progress)
        self._expose(self.model_)
        self.baseline_coef_ = self.model_.baseline_coef_
        self.n_active_ = self.model_.n_active_
        self.nystrom_rank_ = self.model_.nystrom_rank_
        return self

    def predict(self, K, *, counts=None, species=None, n_atoms=None, K_diag=None, return_std=False):
        """Predict from test-vs-active kernels ``[nu_max+1, n_test, M]`` (``K_diag`` ``[nu_max+1, n_test]``,
        sum kernels, for ``return_std``)."""
        check_is_fitted(self, "model_")
        K = as_kernel_stack(K, "K")
        m = K.shape[1]
        if counts is not None:
            counts = align_columns(counts, species, self.species_ if species is not None else None)
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


# ----------------------------------------------------------------------------------------------------------------
# the whole task: active points, their kernels, fit, predict
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SparseFit:
    """What :func:`fit_sparse` returns.

    Attributes
    ----------
    pred : ndarray of shape (n_test,)
    std : ndarray of shape (n_test,) or None
        GP predictive standard deviation (latent function), when ``K_diag`` was given.
    estimator : SparseScalarRegressor
    active : ndarray of int
        Active structures (indices into the training structures) or environments (global atom indices of the
        training structures).
    test : TargetData
        The test target (its ``values`` are the truth to score ``pred`` against).
    kernel_seconds, seconds : float
        Time of the kernels, and of the whole task.
    """

    pred: np.ndarray
    std: np.ndarray | None
    estimator: "SparseScalarRegressor"
    active: np.ndarray
    test: TargetData
    kernel_seconds: float
    seconds: float


def fit_sparse(frames, target_key: str, train, test, *, hypers, n_active: int, active_kind: str = "structures",
               model: str = "mixed", weights="exponential", n_folds: int = 5, intensive: bool = False,
               K_diag=None, engine=None, seed: int = 0, progress=None, cancel=None) -> SparseFit:
    """Select M active structures or environments by FPS among the training structures, compute the kernels the
    sparse model needs (:func:`sparse_kernels`), fit a :class:`SparseScalarRegressor` (weights by the GP evidence on
    the training set) and predict the test structures.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        All structures; ``train`` and ``test`` index them.
    target_key : str
        A scalar target of ``frames`` (:func:`wkviz.data.describe_targets`).
    train, test : array of int
    hypers : Hypers
    n_active : int
    active_kind : {"structures", "environments"}
    model : str
        Named model (:func:`wkviz.models.model_nus`).
    weights, n_folds, intensive
        As :class:`SparseScalarRegressor`.
    K_diag : ndarray of shape (nu_max+1, n_test), optional
        Self-kernels of the test structures (e.g. from the exact kernels); with them the predictions get GP
        standard deviations.
    engine : WignerKernel, optional
        Engine for the kernels (its memory budget); a default one otherwise.
    seed : int
        Seed of the first FPS point.
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)``.
    cancel : threading.Event-like or callable, optional

    Returns
    -------
    SparseFit
    """
    from ..engine.kernels import WignerKernel

    train = np.asarray(train)
    test = np.asarray(test)
    target = TargetData.from_frames(frames, target_key)
    if target.kind != "scalar":
        raise InputError(f"the sparse model learns scalar targets only; `{target_key}` is a {target.kind} target: "
                         "use the exact model on fewer structures")
    if active_kind not in ACTIVE_KINDS:
        raise InputError(f"active points must be one of {', '.join(ACTIVE_KINDS)}, got {active_kind!r}")
    start = time.perf_counter()

    def report(fraction):
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(fraction, elapsed * (1 - fraction) / fraction if fraction > 0.02 else None)

    tr_frames = [frames[i] for i in train]
    te_frames = [frames[i] for i in test]
    report(0.0)
    if active_kind == "structures":
        active = select_active(tr_frames, n_active, hypers, seed=seed)
    else:
        active = select_active_environments(tr_frames, n_active, hypers, seed=seed)
    report(0.1)
    check_cancel(cancel)
    engine = engine or WignerKernel(hypers)
    kern = sparse_kernels(tr_frames, active, hypers, kind=active_kind, frames_test=te_frames, engine=engine,
                          progress=lambda f, eta: report(0.1 + 0.6 * f), cancel=cancel)
    report(0.8)
    tr_d, te_d = target.subset(train), target.subset(test)
    n_atoms_active = tr_d.n_atoms[active] if active_kind == "structures" else np.ones(len(active))
    nu_max = kern["K_NM"].shape[0] - 1
    est = SparseScalarRegressor(intensive=intensive, nus=model_nus(model, nu_max), weights=weights,
                                n_folds=int(n_folds))
    est.fit(kern["K_NM"], kern["K_MM"], tr_d.values, counts=tr_d.counts, species=tr_d.species, n_atoms=tr_d.n_atoms,
            n_atoms_active=n_atoms_active, cancel=cancel)
    out = est.predict(kern["K_TM"], counts=te_d.counts, species=te_d.species, n_atoms=te_d.n_atoms, K_diag=K_diag,
                      return_std=K_diag is not None)
    pred, std = out if K_diag is not None else (out, None)
    report(1.0)
    return SparseFit(pred=np.asarray(pred), std=None if std is None else np.asarray(std), estimator=est,
                     active=active, test=te_d, kernel_seconds=float(kern["seconds"]),
                     seconds=time.perf_counter() - start)
