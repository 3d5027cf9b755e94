"""The GP evidence of the projected-process model from precomputed M × M products, with its exact gradient.

With the mixed kernels K_NM(c) = Σ_j c_j K̃ʲ_NM and K_MM(c) = Σ_j c_j K̃ʲ_MM (normalised slices, as in
:mod:`wkviz.models.sparse`) and the regulariser λ, the projected-process (subset-of-regressors) covariance of the
training targets is σ²(Q + λI), Q = K_NM K_MM⁻¹ K_MN. With B = λ K_MM + K_MN K_NM (Woodbury and the determinant
lemma)

    rᵀ(Q + λI)⁻¹r = (rᵀr − vᵀB⁻¹v) / λ,      v = K_MN r,
    log|Q + λI| = (N − M) log λ + log|B| − log|K_MM|,

and K_MN K_NM = Σ_{j,k} c_j c_k P_jk with P_jk = K̃ʲ_MNK̃ᵏ_NM, v = Σ_j c_j b_j with b_j = K̃ʲ_MN r. Everything
that depends on N — the products P_jk, b_j, rᵀr — is accumulated once (:class:`SparseGram`, from row blocks of
K_NM, so N × M × (ν_max+1) never has to be in memory); an evaluation then costs two M × M Cholesky factorisations
(and two inverses for the gradient), independent of N.

*Conditioning.* Forming K_MN K_NM squares the condition number of K_NM. The products are therefore taken in a
fixed whitened basis: with the reference K₀ = mean_j K̃ʲ_MM + ε₀ I = L₀L₀ᵀ (ε₀ relative), every block is stored
as Ŷ = K̃ʲ_NM L₀⁻ᵀ (so P̂ = ŶᵀŶ is a product of well-conditioned factors), K̂ʲ = L₀⁻¹K̃ʲ_MM L₀⁻ᵀ, b̂ = Ŷᵀr. The
determinants and quadratic forms are invariant under this congruence. K_MM(c) gets the jitter ε·Σc·K₀ (ε I in
the whitened basis): a standard, tiny inflation of the active-point prior that keeps K_MM(c) positive definite
when active points repeat (symmetric hydrogens) or one body order dominates; the evidence and its gradient are
those of that (jittered) model, exactly.

The baseline (per-element energies) is fitted first and the evidence is that of its residuals r, as in the
exact model (:class:`wkviz.models.mixed._EvidenceObjective`).
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from ..errors import InputError
from ..runtime import ThreadChoice, blas_limit, check_cancel
from .ridge import fold_residuals, ridge_lstsq

__all__ = ["SparseGram", "SparseEvidence", "gram_bytes", "cv_errors"]

# rᵀ(Q + λI)⁻¹r·λ = rᵀr − vᵀB⁻¹v below this fraction of rᵀr is a difference lost to rounding
_MIN_RESIDUAL = 1e-12
# ... and above this multiple of its estimated rounding error
_Q_SAFETY = 1e3
_EPS = float(np.finfo(float).eps)


def gram_bytes(n_active: int, n_kernels: int) -> int:
    """Memory of the products of :class:`SparseGram` (P̂ for every ν pair, K̂ʲ, L₀), in bytes."""
    m = int(n_active)
    j = int(n_kernels)
    return 8 * m * m * (j * (j + 1) // 2 + j + 1)


def _pairs(n):
    return [(a, b) for a in range(n) for b in range(a, n)]


class SparseGram:
    """The N-dependent part of the projected-process evidence, accumulated from row blocks of K_NM.

    Parameters
    ----------
    K_MM : ndarray of shape (n_kernels, M, M)
        Kernels among the active points (all slices; only ``nus`` are used).
    nus : array of int
        Kernel slices used.
    scales : ndarray of shape (n_kernels,)
        Normalisation s_ν of every slice (K̃ʲ = K^ν / s_ν).
    r : ndarray of shape (N,)
        Baseline residuals of the training targets.
    ref_jitter : float
        ε₀ of the whitening reference K₀, relative to its mean diagonal.
    threads : int, optional
        BLAS threads for the products (default: every core).

    Use :meth:`add` for every row block (in any order, every row once), then :meth:`finish`.
    """

    def __init__(self, K_MM, nus, scales, r, *, y=None, features=None, order=None, ref_jitter=1e-8, threads=None):
        m = K_MM.shape[1]
        # the active points in this order (a random order makes every leading block a random subset: the
        # coarse search of :class:`SparseEvidence` uses one)
        self.order = np.arange(m) if order is None else np.asarray(order, dtype=np.int64)
        K_MM = K_MM[:, self.order][:, :, self.order]
        self.nus = np.asarray(nus, dtype=np.int64)
        self.scales = np.asarray(scales, dtype=np.float64)
        self.r = np.asarray(r, dtype=np.float64)
        self.n = len(self.r)
        self.m = m = K_MM.shape[1]
        self.threads = int(threads or os.cpu_count() or 1)
        J = len(self.nus)
        Kt = np.stack([K_MM[nu] / self.scales[nu] for nu in self.nus]) if J else np.zeros((0, m, m))
        K0 = Kt.mean(axis=0) if J else np.eye(m)
        K0 = 0.5 * (K0 + K0.T)
        ref = float(np.mean(np.diag(K0))) or 1.0
        K0.flat[:: m + 1] += ref_jitter * ref
        with blas_limit(self.threads):
            try:
                self.L0 = scipy.linalg.cholesky(K0, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                raise InputError("the active points' kernel is not positive semi-definite even with a jitter; "
                                 "check the kernels (K_MM must be the kernel among the active points)") from None
            # K̂ʲ = L₀⁻¹ K̃ʲ L₀⁻ᵀ
            self.Khat = np.empty((J, m, m))  # C order: every evaluation reads it as one (J, M²) matrix
            for j in range(J):
                T = scipy.linalg.solve_triangular(self.L0, Kt[j], lower=True, check_finite=False)
                T = scipy.linalg.solve_triangular(self.L0, T.T, lower=True, check_finite=False)
                self.Khat[j] = 0.5 * (T + T.T)
        self.pairs = _pairs(J)
        self.P = np.zeros((len(self.pairs), m, m))
        self.b = np.zeros((J, m))
        # Ŷᵀy and ŶᵀF (baseline features): what the CV folds' products need besides P̂
        self.y = None if y is None else np.asarray(y, dtype=np.float64)
        self.features = None if features is None else np.asarray(features, dtype=np.float64)
        self.by = None if y is None else np.zeros((J, m))
        self.bF = None if features is None else np.zeros((J, m, self.features.shape[1]))
        self.rr = float(self.r @ self.r)
        self.rows_seen = 0
        self.seconds = 0.0
        self.finished = False

    def whiten(self, K_block):
        """Ŷʲ = K̃ʲ_block L₀⁻ᵀ for every used slice: ``(J, rows, M)`` from ``(n_kernels, rows, M)`` (columns
        already in :attr:`order`)."""
        J = len(self.nus)
        out = np.empty((J, K_block.shape[1], self.m))
        for j, nu in enumerate(self.nus):
            # (L₀⁻¹ Kᵀ)ᵀ = K L₀⁻ᵀ
            out[j] = scipy.linalg.solve_triangular(self.L0, K_block[nu].T / self.scales[nu], lower=True,
                                                   check_finite=False).T
        return out

    def add(self, rows, K_block):
        """Accumulate the rows ``rows`` (indices into the training set) of K_NM, ``(n_kernels, len(rows), M)``."""
        t = time.perf_counter()
        rows = np.asarray(rows)
        if K_block.ndim != 3 or K_block.shape[2] != self.m or K_block.shape[1] != len(rows):
            raise InputError(f"a K_NM block has shape {K_block.shape}; expected (n_kernels, {len(rows)}, {self.m})")
        with blas_limit(self.threads):
            Y = self.whiten(np.asarray(K_block, dtype=np.float64)[:, :, self.order])
            for p, (a, b) in enumerate(self.pairs):
                if a == b:
                    # Ŷᵀ Ŷ through syrk: half the flops of a general product
                    self.P[p] += scipy.linalg.blas.dsyrk(1.0, Y[a], trans=1, lower=1)
                else:
                    self.P[p] += Y[a].T @ Y[b]
            self.b += np.matmul(self.r[rows], Y)
            if self.by is not None:
                self.by += np.matmul(self.y[rows], Y)
            if self.bF is not None:
                self.bF += np.swapaxes(Y, 1, 2) @ self.features[rows]
        self.rows_seen += len(rows)
        self.seconds += time.perf_counter() - t

    def finish(self):
        """Make every product symmetric: P̂_jj (syrk filled one triangle) and P̂_jk + P̂_jkᵀ for j < k, so that
        Ĝ(c) = Σ_pairs c_j c_k S_jk is one weighted sum of symmetric matrices (no transposes per evaluation);
        checks that every row was added."""
        if self.rows_seen != self.n:
            raise InputError(f"{self.rows_seen} rows of K_NM were accumulated for {self.n} training rows")
        for p, (a, b) in enumerate(self.pairs):
            if a == b:
                L = np.tril(self.P[p])
                self.P[p] = L + np.tril(L, -1).T
            else:
                self.P[p] += self.P[p].T.copy()
        self.finished = True
        return self

    def pair_weights(self, c):
        """w_p = c_j c_k of every pair and ∂w_p/∂c_i, shapes (n_pairs,) and (n_pairs, J)."""
        w = np.array([c[a] * c[b] for a, b in self.pairs])
        dw = np.zeros((len(self.pairs), len(c)))
        for p, (a, b) in enumerate(self.pairs):
            dw[p, a] += c[b]
            dw[p, b] += c[a]
        return w, dw

    @classmethod
    def from_array(cls, K_NM, K_MM, nus, scales, r, *, block=2048, cancel=None, **kwargs):
        """Products of an in-memory K_NM, accumulated in row blocks of ``block`` rows (``kwargs`` as the
        constructor)."""
        g = cls(K_MM, nus, scales, r, **kwargs)
        for s in range(0, K_NM.shape[1], int(block)):
            check_cancel(cancel)
            e = min(s + int(block), K_NM.shape[1])
            g.add(np.arange(s, e), K_NM[:, s:e])
        return g.finish()

    def unpermute(self, w):
        """A vector over the active points from :attr:`order` back to the caller's order."""
        out = np.empty_like(w)
        out[self.order] = w
        return out


