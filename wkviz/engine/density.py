"""ν=1 equivariant kernels: the exact basis-free pair sum and the fast radial-basis route.

The ν=1 Wigner kernel of two environments is (MATH.md §3–4)
    H^l_{mm'}(i, i') = Σ_{j∈i, j'∈i', same species} f_j f_j' k_l(r_j, r_j') Y_lm(r̂_j) Y_lm'(r̂_j'),
with the radial kernel
    k_l(r, r') = p(r, r') · 4π e^{−(r−r')²/2S} [e^{−x} i_l(x)],  x = r r'/S,  S = σ(r)² + σ(r')².
For a constant width (unit-norm Gaussians, featomic's convention) S = 2σ² and p = 1; with the radially
growing width σ(r) = σ₀ e^{r/r_s} (unit-integral Gaussians, MATH.md §13) p = (2πS)^{−3/2}.

*Exact route*: the pair sum above, in Numba, with a scaled modified spherical Bessel function.
*Basis route* (default): k_l is a positive-definite kernel on [0, r_c], so it factorises as
k_l(r, r') ≈ Σ_n φ_ln(r) φ_ln(r'), with φ_ln the Nyström eigenfunctions of k_l on a Gauss–Legendre grid,
keeping every eigenvalue above a relative tolerance. Density coefficients
c_{a,nlm}(i) = Σ_{j∈i, a_j=a} f_j φ_ln(r_j) Y_lm(r̂_j) turn H^l into one matrix product per l.
This is the optimal radial basis for this kernel: the fewest functions for a given accuracy.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

from ..hypers import species_kernel
from ..runtime import single_threaded_blas
from .spherical import _sph_norms, sph_harm_into

FOUR_PI = 4.0 * math.pi

_GEMM: dict = {}


def _gemm_pool():
    # worker threads for concurrent single-threaded matrix products (NumPy releases the GIL inside them)
    if "pool" not in _GEMM:
        _GEMM["pool"] = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="wkviz-gemm")
    return _GEMM["pool"]


@njit(cache=True)
def scaled_bessel_into(x, l_max, out):
    """e^{−x} i_l(x) for l = 0..l_max into ``out``, for x ≥ 0.

    Three regimes keep full double precision without overflow: the leading power-series term for tiny x,
    Miller's downward recurrence normalised by the exact i_0 for moderate x (the upward recurrence loses
    digits there), and the upward recurrence from exact i_0, i_1 for large x, where it is stable.
    """
    if x < 1e-6:
        # i_l(x) ≈ x^l/(2l+1)!! (1 + x²/(2(2l+3))); e^{−x} factor to the same order
        t = 1.0
        for l in range(l_max + 1):
            if l > 0:
                t *= x / (2 * l + 1)
            out[l] = t * (1.0 + x * x / (2.0 * (2 * l + 3))) * math.exp(-x)
        return
    e2 = math.exp(-2.0 * x)
    i0 = -math.expm1(-2.0 * x) / (2.0 * x)
    if x > max(30.0, 1.0 * l_max * l_max):
        out[0] = i0
        if l_max >= 1:
            out[1] = ((1.0 + e2) * 0.5 - i0) / x
        for l in range(1, l_max):
            out[l + 1] = out[l - 1] - (2 * l + 1) / x * out[l]
        return
    start = l_max + 20 + int(x)
    ip1 = 0.0
    il = 1e-280
    for l in range(start, 0, -1):
        im1 = ip1 + (2 * l + 1) / x * il
        ip1 = il
        il = im1
        if l - 1 <= l_max:
            out[l - 1] = il
        if abs(il) > 1e250:
            # rescale to avoid overflow on long recurrences; values kept so far scale too
            ip1 *= 1e-250
            il *= 1e-250
            for k in range(l - 1, l_max + 1):
                out[k] *= 1e-250
    scale = i0 / out[0]
    for l in range(l_max + 1):
        out[l] *= scale


@njit(cache=True)
def _scaled_bessel_many(x, l_max):
    out = np.zeros((x.shape[0], l_max + 1))
    for i in range(x.shape[0]):
        scaled_bessel_into(x[i], l_max, out[i])
    return out


def scaled_spherical_in(l_max: int, x) -> np.ndarray:
    """e^{−x} i_l(x) for l = 0..l_max, shape (len(x), l_max+1); overflow-free for any x ≥ 0."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).ravel())
    if np.any(x < 0):
        raise ValueError("scaled_spherical_in needs x >= 0")
    return _scaled_bessel_many(x, int(l_max))


