"""Kernel PCA maps of structures and atomic environments, per body order ν and for the mixed kernel.

Each kernel is cosine-normalised (k(a,b)/√(k(a,a) k(b,b)): every sample on the unit sphere of feature space, so
large molecules do not dominate) and centred in feature space before the eigendecomposition. The explained
variance ratio of a component is its eigenvalue divided by the trace of the centred kernel (the total
variance), so the ratios of all components sum to 1 and those shown to ≤ 1. Eigenvector signs are fixed
(largest-magnitude coordinate positive), so maps do not flip between runs or between ν.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError

__all__ = ["cosine_normalize", "center_kernel", "KernelPCA", "Projection", "mix_kernels", "project",
           "project_all"]


def _safe_rsqrt(d):
    d = np.asarray(d, dtype=np.float64)
    # A sample with a zero self-kernel (an atom without neighbours at ν ≥ 1) has no direction; keep it at the
    # origin instead of dividing by zero.
    return np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)


def cosine_normalize(K, diag_rows=None, diag_cols=None) -> np.ndarray:
    """``K_ij / √(d_i d'_j)``; for a square kernel the diagonals default to its own diagonal."""
    K = np.asarray(K, dtype=np.float64)
    if diag_rows is None or diag_cols is None:
        if K.shape[0] != K.shape[1]:
            raise InputError("a rectangular kernel needs the self-kernels of its rows and columns")
        d = np.diag(K)
        diag_rows = d if diag_rows is None else diag_rows
        diag_cols = d if diag_cols is None else diag_cols
    return K * _safe_rsqrt(diag_rows)[:, None] * _safe_rsqrt(diag_cols)[None, :]


def center_kernel(K) -> np.ndarray:
    """Double-centred kernel (I − 11ᵀ/n) K (I − 11ᵀ/n): features with zero mean."""
    K = np.asarray(K, dtype=np.float64)
    row = K.mean(axis=0)
    return K - row[None, :] - K.mean(axis=1)[:, None] + row.mean()


def _fix_signs(V: np.ndarray) -> np.ndarray:
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return V * signs[None, :]


class KernelPCA(TransformerMixin, BaseEstimator):
    """Kernel PCA on a precomputed kernel, with cosine normalisation and deterministic signs.

    Parameters
    ----------
    n_components : int
    cosine : bool
        Cosine-normalise the kernel first (default True).
    center : bool
        Centre in feature space (default True).

    Attributes
    ----------
    eigenvalues_ : ndarray of shape (n_components,)
        Largest eigenvalues of the (normalised, centred) kernel, descending, divided by n (variances).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Eigenvalue / trace: fraction of the total feature-space variance per component.
    embedding_ : ndarray of shape (n_samples, n_components)
        Coordinates of the training samples.
    """

    def __init__(self, n_components=2, *, cosine=True, center=True):
        self.n_components = n_components
        self.cosine = cosine
        self.center = center

    def fit(self, K, y=None):
        """Fit on a square kernel ``(n, n)``."""
        K = np.asarray(K, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise InputError(f"kernel PCA needs a square kernel (n, n), got shape {K.shape}")
        if not np.all(np.isfinite(K)):
            raise InputError("the kernel contains NaN or infinite values; recompute it")
        n = K.shape[0]
        k = int(self.n_components)
        if not 1 <= k <= n:
            raise InputError(f"n_components must be between 1 and the number of samples ({n}), got {k}")
        self._diag = np.diag(K).copy()
        Kn = cosine_normalize(K) if self.cosine else K.copy()
        Kn = 0.5 * (Kn + Kn.T)
        self._col_mean = Kn.mean(axis=0)
        self._all_mean = float(self._col_mean.mean())
        Kc = center_kernel(Kn) if self.center else Kn
        total = float(np.trace(Kc))
        w, V = scipy.linalg.eigh(Kc, subset_by_index=[n - k, n - 1], check_finite=False)
        w, V = w[::-1], V[:, ::-1]
        w = np.clip(w, 0.0, None)
        V = _fix_signs(V)
        self.eigenvalues_ = w / n
        self.explained_variance_ratio_ = w / total if total > 0 else np.zeros_like(w)
        self._alphas = V * _safe_rsqrt(w)[None, :]
        self.embedding_ = V * np.sqrt(w)[None, :]
        self.n_samples_fit_ = n
        return self

    def fit_transform(self, K, y=None):
        return self.fit(K).embedding_

    def transform(self, K, diag=None):
        """Project new samples from their kernel against the fitted ones, ``(m, n)``, and (when ``cosine``)
        their self-kernels ``diag`` ``(m,)``."""
        check_is_fitted(self, "embedding_")
        K = np.asarray(K, dtype=np.float64)
        if K.ndim != 2 or K.shape[1] != self.n_samples_fit_:
            raise InputError(f"expected a kernel of shape (m, {self.n_samples_fit_}), got {K.shape}")
        if self.cosine:
            if diag is None:
                raise InputError("projecting new samples with cosine normalisation needs their self-kernels (diag)")
            K = cosine_normalize(K, diag, self._diag)
        if self.center:
            K = K - self._col_mean[None, :] - K.mean(axis=1)[:, None] + self._all_mean
        return K @ self._alphas


@dataclass
class Projection:
    """A 2-D (or k-D) map: ``coords`` ``(n, k)``, ``explained_variance_ratio`` ``(k,)``, and which kernel."""

    coords: np.ndarray
    explained_variance_ratio: np.ndarray
    label: str
    eigenvalues: np.ndarray


def mix_kernels(K_stack, weights=None, *, cosine=True) -> np.ndarray:
    """Σ_ν w_ν K̂^ν with each K^ν cosine-normalised (or divided by its mean diagonal when ``cosine=False``).

    ``weights`` ``(nu_max+1,)`` default: equal weights on ν ≥ 1 (e.g. pass a fitted model's ``weights_``).
    Zero slices (``K_vector[0]``-like) are skipped.
    """
    K_stack = np.asarray(K_stack, dtype=np.float64)
    nk = K_stack.shape[0]
    if weights is None:
        weights = np.array([0.0] + [1.0] * (nk - 1)) if nk > 1 else np.ones(1)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != (nk,) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError(f"weights must be {nk} non-negative numbers, not all zero")
    out = np.zeros(K_stack.shape[1:])
    total = 0.0
    for nu in range(nk):
        if weights[nu] == 0:
            continue
        d = np.diag(K_stack[nu])
        if not np.any(d > 0):
            continue
        Kn = cosine_normalize(K_stack[nu]) if cosine else K_stack[nu] / d.mean()
        out += weights[nu] * Kn
        total += weights[nu]
    if total == 0:
        raise InputError("every selected kernel slice is zero; nothing to project")
    return out / total


def project(K_stack, nu="mixed", *, weights=None, n_components: int = 2, cosine: bool = True) -> Projection:
    """Kernel-PCA map of structures (``K`` ``[nu+1, n, n]``) or atomic environments (``K_atomic``).

    Parameters
    ----------
    K_stack : ndarray of shape (nu_max+1, n, n)
    nu : int or "mixed"
        One body order (0 = composition / element identity), or the mixture of :func:`mix_kernels`.
    weights : array_like, optional
        Mixture weights per ν (default equal on ν ≥ 1).
    n_components : int
    cosine : bool

    Returns
    -------
    Projection
    """
    K_stack = np.asarray(K_stack, dtype=np.float64)
    if K_stack.ndim != 3 or K_stack.shape[1] != K_stack.shape[2]:
        raise InputError(f"expected a square kernel stack (nu+1, n, n), got shape {K_stack.shape}")
    if isinstance(nu, str):
        if nu != "mixed":
            raise InputError(f"nu must be an integer body order or 'mixed', got {nu!r}")
        K = mix_kernels(K_stack, weights, cosine=cosine)
        label = "mixed"
    else:
        nu = int(nu)
        if not 0 <= nu < K_stack.shape[0]:
            raise InputError(f"body order {nu} not available (0..{K_stack.shape[0] - 1})")
        K = K_stack[nu]
        label = f"nu={nu}"
    pca = KernelPCA(n_components=min(n_components, K.shape[0]), cosine=cosine).fit(K)
    return Projection(coords=pca.embedding_, explained_variance_ratio=pca.explained_variance_ratio_, label=label,
                      eigenvalues=pca.eigenvalues_)


def project_all(K_stack, *, weights=None, n_components: int = 2, cosine: bool = True) -> dict:
    """Maps for every non-zero ν and the mixture: ``{"nu=0": Projection, …, "mixed": Projection}``."""
    K_stack = np.asarray(K_stack, dtype=np.float64)
    out = {}
    for nu in range(K_stack.shape[0]):
        if np.any(np.diag(K_stack[nu]) > 0):
            out[f"nu={nu}"] = project(K_stack, nu, n_components=n_components, cosine=cosine)
    out["mixed"] = project(K_stack, "mixed", weights=weights, n_components=n_components, cosine=cosine)
    return out