class SparseEvidence:
    """Negative log evidence per training row of the projected-process GP (signal scale at its maximum), as a
    function of θ: the same objective, normalisation and calling convention as the exact model's
    ``_EvidenceObjective`` (``objective(theta, need_grad) -> value[, gradient]``; ``best_theta``,
    ``best_loss``, ``n_evals``), so the exact model's search runs on it unchanged.

        f(θ) = ½ log q + log|Q + λI| / 2N,    q = rᵀ(Q + λI)⁻¹r.

    A factorisation that fails scores +∞ (no extra jitter: it would not be the evidence of the θ asked for).
    """

    def __init__(self, gram: SparseGram, lam, param, *, jitter=1e-8, sub=None, cancel=None, threads=1,
                 min_rcond=1e-16):
        self.g, self.lam, self.param, self.jitter, self.cancel = gram, float(lam), param, float(jitter), cancel
        self.min_rcond = float(min_rcond)
        # a leading sub-block of the active points (a coarse problem: the whitening is a Cholesky factor, so the
        # leading block of every whitened product is the whitened product of the leading active points)
        self.sub = None if sub is None or sub >= gram.m else int(sub)
        self.threads = threads
        if not gram.finished:
            raise InputError("the products are not finished: call SparseGram.finish() after the last block")
        if self.sub is None:
            self._K, self._P, self._b = gram.Khat, gram.P, gram.b
        else:  # contiguous copies: every evaluation reads them whole
            k = self.sub
            self._K = np.ascontiguousarray(gram.Khat[:, :k, :k])
            self._P = np.ascontiguousarray(gram.P[:, :k, :k])
            self._b = np.ascontiguousarray(gram.b[:, :k])
        # flat views and diagonals for the gradient: every trace against P̂ and K̂ is then one BLAS product that
        # reads each M × M matrix once (the products are memory-bound; per-matrix vdots read them three times)
        m = self._K.shape[1]
        self._Kflat = np.ascontiguousarray(self._K).reshape(len(self._K), m * m)
        self._Pflat = np.ascontiguousarray(self._P).reshape(len(self._P), m * m)
        self._Kdiag = np.ascontiguousarray(np.einsum("jii->ji", self._K))
        self._Pdiag = np.ascontiguousarray(np.einsum("pii->pi", self._P))
        self.best_loss = np.inf
        self.best_theta = None
        self.n_evals = 0

    def state(self, c):
        """Factorisations at weights c: dict with the Cholesky factors of K̂_MM(c) + εΣc I and B̂, u = B̂⁻¹v, q
        and log|Q + λI|; None when a factorisation fails."""
        Khat, P, b = self._K, self._P, self._b
        m = Khat.shape[1]
        Kmm = np.tensordot(c, Khat, axes=1)
        Kmm.flat[:: m + 1] += self.jitter * float(np.sum(c))
        w, _ = self.g.pair_weights(c)
        G = np.tensordot(w, P, axes=1)
        B = self.lam * Kmm + G
        anorm = float(np.abs(B).sum(axis=0).max())
        Lk, info1 = lapack.dpotrf(Kmm, lower=1, clean=1, overwrite_a=0)
        Lb, info2 = lapack.dpotrf(B, lower=1, clean=1, overwrite_a=1)
        if info1 or info2 or not (np.all(np.diag(Lk) > 0) and np.all(np.diag(Lb) > 0)):
            return None
        # B is formed from products, so its condition number is about the square of the exact model's: where it
        # is beyond what double precision resolves, the evidence computed from it is rounding noise (typically a
        # spuriously tiny rᵀ(Q + λI)⁻¹r, i.e. a spuriously high evidence), so the point scores as a failure
        rcond_b, info3 = lapack.dpocon(Lb, anorm, uplo="L")
        if info3 or not rcond_b > self.min_rcond:
            return None
        v = b.T @ c
        u = scipy.linalg.cho_solve((Lb, True), v, check_finite=False)
        q = (self.g.rr - float(v @ u)) / self.lam
        # qλ = rᵀr − vᵀB⁻¹v is a difference: a backward error δB ~ ε‖B‖ of B (its products, its factor) moves
        # it by about uᵀδBu ≤ ε‖B‖‖u‖²; a point where that is not small against qλ is not trusted
        err = _EPS * math.sqrt(m) * anorm * float(u @ u)
        if not q * self.lam > max(_MIN_RESIDUAL * self.g.rr, _Q_SAFETY * err):
            return None
        n = self.g.n
        logdet = (n - m) * math.log(self.lam) + 2.0 * float(np.log(np.diag(Lb)).sum() - np.log(np.diag(Lk)).sum())
        return {"Lk": Lk, "Lb": Lb, "u": u, "v": v, "q": q, "logdet": logdet, "m": m}

    def _threads(self):
        """BLAS threads of one evaluation: a fixed count, or a :class:`wkviz.runtime.ThreadChoice`."""
        if isinstance(self.threads, ThreadChoice):
            return self.threads.run()
        return blas_limit(self.threads)

    def __call__(self, theta, need_grad: bool = True):
        check_cancel(self.cancel)
        self.n_evals += 1
        theta = np.asarray(theta, dtype=np.float64)
        c = self.param.weights(theta)
        fail = (1e30, np.zeros_like(theta)) if need_grad else 1e30
        with self._threads():
            with np.errstate(all="ignore"):
                st = self.state(c)
                if st is None or not st["q"] > 0:
                    return fail
                n = self.g.n
                value = 0.5 * math.log(st["q"]) + st["logdet"] / (2.0 * n)
                if not np.isfinite(value):
                    return fail
                if value < self.best_loss:
                    self.best_loss, self.best_theta = value, theta.copy()
                if not need_grad:
                    return value
                grad_c = self._grad(c, st)
        grad_theta = self.param.jacobian(theta).T @ grad_c
        if not np.all(np.isfinite(grad_theta)):
            grad_theta = np.zeros_like(theta)
        return value, grad_theta

    def _grad(self, c, st):
        lam, eps, n, q, u = self.lam, self.jitter, self.g.n, st["q"], st["u"]
        b = self._b
        m = len(u)
        # tr(A⁻¹X) for symmetric X from one triangle of A⁻¹ alone: 2 Σ_{i≥j} − the diagonal; the triangles come
        # as flat views (no copies: at M = 3,000 each copy of an M × M matrix costs as much as a factorisation)
        Bv, Bd = _triangle_of_inverse(st["Lb"])
        Kv, Kd = _triangle_of_inverse(st["Lk"])
        # one matrix–vector product per pass over the pair products S_p and the slices K̂ʲ
        tr_BS = 2.0 * (self._Pflat @ Bv) - self._Pdiag @ Bd
        uSu = (self._Pflat.reshape(-1, m) @ u).reshape(len(self._P), m) @ u
        tr_BK = 2.0 * (self._Kflat @ Bv) - self._Kdiag @ Bd
        tr_KK = 2.0 * (self._Kflat @ Kv) - self._Kdiag @ Kd
        uKu = (self._Kflat.reshape(-1, m) @ u).reshape(len(self._K), m) @ u
        _, dw = self.g.pair_weights(c)
        tr_B, tr_K, uuu = float(Bd.sum()), float(Kd.sum()), float(u @ u)
        # dB/dc_j = λ(K̂ʲ + εI) + Σ_p ∂w_p/∂c_j S_p
        tr_dB = lam * (tr_BK + eps * tr_B) + dw.T @ tr_BS
        u_dB_u = lam * (uKu + eps * uuu) + dw.T @ uSu
        tr_dK = tr_KK + eps * tr_K
        dq = -(2.0 * (b @ u) - u_dB_u) / lam
        return 0.5 * dq / q + (tr_dB - tr_dK) / (2.0 * n)