@njit(cache=True)
def _pair_geometry(r1, r2, s1, s2, scaling):
    # returns (prefactor·4π·exp(−(r1−r2)²/2S), x) for the radial kernel
    S = s1 * s1 + s2 * s2
    pref = FOUR_PI * math.exp(-((r1 - r2) ** 2) / (2.0 * S))
    if scaling:
        pref *= (2.0 * math.pi * S) ** -1.5
    return pref, r1 * r2 / S


@njit(parallel=True, cache=True)
def _radial_kernel_many(r1, r2, s1, s2, scaling, l_max):
    # one pass per point: the radial basis evaluates ~10⁶ of these (quadrature and table grids), and doing it
    # with NumPy temporaries took longer than the rest of a 300-molecule kernel's serial work
    out = np.empty((r1.shape[0], l_max + 1))
    for k in prange(r1.shape[0]):
        pref, x = _pair_geometry(r1[k], r2[k], s1[k], s2[k], scaling)
        scaled_bessel_into(x, l_max, out[k])
        for l in range(l_max + 1):
            out[k, l] *= pref
    return out


def radial_kernel(l_max, r1, r2, density_width, density_scaling=None) -> np.ndarray:
    """Exact radial kernel k_l(r1, r2) for l = 0..l_max (broadcast over r1, r2), shape (..., l_max+1)."""
    r1, r2 = np.broadcast_arrays(np.asarray(r1, float), np.asarray(r2, float))
    shape = r1.shape
    r1 = np.ascontiguousarray(r1.ravel())
    r2 = np.ascontiguousarray(r2.ravel())
    if np.any(r1 < 0) or np.any(r2 < 0):
        raise ValueError("radial_kernel needs r1, r2 >= 0")
    s1 = neighbour_widths(r1, density_width, density_scaling)
    s2 = neighbour_widths(r2, density_width, density_scaling)
    out = _radial_kernel_many(r1, r2, s1, s2, density_scaling is not None, int(l_max))
    return out.reshape(shape + (int(l_max) + 1,))


# --------------------------------------------------------------------------------------------------------
# exact (basis-free) route


@njit(cache=True)
def _environment_harmonics(vectors, distances, l_max):
    n = vectors.shape[0]
    out = np.zeros((n, (l_max + 1) ** 2))
    norms = _sph_norms(l_max)
    q = np.zeros((l_max + 1, l_max + 1))
    for k in range(n):
        r = distances[k]
        sph_harm_into(vectors[k, 0] / r, vectors[k, 1] / r, vectors[k, 2] / r, l_max, norms, q, out[k])
    return out


@njit(parallel=True, cache=True)
def _exact_nu1(pair_a, pair_b, off_a, off_b, ylm_a, ylm_b, r_a, r_b, w_a, w_b, z_a, z_b, sig_a, sig_b,
               scaling, l_max, block_off, kappa, out):
    # out[p, comp]: packed H^l blocks (row-major m, m') of centre pair p
    n_pairs = pair_a.shape[0]
    for p in prange(n_pairs):
        bess = np.zeros(l_max + 1)
        i = pair_a[p]
        k = pair_b[p]
        for j in range(off_a[i], off_a[i + 1]):
            for jj in range(off_b[k], off_b[k + 1]):
                kz = kappa[z_a[j], z_b[jj]]
                if kz == 0.0:
                    continue
                pref, x = _pair_geometry(r_a[j], r_b[jj], sig_a[j], sig_b[jj], scaling)
                w = kz * pref * w_a[j] * w_b[jj]
                scaled_bessel_into(x, l_max, bess)
                for l in range(l_max + 1):
                    wl = w * bess[l]
                    base = l * l
                    o = block_off[l]
                    d = 2 * l + 1
                    for m in range(d):
                        ym = wl * ylm_a[j, base + m]
                        for mm in range(d):
                            out[p, o + m * d + mm] += ym * ylm_b[jj, base + mm]


