"""The cross-validation route of the sparse model (``selection="cv"``): Nyström features of each weight shape and
the k-fold CV loss profiled over the overall scale (one thin SVD per fold and shape), searched by a grid of
shapes and Nelder–Mead. Kept for comparison with the evidence route (:mod:`wkviz.models.sparse_evidence`), which
is the default; :class:`wkviz.models.sparse.SparseKernelRidge` calls both.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.optimize

from ..runtime import check_cancel
from .ridge import WeightParam, fold_residuals, mix_kernels

__all__ = ["profile_search"]

# Overall log-scale grid of the profile (relative to the regulariser): c/λ from 1e-4 to 1e9.
_PROFILE_GRID = np.log(10.0) * np.arange(-4.0, 9.5, 1.0)


class _Nystrom:
    """Nyström map of one weight vector: K_MM(c) = U S Uᵀ, φ(x) = k_xM(c) U S^{-1/2}."""

    def __init__(self, K_MM, nus, scales, c, rcond):
        Kmm = mix_kernels(K_MM, nus, scales, c)
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
        self.folds = fold_residuals(folds, features, y)
        self.n_rows = sum(len(v) for _, v in folds)
        self.n_evals = 0

    def prepare(self, c):
        """Per-fold spectral pieces for the weight vector c (one shape)."""
        check_cancel(self.cancel)
        ny = _Nystrom(self.K_MM, self.nus, self.scales, c, self.rcond)
        Phi = mix_kernels(self.K_NM, self.nus, self.scales, c) @ ny.P
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


def _split_theta(param: WeightParam):
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


def profile_search(cv: _ProfileCV, param: WeightParam, max_iter: int):
    """Grid of weight shapes, each scored at its best overall scale, then Nelder–Mead on the shape; returns
    (θ, (cv MAE, cv RMSE))."""
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
    if shape_idx and max_iter > 0:
        for _, s in scored[:2]:
            # log-loss keeps the simplex tolerances independent of the target's units
            res = scipy.optimize.minimize(lambda x: math.log(max(evaluate(x)[0], 1e-300)), np.array(s),
                                          method="Nelder-Mead",
                                          options={"maxiter": int(max_iter) * max(1, len(shape_idx)),
                                                   "xatol": 1e-2, "fatol": 1e-4})
            if evaluate(res.x)[0] < evaluate(best_shape)[0]:
                best_shape = np.array(res.x)
    loss, delta, mae, rmse = evaluate(best_shape)
    return param.clip(theta_of(best_shape, delta)), (mae, rmse)