def _triangle_of_inverse(L):
    """One triangle of A⁻¹ as a flat C-order view of m² numbers (zeros in the other triangle), whose element
    (i, j) of the view is (A⁻¹)_ji, and the diagonal of A⁻¹, from the lower Cholesky factor L of A.

    ``L`` must have zeros above its diagonal (``dpotrf(..., clean=1)``): dpotri leaves that triangle as it
    finds it. For a symmetric X, Σ_{view} view·X = Σ_{i≥j} (A⁻¹)_ij X_ij.
    """
    inv, info = lapack.dpotri(L, lower=1, overwrite_c=0)
    if info:
        raise np.linalg.LinAlgError("inverse from the Cholesky factor failed")
    view = inv.T if inv.flags.f_contiguous else np.tril(inv).T.copy()
    return view.reshape(-1), np.diagonal(inv).copy()


def cv_errors(K_NM, gram, full, c, folds, features, y):
    """k-fold CV errors of the projected-process model at weights c, from the products minus each fold's
    validation rows (each fold refits the baseline on its training rows, as the exact model's CV)."""
    lam = full.lam
    Kmm = np.tensordot(c, gram.Khat, axes=1)
    Kmm.flat[:: gram.m + 1] += full.jitter * float(np.sum(c))
    sum_abs = sum_sq = 0.0
    n_rows = 0
    w, _ = gram.pair_weights(c)
    G = np.tensordot(w, gram.P, axes=1)
    for t, v, _r_t, b_v, y_v in fold_residuals(folds, features, y):
        Yv = gram.whiten(K_NM[:, v][:, :, gram.order])
        # the training rows' K_MN K_NM: all rows' minus the fold's, Z_v = Σ_j c_j Ŷʲ_v
        Zv = np.tensordot(c, Yv, axes=1)
        Gt = G - Zv.T @ Zv
        # b_t = Ŷ_tᵀ r_t with r_t = y − Fβ_t on the fold's training rows (β_t as in fold_residuals)
        bt = gram.by - np.matmul(y[v], Yv)
        if features is not None:
            beta = ridge_lstsq(features[t], y[t])
            bt = bt - (gram.bF - np.swapaxes(Yv, 1, 2) @ features[v]) @ beta
        vt = bt.T @ c
        B = lam * Kmm + Gt
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
                u = scipy.linalg.solve(B, vt, assume_a="pos", check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return float("nan"), float("nan")
        pred = Zv @ u + b_v
        e = pred - y_v
        sum_abs += float(np.abs(e).sum())
        sum_sq += float(e @ e)
        n_rows += len(v)
    return sum_abs / n_rows, math.sqrt(sum_sq / n_rows)
