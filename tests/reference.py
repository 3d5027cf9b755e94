"""Slow, independent NumPy/SciPy references for the Wigner-kernel physics tests.

Nothing here imports wkviz: every quantity is rebuilt from the definitions in ``MATH.md`` so that a
disagreement with the engine points at the engine (or at the specification), never at shared code.

Conventions (MATH.md §1–§6, §13)
--------------------------------
* Environment of centre i: neighbours j ≠ i with r_ij < r_c (periodic images included), each with the
  shifted-cosine weight f_c(r_ij). The centre is not in its own density.
* Two neighbours a (of i) and b (of i'), of the same species, overlap as ``A exp(-|a - b|² / 2s)``:
  constant width σ (unit-norm Gaussians): A = f f', s = 2σ²;
  radially growing width σ(r) = σ₀ exp(r/r_s) (unit-integral Gaussians): A = f f' (2πS)^{-3/2}, s = S = σ_a² + σ_b².
* h(R) = Σ_pairs A exp(-|a - R b|² / 2s) for R ∈ O(3); the Haar measure on SO(3) has volume 8π².
* h_L(R) = Σ_{l≤L} H^l : D^l(R) = Σ_pairs A e^{-(a-b)²/2s} Σ_{l≤L} (2l+1) [e^{-x} i_l(x)] P_l(â · R b̂), x = ab/s,
  which needs no Wigner matrix at all (addition theorem).
* The truncated body-ordered functions are T_1 = h_L, T_{ν+1} = P_L(T_ν h_L) on each coset of O(3); the kernel
  block (λ, σ) of order ν is ½[∫D^λ T_ν(R) dR + σ(-1)^λ ∫D^λ T_ν(-R) dR] (exact normalization; the
  "reference" normalization replaces h_L by Σ_l 8π²/(2l+1) H^l:D^l and multiplies the block by (2λ+1)/8π²).
  :func:`so3_oracle` evaluates exactly this on an SO(3) quadrature grid that integrates the band-limited
  products exactly, so it is an independent oracle for the whole Clebsch–Gordan iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

EIGHT_PI2 = 8.0 * math.pi**2
# Cartesian (x, y, z) are the real-SH l=1 components m = (+1, -1, 0), i.e. array indices (2, 0, 1).
CART_FROM_M = np.array([2, 0, 1])


# ----------------------------------------------------------------------------------------------------------
# Real spherical harmonics and real Wigner matrices (MATH.md §2)
# ----------------------------------------------------------------------------------------------------------
def real_sph_harm(l: int, vectors: np.ndarray) -> np.ndarray:
    """Real orthonormal Y_lm(r̂), m = -l..l, shape (n, 2l+1), from scipy's complex Condon–Shortley Y_l^m."""
    v = np.atleast_2d(np.asarray(vectors, dtype=float))
    r = np.linalg.norm(v, axis=1)
    theta = np.arccos(np.clip(v[:, 2] / r, -1.0, 1.0))
    phi = np.arctan2(v[:, 1], v[:, 0])
    out = np.empty((len(v), 2 * l + 1))
    for m in range(-l, l + 1):
        ylm = special.sph_harm_y(l, abs(m), theta, phi)
        if m > 0:
            out[:, m + l] = math.sqrt(2.0) * (-1) ** m * ylm.real
        elif m == 0:
            out[:, l] = ylm.real
        else:
            out[:, m + l] = math.sqrt(2.0) * (-1) ** m * ylm.imag
    return out


def real_y2_cartesian(vectors: np.ndarray) -> np.ndarray:
    """Real Y_2m, m = -2..2, from explicit Cartesian polynomials (independent of scipy)."""
    v = np.atleast_2d(np.asarray(vectors, dtype=float))
    x, y, z = (v / np.linalg.norm(v, axis=1)[:, None]).T
    c = 0.5 * math.sqrt(15.0 / math.pi)
    return np.stack(
        [
            c * x * y,
            c * y * z,
            0.25 * math.sqrt(5.0 / math.pi) * (3.0 * z * z - 1.0),
            c * x * z,
            0.5 * c * (x * x - y * y),
        ],
        axis=1,
    )