def neighbour_widths(distances, density_width, density_scaling):
    """σ(r) of each neighbour, Å."""
    if density_scaling is None:
        return np.full(len(distances), float(density_width))
    return density_width * np.exp(np.asarray(distances) / density_scaling)


def block_offsets(l_max: int) -> np.ndarray:
    """Start of each l block in the packed ν=1 layout (blocks (2l+1)², row-major m, m')."""
    sizes = [(2 * l + 1) ** 2 for l in range(l_max + 1)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def exact_nu1_pairs(env_a, centers_a, env_b, centers_b, pair_a, pair_b, hypers) -> np.ndarray:
    """Packed ν=1 blocks H^l of the centre pairs (centers_a[pair_a], centers_b[pair_b]) by the exact pair sum.

    Returns
    -------
    ndarray of shape (n_pairs, Σ_l (2l+1)²)
        H^l_{mm'} for l = 0..lambda_max, row-major in (m, m'), blocks one after another.
    """
    L = hypers.lambda_max
    scaling = hypers.density_scaling is not None

    def prep(env, centers):
        sel_off = [0]
        idx = []
        for c in centers:
            s, e = env.offsets[c], env.offsets[c + 1]
            idx.append(np.arange(s, e))
            sel_off.append(sel_off[-1] + e - s)
        idx = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        vec = np.ascontiguousarray(env.vectors[idx])
        dist = np.ascontiguousarray(env.distances[idx])
        return (np.asarray(sel_off, dtype=np.int64), _environment_harmonics(vec, dist, L), dist,
                np.ascontiguousarray(env.weights[idx]), np.ascontiguousarray(env.neighbor_numbers[idx]),
                neighbour_widths(dist, hypers.density_width, hypers.density_scaling))

    oa, ya, ra, wa, za, sa = prep(env_a, centers_a)
    ob, yb, rb, wb, zb, sb = prep(env_b, centers_b)
    boff = block_offsets(L)
    out = np.zeros((len(pair_a), boff[-1]))
    z_top = int(max(za.max(initial=0), zb.max(initial=0))) + 1
    zs = np.arange(z_top)
    kappa = np.ascontiguousarray(species_kernel(zs[:, None], zs[None, :], hypers.species_coupling))
    _exact_nu1(np.asarray(pair_a, np.int64), np.asarray(pair_b, np.int64), oa, ob, ya, yb, ra, rb, wa, wb, za, zb,
               sa, sb, scaling, L, boff, kappa, out)
    return out


# --------------------------------------------------------------------------------------------------------
# radial-basis route


class RadialBasis:
    """Optimal radial basis φ_ln(r) for the exact radial kernel k_l on [0, r_c].

    Parameters
    ----------
    hypers : Hypers
    tolerance : float
        Eigenvalues below ``tolerance`` × the largest one (over all l) are dropped.
    n_quadrature : int
        Gauss–Legendre points used to discretise k_l.
    n_table : int
        Points of the uniform table used to interpolate φ_ln (4-point Lagrange, error ∝ h⁴).

    Notes
    -----
    With the quadrature weights w_g, M_gh = √w_g k_l(r_g, r_h) √w_h = U Λ Uᵀ, and the Nyström extension
    φ_n(r) = Σ_g k_l(r, r_g) √w_g U_gn / √λ_n reproduces k_l exactly at the nodes and, for a smooth kernel,
    everywhere up to the dropped eigenvalues.
    """

    def __init__(self, hypers, tolerance: float = 1e-11, n_quadrature: int = 0, n_table: int = 0):
        self.l_max = hypers.lambda_max
        self.cutoff = hypers.cutoff
        sigma_min = hypers.density_width
        if n_quadrature <= 0:
            n_quadrature = int(min(400, max(80, 12 * hypers.cutoff / sigma_min)))
        if n_table <= 0:
            # 4-point interpolation error ∝ (spacing/σ)⁴: 180 points per σ/Å keep it below the eigenvalue
            # tolerance's own error (QM9 defaults: K[ν] within 1.3e-10 of the exact route), in 3000 points
            n_table = int(min(20000, max(2000, 180 * hypers.cutoff / sigma_min)))
        x, w = np.polynomial.legendre.leggauss(n_quadrature)
        r = 0.5 * hypers.cutoff * (x + 1.0)
        w = 0.5 * hypers.cutoff * w
        sw = np.sqrt(w)
        kernel = radial_kernel(self.l_max, r[:, None], r[None, :], hypers.density_width, hypers.density_scaling)
        grid = np.linspace(0.0, hypers.cutoff, n_table)
        kgrid = radial_kernel(self.l_max, grid[:, None], r[None, :], hypers.density_width, hypers.density_scaling)
        eig = []
        with single_threaded_blas():
            for l in range(self.l_max + 1):
                m = sw[:, None] * kernel[:, :, l] * sw[None, :]
                vals, vecs = np.linalg.eigh(0.5 * (m + m.T))
                eig.append((vals[::-1], vecs[:, ::-1]))
        top = max(v[0] for v, _ in eig)
        tables = []
        self.n_radial = []
        for l, (vals, vecs) in enumerate(eig):
            keep = vals > tolerance * top
            n = int(keep.sum())
            self.n_radial.append(n)
            phi = (kgrid[:, :, l] * sw[None, :]) @ vecs[:, :n] / np.sqrt(vals[:n])[None, :]
            tables.append(phi)
        self.n_max = max(max(self.n_radial), 1)
        # one padded table [l, n, grid] so Numba sees a single array
        self.table = np.zeros((self.l_max + 1, self.n_max, n_table))
        for l, phi in enumerate(tables):
            self.table[l, : phi.shape[1]] = phi.T
        self.n_radial = np.asarray(self.n_radial, dtype=np.int64)
        self.spacing = grid[1] - grid[0]

    def evaluate(self, r) -> np.ndarray:
        """φ_ln(r) for every l, n: shape (len(r), l_max+1, n_max) (padded with zeros past n_radial[l])."""
        r = np.ascontiguousarray(np.asarray(r, dtype=np.float64).ravel())
        return _interp_table(r, self.table, self.spacing)


@njit(cache=True)
def _interp_table(r, table, h):
    n_l, n_n, n_g = table.shape
    out = np.zeros((r.shape[0], n_l, n_n))
    for k in range(r.shape[0]):
        t = r[k] / h
        i = int(t) - 1
        if i < 0:
            i = 0
        if i > n_g - 4:
            i = n_g - 4
        u = t - i
        # 4-point Lagrange weights at nodes i..i+3 (u measured from node i)
        c0 = -(u - 1.0) * (u - 2.0) * (u - 3.0) / 6.0
        c1 = u * (u - 2.0) * (u - 3.0) / 2.0
        c2 = -u * (u - 1.0) * (u - 3.0) / 2.0
        c3 = u * (u - 1.0) * (u - 2.0) / 6.0
        for l in range(n_l):
            for n in range(n_n):
                out[k, l, n] = (c0 * table[l, n, i] + c1 * table[l, n, i + 1] + c2 * table[l, n, i + 2]
                                + c3 * table[l, n, i + 3])
    return out


def radial_basis(hypers) -> RadialBasis:
    """The (cached) optimal radial basis for these hyperparameters.

    Cached on the four hyperparameters the basis depends on (``lambda_max``, ``cutoff``, ``density_width``,
    ``density_scaling``), so requests that differ only in ν_max, schedule or normalisation share it.
    """
    return _radial_basis_cached(hypers.lambda_max, hypers.cutoff, hypers.density_width, hypers.density_scaling)


# DensityExpansion's parameter shadows the function's name
_basis_for = radial_basis


@functools.lru_cache(maxsize=16)
def _radial_basis_cached(lambda_max, cutoff, density_width, density_scaling) -> RadialBasis:
    from ..hypers import Hypers

    return RadialBasis(Hypers(nu_max=1, lambda_max=lambda_max, cutoff=cutoff, cutoff_width=min(0.5, cutoff),
                              density_width=density_width, density_scaling=density_scaling))


@njit(parallel=True, cache=True)
def _density_coefficients(centers, offsets, ylm, phi, weights, channel, n_channels, l_max, n_max, out):
    # out[c, l, channel*n_max + n, m]  (m padded to 2*l_max+1)
    for ci in prange(centers.shape[0]):
        c = centers[ci]
        for j in range(offsets[c], offsets[c + 1]):
            a = channel[j]
            if a < 0:
                continue
            w = weights[j]
            for l in range(l_max + 1):
                base = l * l
                for n in range(n_max):
                    v = w * phi[j, l, n]
                    if v == 0.0:
                        continue
                    f = a * n_max + n
                    for m in range(2 * l + 1):
                        out[ci, l, f, m] += v * ylm[j, base + m]


def species_mixing(channels, coupling) -> np.ndarray | None:
    """U with U Uᵀ = κ(channels, channels) (:func:`wkviz.hypers.species_kernel`), or None when κ = I."""
    channels = np.asarray(channels, dtype=np.int64)
    kappa = species_kernel(channels[:, None], channels[None, :], coupling)
    if np.array_equal(kappa, np.eye(len(channels))):
        return None
    return np.linalg.cholesky(kappa)


class DensityExpansion:
    """Density coefficients of all environments of one structure set on the optimal radial basis.

    Parameters
    ----------
    env : Environments
    hypers : Hypers
    channels : sequence of int
        Neighbour species (atomic numbers) that get a channel; others are ignored (they cannot pair with
        anything in the other set).
    radial_basis : RadialBasis-like, optional
        The radial functions to expand on (``l_max``, ``n_radial``, ``n_max``, ``evaluate``; e.g. a
        :class:`wkviz.engine.features.TruncatedRadialBasis`); by default the optimal basis of ``hypers``
        (:func:`radial_basis`).
    """

    def __init__(self, env, hypers, channels, radial_basis=None):
        self.env = env
        self.hypers = hypers
        self.basis = _basis_for(hypers) if radial_basis is None else radial_basis
        L = hypers.lambda_max
        self.channels = np.asarray(channels, dtype=np.int64)
        # κ = U Uᵀ over the channels: mixing every centre's coefficients with U makes their dot products
        # Σ_{Z,Z'} κ(Z, Z') c_Z·c'_Z' (None when κ is the identity: neighbours of different elements never overlap)
        self.mixing = species_mixing(self.channels, hypers.species_coupling)
        lookup = {int(z): k for k, z in enumerate(self.channels)}
        self.channel = np.array([lookup.get(int(z), -1) for z in env.neighbor_numbers], dtype=np.int64)
        self.ylm = _environment_harmonics(env.vectors, env.distances, L) if len(env.distances) else np.zeros(
            (0, (L + 1) ** 2))
        # a growing width's r-dependent prefactor and width live inside φ already: one evaluation for both laws
        self.phi = self.basis.evaluate(env.distances)

    def channel_masks(self) -> np.ndarray:
        """Bit mask per centre of the channels its neighbours occupy (bit k: ``channels[k]``), shape (n_centres,).

        Only defined for up to 62 channels; with more, every centre gets every bit.
        """
        n_ch = len(self.channels)
        if n_ch > 62 or self.mixing is not None:  # mixed channels: every channel can be non-zero
            return np.full(self.env.n_centers, -1, dtype=np.int64)
        centre = np.repeat(np.arange(self.env.n_centers), np.diff(self.env.offsets))
        keep = self.channel >= 0
        masks = np.zeros(self.env.n_centers, dtype=np.int64)
        np.bitwise_or.at(masks, centre[keep], np.left_shift(1, self.channel[keep]))
        return masks

    def features(self, mask) -> np.ndarray | None:
        """Feature indices f = channel·n_max + n of the channels in bit mask ``mask``; None for all channels."""
        n_ch = len(self.channels)
        chans = [k for k in range(n_ch) if (int(mask) >> k) & 1] if n_ch <= 62 else list(range(n_ch))
        if len(chans) == n_ch:
            return None
        n_max = self.basis.n_max
        return (np.asarray(chans, dtype=np.int64)[:, None] * n_max + np.arange(n_max)[None, :]).ravel()

    def coefficients(self, centers) -> np.ndarray:
        """c[i, l, f, m] for the given centres; f = channel·n_max + n, m padded to 2·lambda_max+1."""
        L = self.hypers.lambda_max
        n_max = self.basis.n_max
        out = np.zeros((len(centers), L + 1, len(self.channels) * n_max, 2 * L + 1))
        if len(self.env.distances):
            _density_coefficients(np.asarray(centers, np.int64), self.env.offsets, self.ylm, self.phi,
                                  self.env.weights, self.channel, len(self.channels), L, n_max, out)
        if self.mixing is not None:
            n, n_ch = len(centers), len(self.channels)
            mixed = np.einsum("ilcnm,cq->ilqnm", out.reshape(n, L + 1, n_ch, n_max, 2 * L + 1), self.mixing,
                              optimize=True)
            out = np.ascontiguousarray(mixed.reshape(out.shape))
        return out


def basis_nu1_blocks(coef_a, coef_b, l_max, out=None, features=None, upper=False, threads=None) -> list:
    """H^l[i, m, i', m'] = Σ_f c_a[i, l, f, m] c_b[i', l, f, m'] for every l, by one matrix product per l.

    Parameters
    ----------
    coef_a, coef_b : ndarray of shape (n, L+1, n_features, 2L+1)
        ``DensityExpansion.coefficients`` of the two sets of centres.
    l_max : int
    out : ndarray, optional
        Flat float64 buffer of at least Σ_l n_a n_b (2l+1)² elements. The blocks are then written into it one
        after another, each as the row-major matrix H^l[(i, m), (i', m')] — the layout
        ``wigner.matrix_gather`` reads — and the returned arrays are views of it.
    features : array of int, optional
        Sum over these features f only (the others must be zero in coef_a or coef_b, e.g. the channels of
        neighbour species that the centres of one side do not have).
    upper : bool
        coef_b holds the same centres as coef_a and only entries with i' ≥ i will be read: the rows are
        computed in bands, each from its own diagonal on, which skips most of the lower triangle. The entries
        left out are not set.
    threads : int, optional
        Split the products into row bands and run them on this many threads, each with single-threaded BLAS.
        Independent bands taken from a queue keep every core busy even when other jobs share the machine,
        where OpenBLAS's own threads would wait for each other. None: one product per l, BLAS's threading.

    Returns
    -------
    list of ndarray of shape (n_a, 2l+1, n_b, 2l+1)
    """
    na, nb = coef_a.shape[0], coef_b.shape[0]
    if upper and na != nb:
        raise ValueError("upper=True needs the same centres on both sides")
    if features is not None:
        features = np.asarray(features, dtype=np.int64)
    n_bands = 1
    if threads is not None and threads > 1:
        n_bands = 4 * threads
    if upper:
        n_bands = max(n_bands, 4)  # 4 bands of the upper triangle compute 5/8 of the square instead of all
    n_bands = max(1, min(n_bands, na // 16))
    edges = np.linspace(0, na, n_bands + 1).astype(int)

    blocks, tasks = [], []
    offset = 0
    for l in range(l_max + 1):
        d = 2 * l + 1
        ca, cb = coef_a[:, l, :, :d], coef_b[:, l, :, :d]
        if features is not None:
            ca, cb = ca[:, features], cb[:, features]
        a = np.ascontiguousarray(ca.transpose(0, 2, 1)).reshape(na * d, -1)
        b = a if upper else np.ascontiguousarray(cb.transpose(0, 2, 1)).reshape(nb * d, -1)
        if out is None:
            dest = np.empty((na * d, nb * d))
        else:
            dest = out[offset:offset + na * d * nb * d].reshape(na * d, nb * d)
            offset += na * d * nb * d
        for r0, r1 in zip(edges[:-1], edges[1:]):
            c0 = r0 * d if upper else 0
            # dest[...] is a strided view: BLAS writes it in place through its leading dimension
            tasks.append((a[r0 * d:r1 * d], b[c0:], dest[r0 * d:r1 * d, c0:]))
        blocks.append(dest.reshape(na, d, nb, d))

    def product(task):
        x, y, z = task
        np.matmul(x, y.T, out=z)

    if threads is not None and threads > 1:
        # largest first, so the queue ends with small tasks and the threads finish together
        tasks.sort(key=lambda t: -t[2].size * t[0].shape[1])
        with single_threaded_blas():
            list(_gemm_pool().map(product, tasks))
    else:
        for task in tasks:
            product(task)
    return blocks
