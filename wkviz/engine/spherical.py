"""Real spherical harmonics, real Clebsch–Gordan coefficients and real Wigner D matrices.

Conventions (MATH.md §2): real Y_lm built from Condon–Shortley complex harmonics,
Y_1 = √(3/4π)·(y, z, x)/r, index ``l*l + l + m`` in packed arrays. Real Wigner matrices satisfy
Y_l(Q r̂) = D^l(Q) Y_l(r̂) for any Q ∈ O(3), so D^l(−1) = (−1)^l.

Real Clebsch–Gordan coefficients C^{l1 l2 λ}[m1, m2, μ] couple two real harmonics into one:
D^{l1} ⊗ D^{l2} = Σ_λ C D^λ Cᵀ. They are derived from the complex coefficients of the ``wigners``
package (exact, cached) by the complex→real change of basis.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from ..errors import InputError


@njit(cache=True)
def _sph_norms(l_max):
    # N_lm = sqrt((2l+1)/4π (l-m)!/(l+m)!), with the √2 of real harmonics folded in for m > 0
    out = np.zeros((l_max + 1, l_max + 1))
    for l in range(l_max + 1):
        for m in range(l + 1):
            ratio = 1.0
            for k in range(l - m + 1, l + m + 1):
                ratio /= k
            n = math.sqrt((2 * l + 1) / (4.0 * math.pi) * ratio)
            out[l, m] = n if m == 0 else n * math.sqrt(2.0)
    return out


@njit(cache=True)
def sph_harm_into(x, y, z, l_max, norms, q, out):
    """Real spherical harmonics of the unit vector (x, y, z) into ``out[(l_max+1)**2]``.

    ``q`` is scratch of shape (l_max+1, l_max+1) and ``norms`` comes from ``_sph_norms``. Uses
    P_l^m(z)/sin^m θ recursions and Re/Im (x+iy)^m, so no trigonometric calls and no pole problem.
    """
    # Q_l^m = P_l^m / sin^m(θ) without the Condon–Shortley phase (it cancels against the (-1)^m of §2)
    for m in range(l_max + 1):
        if m == 0:
            q[0, 0] = 1.0
        else:
            q[m, m] = q[m - 1, m - 1] * (2 * m - 1)
        if m + 1 <= l_max:
            q[m + 1, m] = (2 * m + 1) * z * q[m, m]
        for l in range(m + 2, l_max + 1):
            q[l, m] = ((2 * l - 1) * z * q[l - 1, m] - (l + m - 1) * q[l - 2, m]) / (l - m)
    c = 1.0
    s = 0.0
    for m in range(l_max + 1):
        for l in range(m, l_max + 1):
            base = l * l + l
            v = norms[l, m] * q[l, m]
            if m == 0:
                out[base] = v
            else:
                out[base + m] = v * c
                out[base - m] = v * s
        c, s = c * x - s * y, s * x + c * y


@njit(cache=True)
def _sph_harm_many(xyz, l_max):
    n = xyz.shape[0]
    out = np.zeros((n, (l_max + 1) ** 2))
    norms = _sph_norms(l_max)
    q = np.zeros((l_max + 1, l_max + 1))
    for i in range(n):
        r = math.sqrt(xyz[i, 0] ** 2 + xyz[i, 1] ** 2 + xyz[i, 2] ** 2)
        if r == 0.0:
            # direction undefined: only the isotropic part survives (never used for neighbours, which have r > 0)
            out[i, 0] = 1.0 / math.sqrt(4.0 * math.pi)
            continue
        sph_harm_into(xyz[i, 0] / r, xyz[i, 1] / r, xyz[i, 2] / r, l_max, norms, q, out[i])
    return out


def real_spherical_harmonics(l_max: int, vectors) -> np.ndarray:
    """Real spherical harmonics Y_lm(r̂) of direction vectors.

    Parameters
    ----------
    l_max : int
        Highest angular order.
    vectors : array_like of shape (n, 3)
        Vectors (need not be normalised).

    Returns
    -------
    ndarray of shape (n, (l_max+1)**2)
        Column ``l*l + l + m`` holds Y_lm, orthonormal on the sphere.
    """
    xyz = np.ascontiguousarray(np.asarray(vectors, dtype=np.float64).reshape(-1, 3))
    return _sph_harm_many(xyz, int(l_max))


def _complex_to_real(l: int) -> np.ndarray:
    """U with Y_real[m] = Σ_m' U[m, m'] Y_complex[m'] (MATH.md §2), indices m + l."""
    u = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s2 = 1.0 / math.sqrt(2.0)
    u[l, l] = 1.0
    for m in range(1, l + 1):
        u[l + m, l + m] = (-1) ** m * s2
        u[l + m, l - m] = s2
        u[l - m, l + m] = -1j * (-1) ** m * s2
        u[l - m, l - m] = 1j * s2
    return u


@functools.lru_cache(maxsize=None)
def _real_cg_cached(l1: int, l2: int, lam: int) -> np.ndarray:
    import wigners

    cg = wigners.clebsch_gordan_array(l1, l2, lam)
    u1, u2, u3 = _complex_to_real(l1), _complex_to_real(l2), _complex_to_real(lam)
    c = np.einsum("am,bn,mnk,ck->abc", u1.conj(), u2.conj(), cg, u3, optimize=True)
    # odd l1+l2+λ blocks come out purely imaginary; the global phase is free (it cancels in C·C)
    c = c.real if (l1 + l2 + lam) % 2 == 0 else c.imag
    c[np.abs(c) < 1e-14] = 0.0
    return c


def real_cg(l1: int, l2: int, lam: int) -> np.ndarray:
    """Real Clebsch–Gordan coefficients C[m1, m2, μ] of shape (2l1+1, 2l2+1, 2λ+1).

    Satisfy D^{l1}(R)_{m1 m1'} D^{l2}(R)_{m2 m2'} = Σ_λ Σ_{μμ'} C[m1,m2,μ] C[m1',m2',μ'] D^λ_{μμ'}(R) for proper
    rotations R; for fixed (l1, l2) the coefficients stacked over λ form an orthogonal matrix. Zero unless
    |l1 − l2| ≤ λ ≤ l1 + l2. Returns a copy so callers cannot corrupt the cache.
    """
    if lam < abs(l1 - l2) or lam > l1 + l2:
        return np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * lam + 1))
    return _real_cg_cached(int(l1), int(l2), int(lam)).copy()