def _probe_directions(n: int, seed: int = 12345) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1)[:, None]


def wigner_d_real(l: int, rotations: np.ndarray, ylm=None) -> np.ndarray:
    """Real Wigner matrices with Y_l(Q r̂) = D^l(Q) Y_l(r̂), by least squares on random directions.

    ``rotations`` has shape (3, 3) or (n, 3, 3) and may contain improper matrices. ``ylm(l, vectors)``
    defaults to :func:`real_sph_harm`.
    """
    ylm = real_sph_harm if ylm is None else ylm
    Q = np.asarray(rotations, dtype=float)
    single = Q.ndim == 2
    Q = Q[None] if single else Q
    dirs = _probe_directions(4 * (2 * l + 1) + 8)
    Y = ylm(l, dirs)  # (k, 2l+1)
    pinv = np.linalg.pinv(Y)  # (2l+1, k)
    rotated = np.einsum("gab,kb->gka", Q, dirs).reshape(-1, 3)
    YQ = ylm(l, rotated).reshape(len(Q), len(dirs), 2 * l + 1)  # YQ[g] = Y D[g]^T
    D = np.einsum("mk,gkn->gnm", pinv, YQ)
    return D[0] if single else D


def random_rotation(rng, improper: bool = False) -> np.ndarray:
    """Haar-random proper rotation (or, with ``improper``, a proper rotation times -1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


# ----------------------------------------------------------------------------------------------------------
# Environments (MATH.md §1), brute-force neighbour search with periodic images
# ----------------------------------------------------------------------------------------------------------
def cutoff_weight(r, rc: float, width: float):
    """Shifted-cosine switching function f_c(r)."""
    r = np.asarray(r, dtype=float)
    t = np.clip((r - rc + width) / width, 0.0, 1.0)
    return np.where(r >= rc, 0.0, 0.5 * (1.0 + np.cos(np.pi * t)))


@dataclass
class Environment:
    """Neighbours of one centre: vectors (n, 3) Å, atomic numbers (n,), cutoff weights (n,)."""

    centre: int
    vectors: np.ndarray
    numbers: np.ndarray
    weights: np.ndarray


def environments(atoms, cutoff: float, cutoff_width: float, radial=None, hydrogen=1.0) -> list[Environment]:
    """Environments of every atom of ``atoms`` (ase.Atoms), periodic images found by brute force.

    ``radial=(r0, m)`` multiplies each neighbour's weight by r0^m / (r0^m + r^m) (featomic's Willatt2018 form
    with rate 1, written independently of wkviz); ``hydrogen`` multiplies the weight of hydrogen neighbours.
    """
    pos = np.asarray(atoms.get_positions(), dtype=float)
    numbers = np.asarray(atoms.get_atomic_numbers())
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    if pbc.any():
        cell = np.asarray(atoms.get_cell(), dtype=float)
        # wrap into the cell so that every fractional difference is in (-1, 1)
        frac = np.linalg.solve(cell.T, pos.T).T
        frac[:, pbc] -= np.floor(frac[:, pbc])
        pos = frac @ cell
        recip = np.linalg.inv(cell).T  # rows b_k with a_i·b_k = δ_ik; plane spacing 1/|b_k|
        nmax = [int(math.ceil(cutoff * np.linalg.norm(recip[k]))) + 1 if pbc[k] else 0 for k in range(3)]
        grids = np.meshgrid(*[np.arange(-n, n + 1) for n in nmax], indexing="ij")
        shifts = np.stack([g.ravel() for g in grids], axis=1) @ cell
    else:
        shifts = np.zeros((1, 3))
    out = []
    for i in range(len(pos)):
        d = (pos[None, :, :] + shifts[:, None, :] - pos[i]).reshape(-1, 3)
        z = np.tile(numbers, len(shifts))
        r = np.linalg.norm(d, axis=1)
        keep = (r < cutoff) & (r > 1e-10)
        wts = cutoff_weight(r[keep], cutoff, cutoff_width)
        if radial is not None:
            r0m = radial[0] ** radial[1]
            wts = wts * r0m / (r0m + r[keep] ** radial[1])
        wts = np.where(z[keep] == 1, hydrogen, 1.0) * wts
        out.append(Environment(i, d[keep], z[keep], wts))
    return out


# ----------------------------------------------------------------------------------------------------------
# Neighbour-pair overlaps, h(R), H^l (MATH.md §3, §13)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PairSet:
    """All same-species neighbour pairs (a of i, b of i') with overlap A exp(-|a - R b|² / 2s)."""

    a: np.ndarray  # (p, 3)
    b: np.ndarray  # (p, 3)
    amp: np.ndarray  # (p,)
    s: np.ndarray  # (p,)

    @property
    def ra(self):
        return np.linalg.norm(self.a, axis=1)

    @property
    def rb(self):
        return np.linalg.norm(self.b, axis=1)


def neighbour_overlap(za, zb, coupling: float) -> np.ndarray:
    """How much neighbours of elements za, zb overlap: 1 if the same element, ``coupling`` if both are
    heavier than hydrogen, else 0 (written here independently of wkviz.hypers.species_kernel)."""
    za, zb = np.asarray(za), np.asarray(zb)
    out = np.zeros(np.broadcast(za, zb).shape)
    out[(za != 1) & (zb != 1)] = coupling
    out[np.broadcast_to(za == zb, out.shape)] = 1.0
    return out


def pair_set(env_a: Environment, env_b: Environment, sigma: float, scaling: float | None = None,
             coupling: float = 0.0) -> PairSet:
    """Neighbour pairs of two environments that overlap (same species, or different heavy species when
    ``coupling`` > 0, weighted by it), constant width or σ(r) = σ₀ exp(r/r_s)."""
    overlap = neighbour_overlap(env_a.numbers[:, None], env_b.numbers[None, :], coupling)
    ia, ib = np.nonzero(overlap)
    a, b = env_a.vectors[ia], env_b.vectors[ib]
    ff = env_a.weights[ia] * env_b.weights[ib] * overlap[ia, ib]
    if scaling is None:
        amp, s = ff, np.full(len(ia), 2.0 * sigma**2)
    else:
        sa = sigma * np.exp(np.linalg.norm(a, axis=1) / scaling)
        sb = sigma * np.exp(np.linalg.norm(b, axis=1) / scaling)
        S = sa**2 + sb**2
        amp, s = ff * (2.0 * np.pi * S) ** -1.5, S
    return PairSet(a, b, amp, s)


def scaled_in(l: int, x) -> np.ndarray:
    """e^{-x} i_l(x) (modified spherical Bessel function of the first kind), overflow-free."""
    x = np.asarray(x, dtype=float)
    xs = np.where(x > 0, x, 1.0)
    val = np.sqrt(np.pi / (2.0 * xs)) * special.ive(l + 0.5, xs)
    return np.where(x > 0, val, 1.0 if l == 0 else 0.0)


def h_direct(ps: PairSet, rotations: np.ndarray) -> np.ndarray:
    """Brute-force overlap h(R) = Σ A exp(-|a - R b|²/2s) for rotations (g, 3, 3)."""
    Rb = np.einsum("gij,pj->gpi", rotations, ps.b)
    d2 = ((ps.a[None] - Rb) ** 2).sum(-1)
    return (ps.amp[None] * np.exp(-d2 / (2.0 * ps.s[None]))).sum(1)


def _radial_factors(ps: PairSet, L: int) -> np.ndarray:
    """(L+1, p): e^{-(a-b)²/2s} e^{-x} i_l(x), x = ab/s, times A."""
    ra, rb = ps.ra, ps.rb
    x = ra * rb / ps.s
    base = ps.amp * np.exp(-((ra - rb) ** 2) / (2.0 * ps.s))
    return np.stack([base * scaled_in(l, x) for l in range(L + 1)])


def H_matrix(ps: PairSet, l: int) -> np.ndarray:
    """ν=1 coefficient matrix H^l_{mm'} (MATH.md §3): h(R) = Σ_l H^l : D^l(R)."""
    rad = _radial_factors(ps, l)[l]
    Ya, Yb = real_sph_harm(l, ps.a), real_sph_harm(l, ps.b)
    return 4.0 * np.pi * np.einsum("p,pm,pn->mn", rad, Ya, Yb)


def h_bandlimited(ps: PairSet, rotations: np.ndarray, L: int, l_weights=None) -> np.ndarray:
    """h_L(R) = Σ_{l≤L} w_l H^l:D^l(R) via Legendre polynomials (no Wigner matrices); R may be improper."""
    w = np.ones(L + 1) if l_weights is None else np.asarray(l_weights, dtype=float)
    rad = _radial_factors(ps, L)
    ua = ps.a / ps.ra[:, None]
    ub = ps.b / ps.rb[:, None]
    cos = np.clip(np.einsum("pi,gij,pj->gp", ua, rotations, ub), -1.0, 1.0)
    total = np.zeros(len(rotations))
    for l in range(L + 1):
        total += w[l] * (2 * l + 1) * (special.eval_legendre(l, cos) @ rad[l])
    return total


# ----------------------------------------------------------------------------------------------------------
# SO(3) quadrature and the function-space oracle of the Wigner iteration (MATH.md §4–§8)
# ----------------------------------------------------------------------------------------------------------
def euler_zyz(alpha, beta, gamma) -> np.ndarray:
    """R = Rz(α) Ry(β) Rz(γ), arrays broadcast to (g, 3, 3)."""
    def rz(t):
        c, s = np.cos(t), np.sin(t)
        o, z = np.ones_like(t), np.zeros_like(t)
        return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)

    def ry(t):
        c, s = np.cos(t), np.sin(t)
        o, z = np.ones_like(t), np.zeros_like(t)
        return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)

    return rz(alpha) @ ry(beta) @ rz(gamma)


def so3_grid(n_angle: int, n_beta: int):
    """Euler grid: uniform α, γ (n_angle each), Gauss–Legendre in cos β (n_beta); weights sum to 8π².

    Integrates exactly every function on SO(3) whose Wigner expansion stops at degree J when
    n_angle ≥ J + 1 and n_beta ≥ (J + 1) / 2.
    """
    x, wx = np.polynomial.legendre.leggauss(n_beta)
    ang = 2.0 * np.pi * np.arange(n_angle) / n_angle
    A, B, G = np.meshgrid(ang, np.arccos(x), ang, indexing="ij")
    W = np.broadcast_to(wx[None, :, None], A.shape) * (2.0 * np.pi / n_angle) ** 2
    return euler_zyz(A.ravel(), B.ravel(), G.ravel()), W.ravel().copy()


def so3_integral(ps: PairSet, nu: int, n_angle: int, n_beta: int, inverted: bool = False) -> float:
    """∫_{SO(3)} h(±R)^ν dR by brute-force quadrature of the direct (not band-limited) overlap."""
    R, w = so3_grid(n_angle, n_beta)
    return float(w @ h_direct(ps, -R if inverted else R) ** nu)


class SO3Oracle:
    """Kernels of every (ν, λ, σ) from the truncated-product definition, evaluated on an exact grid.

    Parameters
    ----------
    L : int
        Angular truncation (``lambda_max``).
    normalization : {"exact", "reference"}
    """

    def __init__(self, L: int, normalization: str = "exact"):
        self.L = L
        self.normalization = normalization
        # T_ν h_L has degree ≤ 2L; its projection multiplies by D^λ (λ ≤ L): degree ≤ 3L.
        self.R, self.w = so3_grid(3 * L + 2, (3 * L + 3) // 2 + 1)
        self.D = [wigner_d_real(l, self.R) for l in range(L + 1)]
        self.Dm = [self.D[l] * (-1) ** l for l in range(L + 1)]  # D^l(-R) = (-1)^l D^l(R)
        self.l_weights = (
            np.ones(L + 1) if normalization == "exact" else EIGHT_PI2 / (2 * np.arange(L + 1) + 1)
        )

    def _coefficients(self, f):
        # ∫ D^λ f dR for λ ≤ L
        return [np.einsum("g,gmn->mn", self.w * f, D) for D in self.D]

    def _project(self, f):
        coef = self._coefficients(f)
        return sum((2 * l + 1) / EIGHT_PI2 * np.einsum("mn,gmn->g", coef[l], self.D[l]) for l in range(self.L + 1))

    def blocks(self, ps: PairSet, nu_max: int) -> dict:
        """{(ν, λ, σ): (2λ+1, 2λ+1) array} for ν = 1..nu_max, λ ≤ L, σ = ±1 (real-SH m order)."""
        hp = h_bandlimited(ps, self.R, self.L, self.l_weights)
        hm = h_bandlimited(ps, -self.R, self.L, self.l_weights)
        Tp, Tm = hp.copy(), hm.copy()
        out = {}
        for nu in range(1, nu_max + 1):
            cp, cm = self._coefficients(Tp), self._coefficients(Tm)
            for lam in range(self.L + 1):
                scale = 1.0 if self.normalization == "exact" else (2 * lam + 1) / EIGHT_PI2
                for sigma in (1, -1):
                    out[nu, lam, sigma] = 0.5 * scale * (cp[lam] + sigma * (-1) ** lam * cm[lam])
            if nu < nu_max:
                Tp, Tm = self._project(Tp * hp), self._project(Tm * hm)
        return out


# ----------------------------------------------------------------------------------------------------------
# Structure-level assembly
# ----------------------------------------------------------------------------------------------------------
def atom_list(frames, cutoff, cutoff_width, radial=None, hydrogen=1.0):
    """Flat list of (structure index, Z, Environment) over all atoms of all frames."""
    out = []
    for s, atoms in enumerate(frames):
        z = atoms.get_atomic_numbers()
        for env in environments(atoms, cutoff, cutoff_width, radial, hydrogen):
            out.append((s, int(z[env.centre]), env))
    return out


def oracle_kernels(frames_a, frames_b, *, nu_max, L, cutoff, cutoff_width, sigma, scaling=None,
                   normalization="exact", lams=(0, 1, 2), radial=None, coupling=0.0, hydrogen=1.0):
    """Structure and atom kernels from :class:`SO3Oracle`.

    Returns dict with ``K`` [ν_max+1, nA, nB] (ν ≥ 1), ``K_atomic`` [ν_max+1, atomsA, atomsB],
    ``K_vector`` [ν_max+1, nA, 3, nB, 3] (Cartesian, (1, +1)) and ``K_tensor`` [ν_max+1, nA, 5, nB, 5] ((2, +1)),
    the tensorial ones only if 1 / 2 are in ``lams`` and L is large enough.
    """
    oracle = SO3Oracle(L, normalization)
    A = atom_list(frames_a, cutoff, cutoff_width, radial, hydrogen)
    B = atom_list(frames_b, cutoff, cutoff_width, radial, hydrogen)
    nA, nB = len(frames_a), len(frames_b)
    K = np.zeros((nu_max + 1, nA, nB))
    Ka = np.zeros((nu_max + 1, len(A), len(B)))
    Kv = np.zeros((nu_max + 1, nA, 3, nB, 3)) if (1 in lams and L >= 1) else None
    Kt = np.zeros((nu_max + 1, nA, 5, nB, 5)) if (2 in lams and L >= 2) else None
    for p, (sa, za, ea) in enumerate(A):
        for q, (sb, zb, eb) in enumerate(B):
            if za != zb:
                continue
            blk = oracle.blocks(pair_set(ea, eb, sigma, scaling, coupling), nu_max)
            for nu in range(1, nu_max + 1):
                Ka[nu, p, q] = blk[nu, 0, 1][0, 0]
                K[nu, sa, sb] += blk[nu, 0, 1][0, 0]
                if Kv is not None:
                    Kv[nu, sa, :, sb, :] += blk[nu, 1, 1][np.ix_(CART_FROM_M, CART_FROM_M)]
                if Kt is not None:
                    Kt[nu, sa, :, sb, :] += blk[nu, 2, 1]
    return dict(K=K, K_atomic=Ka, K_vector=Kv, K_tensor=Kt)


def composition_kernel(frames_a, frames_b) -> np.ndarray:
    """K^0: dot products of element-count vectors."""
    species = sorted({int(z) for f in list(frames_a) + list(frames_b) for z in f.get_atomic_numbers()})

    def counts(frames):
        return np.array([[np.sum(f.get_atomic_numbers() == z) for z in species] for f in frames], dtype=float)

    return counts(frames_a) @ counts(frames_b).T


# ----------------------------------------------------------------------------------------------------------
# featomic 0.6.7 (MATH.md §10)
# ----------------------------------------------------------------------------------------------------------
def featomic_hypers(cutoff, cutoff_width, sigma, L, max_radial=20, radial=None):
    """featomic hypers with the physics of MATH.md §1 (centre excluded, splines off for accuracy);
    ``radial=(r0, m)`` adds featomic's Willatt2018 radial scaling with rate 1."""
    density = {"type": "Gaussian", "width": sigma, "center_atom_weight": 0.0}
    if radial is not None:
        density["scaling"] = {"type": "Willatt2018", "scale": float(radial[0]), "rate": 1.0,
                              "exponent": int(radial[1])}
    return dict(
        cutoff={"radius": cutoff, "smoothing": {"type": "ShiftedCosine", "width": cutoff_width}},
        density=density,
        basis={
            "type": "TensorProduct",
            "max_angular": L,
            "radial": {"type": "Gto", "max_radial": max_radial},
            # None evaluates the radial integrals directly: 1e-10 splines fail to converge for some
            # (cutoff, σ) and we want the reference as accurate as featomic can make it.
            "spline_accuracy": None,
        },
    )


def _atom_offsets(frames):
    return np.concatenate([[0], np.cumsum([len(f) for f in frames])])


def featomic_density_coefficients(frames, hypers) -> dict:
    """{(l, neighbour Z): array (n_atoms_total, 2l+1, n_radial)} of featomic spherical-expansion coefficients."""
    import featomic

    tm = featomic.SphericalExpansion(**hypers).compute(list(frames))
    offsets = _atom_offsets(frames)
    ntot = offsets[-1]
    out = {}
    for key, block in tm.items():
        l, sigma, _, nz = (int(key[n]) for n in ("o3_lambda", "o3_sigma", "center_type", "neighbor_type"))
        assert sigma == 1
        arr = out.setdefault((l, nz), np.zeros((ntot, 2 * l + 1, block.values.shape[2])))
        idx = offsets[block.samples.values[:, 0]] + block.samples.values[:, 1]
        arr[idx] = block.values
    return out


def featomic_power_spectrum(frames, hypers) -> np.ndarray:
    """Per-atom SOAP power spectra (n_atoms_total, n_features), zero-padded to a common layout."""
    import featomic

    tm = featomic.SoapPowerSpectrum(**hypers).compute(list(frames))
    offsets = _atom_offsets(frames)
    ntot = offsets[-1]
    cols = {}
    for key, block in tm.items():
        pair = (int(key["neighbor_1_type"]), int(key["neighbor_2_type"]))
        cols.setdefault(pair, block.values.shape[1])
        assert cols[pair] == block.values.shape[1]
    layout, start = {}, 0
    for pair in sorted(cols):
        layout[pair] = start
        start += cols[pair]
    P = np.zeros((ntot, start))
    for key, block in tm.items():
        pair = (int(key["neighbor_1_type"]), int(key["neighbor_2_type"]))
        idx = offsets[block.samples.values[:, 0]] + block.samples.values[:, 1]
        P[idx, layout[pair]:layout[pair] + block.values.shape[1]] = block.values
    return P


def same_element_mask(frames_a, frames_b) -> np.ndarray:
    za = np.concatenate([f.get_atomic_numbers() for f in frames_a])
    zb = np.concatenate([f.get_atomic_numbers() for f in frames_b])
    return za[:, None] == zb[None, :]


def structure_index(frames) -> np.ndarray:
    return np.concatenate([np.full(len(f), s) for s, f in enumerate(frames)])