def wigner_d_real(l: int, rotation) -> np.ndarray:
    """Real Wigner matrix D^l(Q) of shape (2l+1, 2l+1) for Q ∈ O(3), with Y_l(Q r̂) = D^l(Q) Y_l(r̂).

    Built by least squares on a fixed set of directions, which is exact because Y_l spans an irreducible
    representation; D^l(−1) = (−1)^l comes out automatically for improper Q.
    """
    q = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    rng = np.random.default_rng(12345)
    pts = rng.normal(size=(4 * (2 * l + 1) + 8, 3))
    sl = slice(l * l, (l + 1) ** 2)
    y = real_spherical_harmonics(l, pts)[:, sl]
    yq = real_spherical_harmonics(l, pts @ q.T)[:, sl]
    d, *_ = np.linalg.lstsq(y, yq, rcond=None)
    return d.T


def cartesian_to_lambda1() -> np.ndarray:
    """Permutation P with (Y_{1,-1}, Y_{1,0}, Y_{1,1}) ∝ P (x, y, z): the m-order of λ=1 is (y, z, x)."""
    return np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def rotation_matrix(alpha_deg: float, beta_deg: float, gamma_deg: float) -> np.ndarray:
    """Proper rotation R = R_z(α) R_y(β) R_z(γ) (ZYZ Euler angles in degrees), det R = +1.

    Parameters
    ----------
    alpha_deg, beta_deg, gamma_deg : float
        Rotation angles about z, then y, then z again, in degrees (applied to a column vector right to left).

    Returns
    -------
    ndarray of shape (3, 3)
        Acting on Cartesian column vectors: ``R @ v``, or ``positions @ R.T`` for rows.
    """

    def rz(t):
        c, s = np.cos(t), np.sin(t)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def ry(t):
        c, s = np.cos(t), np.sin(t)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    a, b, g = np.radians([alpha_deg, beta_deg, gamma_deg])
    return rz(a) @ ry(b) @ rz(g)


def random_rotation(rng, improper: bool = False) -> np.ndarray:
    """Haar-random rotation matrix (det +1), or an improper one (det −1) if ``improper``."""
    a = rng.normal(size=(3, 3))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


# λ=2 algebra of symmetric 3×3 tensors (the targets of wkviz.models.TensorRegressor), in the real-harmonic
# m-order of this module
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
