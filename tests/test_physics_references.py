"""The engine against independent references (MATH.md §3–§10, §13).

Two groups:

* ``test_reference_*``: the references agree with each other (pair sums, brute-force SO(3) quadrature,
  featomic 0.6.7, ASE neighbour lists). They need no engine, so a failure in the engine tests below points
  at the engine.
* the rest compare ``WignerKernel(...).compute`` with those references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from conftest import make_molecules, make_periodic_cell, require
from wkviz.hypers import Hypers

E = ref.EIGHT_PI2


def rel_err(got, want):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    scale = np.abs(want).max()
    assert scale > 0, "expected array is identically zero, the comparison would be vacuous"
    return float(np.abs(got - want).max() / scale)


def assert_rel_close(got, want, rtol, what):
    err = rel_err(got, want)
    assert err <= rtol, f"{what}: max|Δ|/max|expected| = {err:.2e} > {rtol:.0e}"


def same_species_pairs(frames_a, frames_b, cutoff, cutoff_width):
    """[(p, q, Environment_p, Environment_q)] over all same-element atom pairs, global atom indices."""
    A = ref.atom_list(frames_a, cutoff, cutoff_width)
    B = ref.atom_list(frames_b, cutoff, cutoff_width)
    return [(p, q, ea, eb) for p, (_, za, ea) in enumerate(A) for q, (_, zb, eb) in enumerate(B) if za == zb]


# ==========================================================================================================
# The references agree with each other
# ==========================================================================================================
def test_reference_real_harmonics_follow_math_md_conventions():
    v = np.random.default_rng(0).normal(size=(200, 3))
    r = np.linalg.norm(v, axis=1)[:, None]
    # Y_1 = sqrt(3/4π) (y, z, x)/r (MATH.md §2) and the Cartesian Y_2 agree with the scipy-based real SH
    assert np.abs(ref.real_sph_harm(1, v) - math.sqrt(3 / (4 * math.pi)) * v[:, [1, 2, 0]] / r).max() < 1e-14
    assert np.abs(ref.real_sph_harm(2, v) - ref.real_y2_cartesian(v)).max() < 1e-14
    # orthonormal on the sphere (Gauss–Legendre × uniform grid, exact for these degrees)
    x, wx = np.polynomial.legendre.leggauss(12)
    phi = 2 * np.pi * np.arange(24) / 24
    X, P = np.meshgrid(x, phi, indexing="ij")
    s = np.sqrt(1 - X**2)
    dirs = np.stack([s * np.cos(P), s * np.sin(P), X], -1).reshape(-1, 3)
    w = np.repeat(wx, 24) * 2 * np.pi / 24
    Y = np.concatenate([ref.real_sph_harm(l, dirs) for l in range(6)], axis=1)
    assert np.abs(Y.T @ (w[:, None] * Y) - np.eye(36)).max() < 1e-13


def test_reference_wigner_matrices_are_a_representation_of_o3():
    rng = np.random.default_rng(1)
    Q1, Q2 = ref.random_rotation(rng), ref.random_rotation(rng, improper=True)
    for l in range(6):
        D1, D2 = ref.wigner_d_real(l, Q1), ref.wigner_d_real(l, Q2)
        eye = np.eye(2 * l + 1)
        assert np.abs(D1 @ D1.T - eye).max() < 1e-13
        assert np.abs(D1 @ D2 - ref.wigner_d_real(l, Q1 @ Q2)).max() < 1e-13
        assert np.abs(ref.wigner_d_real(l, -np.eye(3)) - (-1) ** l * eye).max() < 1e-13
    P = np.eye(3)[[1, 2, 0]]
    assert np.abs(ref.wigner_d_real(1, Q2) - P @ Q2 @ P.T).max() < 1e-14
    d2_cart = ref.wigner_d_real(2, Q2, ylm=lambda l, v: ref.real_y2_cartesian(v))
    assert np.abs(d2_cart - ref.wigner_d_real(2, Q2)).max() < 1e-13


def test_reference_neighbour_lists_match_ase():
    from ase.neighborlist import neighbor_list

    frames = make_molecules() + [make_periodic_cell(), make_periodic_cell().repeat((2, 1, 1))]
    for atoms in frames:
        i, d = neighbor_list("id", atoms, 4.2)
        for env in ref.environments(atoms, 4.2, 0.5):
            mine = np.sort(np.linalg.norm(env.vectors, axis=1))
            theirs = np.sort(d[i == env.centre])
            assert len(mine) == len(theirs) and np.abs(mine - theirs).max() < 1e-12


def test_reference_pair_sum_expansion_matches_brute_force_overlap():
    """h(R) = Σ_l H^l : D^l(R) and ∫h dR = 8π² H^0 (MATH.md §3-§4), incl. improper R."""
    mol = make_molecules(["CH3OH"])[0]
    envs = ref.environments(mol, 3.0, 0.5)
    ps = ref.pair_set(envs[0], envs[1], 1.0)  # C and O centres, same-species neighbours
    rng = np.random.default_rng(2)
    Rs = np.stack([ref.random_rotation(rng, improper=bool(k % 2)) for k in range(8)])
    direct = ref.h_direct(ps, Rs)
    H = [ref.H_matrix(ps, l) for l in range(21)]
    via_D = sum(np.einsum("mn,gmn->g", H[l], ref.wigner_d_real(l, Rs)) for l in range(21))
    assert rel_err(via_D, direct) < 1e-13
    assert rel_err(ref.h_bandlimited(ps, Rs, 20), direct) < 1e-13
    quad = ref.so3_integral(ps, 1, 41, 21)
    assert abs(quad / (E * H[0][0, 0]) - 1) < 1e-13


def test_reference_oracle_matches_closed_forms_and_quadrature():
    mol = make_molecules(["CH3OH"])[0]
    envs = ref.environments(mol, 3.0, 0.5)
    ps = ref.pair_set(envs[0], envs[1], 0.6)
    L = 4
    H = [ref.H_matrix(ps, l) for l in range(L + 1)]
    blk = ref.SO3Oracle(L).blocks(ps, 3)
    for l in range(L + 1):
        assert np.abs(blk[1, l, 1] - E / (2 * l + 1) * H[l]).max() < 1e-12 * E * np.abs(H[0]).max()
        assert np.abs(blk[1, l, -1]).max() < 1e-12 * E * np.abs(H[0]).max()
    nu2 = E * sum(np.sum(H[l] ** 2) / (2 * l + 1) for l in range(L + 1))
    assert abs(blk[2, 0, 1][0, 0] / nu2 - 1) < 1e-13
    assert abs(blk[2, 0, -1][0, 0]) < 1e-12 * nu2  # no pseudoscalar at ν = 2 (MATH.md §5)
    R, w = ref.so3_grid(3 * L + 3, 3 * L // 2 + 3)  # a different, finer grid than the oracle's
    hp, hm = ref.h_bandlimited(ps, R, L), ref.h_bandlimited(ps, -R, L)
    nu3 = 0.5 * (w @ hp**3 + w @ hm**3)  # O(3)-averaged invariant
    assert abs(blk[3, 0, 1][0, 0] / nu3 - 1) < 1e-12
    assert abs(blk[3, 0, -1][0, 0]) > 1e-10 * abs(nu3)  # the pseudoscalar exists at ν = 3 ...
    assert abs(blk[3, 0, 1][0, 0] + blk[3, 0, -1][0, 0] - w @ hp**3) < 1e-12 * abs(nu3)  # ... Σσ = SO(3)
    # polar vector at ν = 2: ½ ∫_{O(3)} Q h_L(Q)² dQ in Cartesian components
    vec = 0.5 * (np.einsum("g,gij->ij", w * hp**2, R) - np.einsum("g,gij->ij", w * hm**2, R))
    assert rel_err(blk[2, 1, 1][np.ix_(ref.CART_FROM_M, ref.CART_FROM_M)], vec) < 1e-12
    # reference normalization, closed form of MATH.md §8
    blk_ref = ref.SO3Oracle(L, "reference").blocks(ps, 2)
    closed = sum(E**2 / (2 * l + 1) ** 3 * np.sum(H[l] ** 2) for l in range(L + 1))
    assert abs(blk_ref[2, 0, 1][0, 0] / closed - 1) < 1e-13


def test_reference_scaled_width_overlap_quadrature_is_converged():
    """Unit-integral Gaussians with σ(r) = σ₀ e^{r/r_s}: ∫h dR by quadrature = analytic sphere average."""
    mol = make_molecules(["CH3OH"])[0]
    envs = ref.environments(mol, 3.5, 0.5)
    ps = ref.pair_set(envs[0], envs[1], 0.4, scaling=3.0)
    x = ps.ra * ps.rb / ps.s
    analytic = E * np.sum(ps.amp * np.exp(-((ps.ra - ps.rb) ** 2) / (2 * ps.s)) * (1 - np.exp(-2 * x)) / (2 * x))
    assert abs(ref.so3_integral(ps, 1, 61, 31) / analytic - 1) < 1e-12
    assert abs(E * ref.H_matrix(ps, 0)[0, 0] / analytic - 1) < 1e-13


@pytest.fixture(scope="module")
def featomic_setup():
    """Molecules + periodic cell, featomic coefficients and power spectra at the MATH.md §10 settings."""
    require("featomic")
    frames = make_molecules() + [make_periodic_cell()]
    rc, w, sigma, L = 4.0, 0.5, 0.5, 3
    hyp = ref.featomic_hypers(rc, w, sigma, L)
    return dict(frames=frames, rc=rc, w=w, sigma=sigma, L=L,
                coef=ref.featomic_density_coefficients(frames, hyp),
                ps=ref.featomic_power_spectrum(frames, hyp))


def test_reference_featomic_matches_pair_sums(featomic_setup):
    """featomic: Σ_{a,n} c c' = H^l (constant 1) and 8π² p·p' = 8π² Σ_l ‖H^l‖²/(2l+1) (MATH.md §3, §10)."""
    s = featomic_setup
    coef, P, L = s["coef"], s["ps"], s["L"]
    worst_h, k_ps, k_pair = 0.0, [], []
    for p, q, ea, eb in same_species_pairs(s["frames"], s["frames"], s["rc"], s["w"]):
        ps = ref.pair_set(ea, eb, s["sigma"])
        H = [ref.H_matrix(ps, l) for l in range(L + 1)]
        for l in range(L + 1):
            Hf = sum(c[p] @ c[q].T for (ll, _), c in coef.items() if ll == l)
            worst_h = max(worst_h, np.abs(Hf - H[l]).max() / np.abs(H[0]).max())
        k_pair.append(E * sum(np.sum(H[l] ** 2) / (2 * l + 1) for l in range(L + 1)))
        k_ps.append(E * P[p] @ P[q])
    assert worst_h < 1e-6
    assert rel_err(k_ps, k_pair) < 1e-6


# ==========================================================================================================
# The engine against the references
# ==========================================================================================================
def test_composition_and_atomic_bookkeeping(engine, structures):
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=3, lambda_max=2, cutoff=3.5, cutoff_width=0.5, density_width=0.5)
    res = engine(structures, h, atomic=True)
    assert np.array_equal(res.K[0], ref.composition_kernel(structures, structures))
    mask = ref.same_element_mask(structures, structures)
    assert np.array_equal(res.K_atomic[0], mask.astype(float))
    assert np.all(res.K_atomic[:, ~mask] == 0), "K_atomic must vanish between different elements"
    sidx = ref.structure_index(structures)
    onehot = (sidx[:, None] == np.arange(len(structures))[None]).astype(float)
    for nu in range(1, h.nu_max + 1):
        assert_rel_close(res.K[nu], onehot.T @ res.K_atomic[nu] @ onehot, 1e-13, f"K[{nu}] = Σ K_atomic")
    assert list(res.species) == sorted({int(z) for f in structures for z in f.numbers})
    assert list(res.n_atoms_A) == [len(f) for f in structures]


def test_nu2_atom_kernel_is_8pi2_times_featomic_soap(engine, featomic_setup):
    """MATH.md §10: k²_{0,+}(i, i') = 8π² p_i · p_i' over same-element centre pairs."""
    s = featomic_setup
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=2, lambda_max=s["L"], cutoff=s["rc"], cutoff_width=s["w"], density_width=s["sigma"])
    res = engine(s["frames"], h, atomic=True)
    mask = ref.same_element_mask(s["frames"], s["frames"])
    k = res.K_atomic[2][mask]
    p = (s["ps"] @ s["ps"].T)[mask]
    const = float(k @ p / (p @ p))
    one_minus_r = 1 - np.corrcoef(k, p)[0, 1]
    assert abs(const / E - 1) < 1e-5, f"fitted constant {const:.7f}, expected 8π² = {E:.7f}"
    assert one_minus_r < 1e-6, f"1 - Pearson = {one_minus_r:.2e}"
    assert rel_err(k, E * p) < 1e-5


def test_nu1_matches_featomic_spherical_expansion(engine, featomic_setup):
    """k^1_l = 8π²/(2l+1) Σ_{a,n} c c' for λ=0 (atoms), λ=1 (Cartesian) and λ=2 (structures)."""
    s = featomic_setup
    frames, coef = s["frames"], s["coef"]
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=1, lambda_max=s["L"], cutoff=s["rc"], cutoff_width=s["w"], density_width=s["sigma"])
    res = engine(frames, h, atomic=True, tensor_rank=(1, 2))
    mask = ref.same_element_mask(frames, frames)
    sidx = ref.structure_index(frames)
    onehot = (sidx[:, None] == np.arange(len(frames))[None]).astype(float)

    def featomic_k(l):
        # (atoms, 2l+1, atoms, 2l+1), zero between different centre elements
        k = sum(np.einsum("pmn,qkn->pmqk", c, c) for (ll, _), c in coef.items() if ll == l)
        return E / (2 * l + 1) * k * mask[:, None, :, None]

    k0 = featomic_k(0)[:, 0, :, 0]
    assert_rel_close(res.K_atomic[1], k0, 1e-6, "K_atomic[1] vs featomic λ=0")
    k1 = np.einsum("pmqk,pa,qb->ambk", featomic_k(1), onehot, onehot)
    k1 = k1[:, ref.CART_FROM_M][:, :, :, ref.CART_FROM_M]
    assert_rel_close(res.K_vector[1], k1, 1e-6, "K_vector[1] vs featomic λ=1 (Cartesian x, y, z)")
    k2 = np.einsum("pmqk,pa,qb->ambk", featomic_k(2), onehot, onehot)
    assert_rel_close(res.K_tensor[1], k2, 1e-6, "K_tensor[1] vs featomic λ=2 (m = -2..2)")


@pytest.fixture(scope="module")
def wide_setup():
    """σ = 1 Å, r_c = 3 Å, L = 8: the l ≤ 8 truncation of h is tiny and every ∫ is exact on our grids."""
    frames = make_molecules(["H2O", "CH3OH"])
    rc, w, sigma, L = 3.0, 0.5, 1.0, 8
    pairs = same_species_pairs(frames, frames, rc, w)
    nat = sum(len(f) for f in frames)
    ref1, ref2, ref3 = (np.zeros((nat, nat)) for _ in range(3))
    R, wq = ref.so3_grid(3 * L + 2, (3 * L + 1) // 2 + 1)  # exact for the band-limited ∫h_L^ν, ν ≤ 3
    for p, q, ea, eb in pairs:
        ps = ref.pair_set(ea, eb, sigma)
        ref1[p, q] = ref.so3_integral(ps, 1, 31, 16)  # brute force, the true (untruncated) h
        hp, hm = ref.h_bandlimited(ps, R, L), ref.h_bandlimited(ps, -R, L)
        ref2[p, q] = wq @ hp**2
        ref3[p, q] = 0.5 * (wq @ hp**3 + wq @ hm**3)
    return dict(frames=frames, hypers=Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=3, lambda_max=L, cutoff=rc, cutoff_width=w,
                                             density_width=sigma, nu1_route="exact"),
                refs={1: ref1, 2: ref2, 3: ref3})


@pytest.mark.slow
def test_exact_nu1_route_and_iteration_vs_so3_quadrature(engine, wide_setup):
    """ν=1: ∫h dR by brute force; ν=2: ∫h_L²; ν=3: ½∫(h_L(R)³ + h_L(-R)³) (O(3)-averaged, MATH.md §5-§6)."""
    res = engine(wide_setup["frames"], wide_setup["hypers"], atomic=True)
    for nu, want in wide_setup["refs"].items():
        assert_rel_close(res.K_atomic[nu], want, 1e-8, f"K_atomic[{nu}] (exact route, L=8) vs quadrature")


@pytest.mark.slow
def test_basis_route_agrees_with_exact_route(engine, wide_setup, molecules):
    for frames, h in [(wide_setup["frames"], wide_setup["hypers"]),
                      (molecules, Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_width=0.3, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=4, nu1_route="exact")),  # the defaults otherwise
                      (molecules[:3] + [make_periodic_cell()],
                       Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=3, lambda_max=4, cutoff=4.0, density_width=0.5, nu1_route="exact"))]:
        # tensorial outputs need the full recursion, whose set-up is slow at L = 8: check them at L ≤ 4
        rank = (1, 2) if h.lambda_max <= 4 else 0
        exact = engine(frames, h, atomic=True, tensor_rank=rank)
        basis = engine(frames, h.replace(nu1_route="basis"), atomic=True, tensor_rank=rank)
        names = ("K", "K_atomic", "K_vector", "K_tensor") if rank else ("K", "K_atomic")
        for nu in range(1, h.nu_max + 1):
            for name in names:
                assert_rel_close(getattr(basis, name)[nu], getattr(exact, name)[nu], 1e-6,
                                 f"{name}[{nu}] basis route vs exact route, {h}")


@pytest.mark.parametrize("normalization", ["exact", "reference"])
@pytest.mark.parametrize("L, nu_max", [(2, 5), (3, 4)])
def test_wigner_iteration_vs_function_space_oracle(engine, normalization, L, nu_max):
    """Every (ν, λ≤2, σ=+1) output equals the truncated-product definition T_{ν+1} = P_L(T_ν h_L)
    evaluated on an exact SO(3) grid (no Clebsch–Gordan coefficients involved)."""
    frames = make_molecules(["H2O", "NH3", "CH3OH"]) + [make_periodic_cell()]
    rc, w, sigma = 3.5, 0.5, 0.5
    want = ref.oracle_kernels(frames, frames, nu_max=nu_max, L=L, cutoff=rc, cutoff_width=w, sigma=sigma,
                              normalization=normalization)
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=nu_max, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma,
               schedule="full", normalization=normalization, nu1_route="exact")
    full = engine(frames, h, atomic=True, tensor_rank=(1, 2))
    reduced = engine(frames, h.replace(schedule="reduced"), atomic=True)
    for nu in range(1, nu_max + 1):
        for name in ("K", "K_atomic", "K_vector", "K_tensor"):
            assert_rel_close(getattr(full, name)[nu], want[name][nu], 1e-9, f"{name}[{nu}] full schedule, {h}")
        for name in ("K", "K_atomic"):
            assert_rel_close(getattr(reduced, name)[nu], want[name][nu], 1e-9, f"{name}[{nu}] reduced, {h}")


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["exact", "reference"])
def test_full_schedule_equals_reduced_schedule(engine, normalization):
    frames = make_molecules(["H2O", "CH4", "CH3OH"]) + [make_periodic_cell()]
    for L in (1, 2, 3, 4):
        h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=6, lambda_max=L, cutoff=3.5, cutoff_width=0.5, density_width=0.5,
                   normalization=normalization)
        full = engine(frames, h.replace(schedule="full"), atomic=True)
        reduced = engine(frames, h.replace(schedule="reduced"), atomic=True)
        for nu in range(h.nu_max + 1):
            assert_rel_close(reduced.K[nu], full.K[nu], 1e-12, f"K[{nu}] reduced vs full, L={L}")
            assert_rel_close(reduced.K_atomic[nu], full.K_atomic[nu], 1e-12,
                             f"K_atomic[{nu}] reduced vs full, L={L}")
    # tensorial outputs requested with the reduced schedule still come from the full recursion
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=4, lambda_max=3, cutoff=3.5, cutoff_width=0.5, density_width=0.5,
               normalization=normalization)
    full = engine(frames, h.replace(schedule="full"), tensor_rank=(1, 2))
    reduced = engine(frames, h.replace(schedule="reduced"), tensor_rank=(1, 2))
    for nu in range(1, h.nu_max + 1):
        assert_rel_close(reduced.K_vector[nu], full.K_vector[nu], 1e-12, f"K_vector[{nu}] reduced vs full")
        assert_rel_close(reduced.K_tensor[nu], full.K_tensor[nu], 1e-12, f"K_tensor[{nu}] reduced vs full")


def test_reference_normalization_closed_form(engine):
    """MATH.md §8: k̃²_0 = Σ_l (8π²)²/(2l+1)³ ‖H^l‖_F², H^l from our own pair sums; k̃¹ = k¹."""
    frames = make_molecules(["H2O", "NH3", "CH3OH"]) + [make_periodic_cell()]
    rc, w, sigma, L = 3.5, 0.5, 0.5, 3
    nat = sum(len(f) for f in frames)
    k1, k2 = np.zeros((nat, nat)), np.zeros((nat, nat))
    for p, q, ea, eb in same_species_pairs(frames, frames, rc, w):
        ps = ref.pair_set(ea, eb, sigma)
        H = [ref.H_matrix(ps, l) for l in range(L + 1)]
        k1[p, q] = E * H[0][0, 0]
        k2[p, q] = sum(E**2 / (2 * l + 1) ** 3 * np.sum(H[l] ** 2) for l in range(L + 1))
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=None, species_coupling=0.0, nu_max=2, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma, normalization="reference")
    for route, tol in (("exact", 1e-10), ("basis", 1e-6)):
        res = engine(frames, h.replace(nu1_route=route), atomic=True)
        assert_rel_close(res.K_atomic[1], k1, tol, f"reference normalization K_atomic[1] ({route} route)")
        assert_rel_close(res.K_atomic[2], k2, tol, f"reference normalization K_atomic[2] ({route} route)")


def test_radially_growing_width_vs_quadrature(engine):
    """MATH.md §13: unit-integral Gaussians, σ(r) = σ₀ e^{r/r_s}; ν=1 by brute-force quadrature of the
    overlap, ν=2 = ∫h_L² and the (1,+1) ν=1 block = ∫R h dR (band-limited, exact grid)."""
    frames = make_molecules(["H2O", "CH3OH"])
    rc, w, sigma0, rs, L = 3.5, 0.5, 0.4, 3.0, 3
    nat = sum(len(f) for f in frames)
    k1, k2 = np.zeros((nat, nat)), np.zeros((nat, nat))
    R, wq = ref.so3_grid(2 * L + 2, L + 2)
    for p, q, ea, eb in same_species_pairs(frames, frames, rc, w):
        ps = ref.pair_set(ea, eb, sigma0, scaling=rs)
        k1[p, q] = ref.so3_integral(ps, 1, 31, 16)
        k2[p, q] = wq @ ref.h_bandlimited(ps, R, L) ** 2
    want = ref.oracle_kernels(frames, frames, nu_max=2, L=L, cutoff=rc, cutoff_width=w, sigma=sigma0,
                              scaling=rs, lams=(0, 1))
    assert rel_err(want["K_atomic"][1], k1) < 1e-12 and rel_err(want["K_atomic"][2], k2) < 1e-12
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, nu_max=2, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma0, density_scaling=rs,
               radial_scale=None, species_coupling=0.0)
    for route, tol in (("exact", 1e-8), ("basis", 1e-6)):
        res = engine(frames, h.replace(nu1_route=route), atomic=True, tensor_rank=1)
        assert_rel_close(res.K_atomic[1], k1, tol, f"density_scaling K_atomic[1] vs quadrature ({route} route)")
        assert_rel_close(res.K_atomic[2], k2, tol, f"density_scaling K_atomic[2] vs ∫h_L² ({route} route)")
        for nu in (1, 2):
            assert_rel_close(res.K_vector[nu], want["K_vector"][nu], tol,
                             f"density_scaling K_vector[{nu}] vs oracle ({route} route)")


# ----------------------------------------------------------------------------------------------------------
# radial weight u(r) = 1 / (1 + (r/r0)^m) (Hypers.radial_scale / radial_exponent)
# ----------------------------------------------------------------------------------------------------------
RADIAL = (1.5, 6)


def test_radial_weight_nu2_is_8pi2_times_featomic_soap_with_willatt_scaling(engine):
    """With the radial weight, ν=2 is still 8π² × featomic's SOAP, computed with featomic's own Willatt2018
    radial scaling (rate 1): the weight enters the density exactly as featomic's does."""
    require("featomic")
    frames = make_molecules() + [make_periodic_cell()]
    rc, w, sigma, L = 4.0, 0.5, 0.5, 3
    ps = ref.featomic_power_spectrum(frames, ref.featomic_hypers(rc, w, sigma, L, radial=RADIAL))
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, radial_scale=RADIAL[0], radial_exponent=RADIAL[1], species_coupling=0.0,
               nu_max=2, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma)
    res = engine(frames, h, atomic=True)
    mask = ref.same_element_mask(frames, frames)
    k, p = res.K_atomic[2][mask], (ps @ ps.T)[mask]
    assert rel_err(k, E * p) < 1e-5
    # the weight matters at these settings: without it the kernel is far from the weighted reference
    plain = engine(frames, h.replace(radial_scale=None), atomic=True).K_atomic[2][mask]
    assert rel_err(plain, E * p) > 0.1


@pytest.mark.parametrize("route", ["exact", "basis"])
@pytest.mark.parametrize("scaling", [None, 2.0])
def test_radial_weight_vs_function_space_oracle(engine, route, scaling):
    """ν ≤ 3 kernels with the radial weight (and with a growing width) equal the SO(3)-grid oracle whose
    environments carry the weight r0^m / (r0^m + r^m), written independently of wkviz."""
    frames = make_molecules(["H2O", "NH3", "CH3OH"]) + [make_periodic_cell()]
    rc, w, sigma, L, nu_max = 3.5, 0.5, 0.5 if scaling is None else 0.2, 2, 3
    want = ref.oracle_kernels(frames, frames, nu_max=nu_max, L=L, cutoff=rc, cutoff_width=w, sigma=sigma,
                              scaling=scaling, radial=RADIAL, lams=(0,))
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, nu_max=nu_max, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma, density_scaling=scaling,
               radial_scale=RADIAL[0], radial_exponent=RADIAL[1], species_coupling=0.0, nu1_route=route)
    got = engine(frames, h, atomic=True)
    for nu in range(1, nu_max + 1):
        for name in ("K", "K_atomic"):
            assert_rel_close(getattr(got, name)[nu], want[name][nu], 1e-6 if route == "basis" else 1e-9,
                             f"{name}[{nu}] with the radial weight, {h}")


def test_radial_weight_scales_single_neighbour_kernels_as_a_power(engine):
    """Two atoms at distance d: every centre has one neighbour, so k^ν carries u(d)^(2ν) exactly."""
    from ase import Atoms

    frames = [Atoms("CO", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.1, 1.3)]
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, density_scaling=None, nu_max=4, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.3)
    on = engine(frames, h, atomic=True).K_atomic
    off = engine(frames, h.replace(radial_scale=None), atomic=True).K_atomic
    u = h.weight_at(np.array([1.1, 1.1, 1.3, 1.3]))
    for nu in range(1, 5):
        assert_rel_close(on[nu], off[nu] * np.outer(u, u) ** nu, 1e-9, f"K_atomic[{nu}] ∝ (u u')^ν")


@pytest.mark.parametrize("route", ["exact", "basis"])
def test_hydrogen_weight_vs_function_space_oracle(engine, route):
    """With hydrogen neighbours weighted by w_H (and heavy neighbours coupled), ν ≤ 3 kernels (λ = 0, 1) equal the
    SO(3)-grid oracle whose environments carry w_H on every hydrogen neighbour; the centres are unaffected."""
    frames = make_molecules(["H2O", "NH3", "CH3OH", "HCN"])
    rc, w, sigma, L, nu_max, wh = 3.5, 0.5, 0.5, 2, 3, 0.6
    want = ref.oracle_kernels(frames, frames, nu_max=nu_max, L=L, cutoff=rc, cutoff_width=w, sigma=sigma,
                              radial=RADIAL, coupling=0.6, hydrogen=wh, lams=(0, 1))
    h = Hypers(nu_max=nu_max, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma, density_scaling=None,
               radial_scale=RADIAL[0], radial_exponent=RADIAL[1], species_coupling=0.6, hydrogen_weight=wh,
               hydrogen_center_weight=1.0, nu1_route=route, schedule="full")
    got = engine(frames, h, atomic=True, tensor_rank=1)
    plain = engine(frames, h.replace(hydrogen_weight=1.0), atomic=True)
    for nu in range(1, nu_max + 1):
        for name in ("K", "K_atomic", "K_vector"):
            assert_rel_close(getattr(got, name)[nu], want[name][nu], 1e-6 if route == "basis" else 1e-9,
                             f"{name}[{nu}] with hydrogen weight, {h}")
        assert rel_err(plain.K_atomic[nu], got.K_atomic[nu]) > 1e-2


def test_hydrogen_weight_scales_kernels_of_hydrogen_neighbours_as_a_power(engine):
    """A C–H pair: the C centre's only neighbour is H, so its k^ν carries w_H^(2ν); the H centre's neighbour is
    C, so its kernels do not change."""
    from ase import Atoms

    frames = [Atoms("CH", positions=[[0, 0, 0], [0, 0, d]]) for d in (1.05, 1.15)]
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, nu_max=4, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.3)
    on = engine(frames, h.replace(hydrogen_weight=0.5), atomic=True).K_atomic
    off = engine(frames, h, atomic=True).K_atomic
    scale = np.array([0.5, 1.0, 0.5, 1.0])  # atoms C, H, C, H
    for nu in range(1, 5):
        assert_rel_close(on[nu], off[nu] * np.outer(scale, scale) ** nu, 1e-9, f"K_atomic[{nu}] ∝ (w w')^ν")


def test_hydrogen_center_weight_weighs_structure_sums_not_atom_kernels():
    """K(A, B) = Σ_ij w_i w_j k(i, j) with w = w_c on hydrogen centres: the engine's weighted structure kernels
    (invariant and λ=1) equal the unweighted ones minus (1 − w_c²) × the hydrogen-centre part, computed
    independently by restricting B to its hydrogen centres (``centers_B``); atom-level kernels are unchanged."""
    from wkviz.engine.kernels import WignerKernel

    frames = make_molecules(["CH3OH", "NH3", "HCN", "H2O"])
    h = Hypers(nu_max=3, lambda_max=2, cutoff=3.5, hydrogen_center_weight=1.0)
    wc = 0.4
    plain = WignerKernel(h).compute(frames, atomic=True, tensor_rank=1)
    weighted = WignerKernel(h.replace(hydrogen_center_weight=wc)).compute(frames, atomic=True, tensor_rank=1)
    numbers = np.concatenate([a.numbers for a in frames])
    owner = np.concatenate([np.full(len(a), s) for s, a in enumerate(frames)])
    hyd = np.flatnonzero(numbers == 1)
    part = WignerKernel(h).compute(frames, centers_B=hyd, tensor_rank=1)
    K_H = np.zeros_like(plain.K)
    V_H = np.zeros_like(plain.K_vector)
    for m, s in enumerate(owner[hyd]):  # columns are hydrogen centres: sum them into their structures
        K_H[:, :, s] += part.K[:, :, m]
        V_H[:, :, :, s] += part.K_vector[:, :, :, m]
    # hydrogen centres are a large share of the sums, so a missing or misplaced weight would show
    assert np.abs(K_H[1:]).max() > 0.1 * np.abs(plain.K[1:]).max()
    # every ν, the composition kernel ν = 0 included (hydrogens count w_c there too)
    assert_rel_close(weighted.K, plain.K - (1 - wc**2) * K_H, 1e-12, "invariant structure kernels")
    assert_rel_close(weighted.K_vector, plain.K_vector - (1 - wc**2) * V_H, 1e-12, "λ=1 structure kernels")
    np.testing.assert_array_equal(weighted.K_atomic, plain.K_atomic)


# ----------------------------------------------------------------------------------------------------------
# species coupling κ(Z, Z') between neighbour elements (Hypers.species_coupling)
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["exact", "basis"])
def test_species_coupling_vs_function_space_oracle(engine, route):
    """With κ(Z, Z') = a between different heavy neighbour elements, ν ≤ 3 kernels (λ=0, 1, 2) equal the SO(3)-grid
    oracle whose neighbour pairs carry the overlap κ; the centres still pair with their own element only."""
    frames = make_molecules(["H2O", "NH3", "CH3OH", "HCN"]) + [make_periodic_cell()]
    rc, w, sigma, L, nu_max, a = 3.5, 0.5, 0.5, 2, 3, 0.6
    want = ref.oracle_kernels(frames, frames, nu_max=nu_max, L=L, cutoff=rc, cutoff_width=w, sigma=sigma,
                              radial=RADIAL, coupling=a)
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, nu_max=nu_max, lambda_max=L, cutoff=rc, cutoff_width=w, density_width=sigma, density_scaling=None,
               radial_scale=RADIAL[0], radial_exponent=RADIAL[1], species_coupling=a, nu1_route=route,
               schedule="full")
    got = engine(frames, h, atomic=True, tensor_rank=(1, 2))
    plain = engine(frames, h.replace(species_coupling=0.0), atomic=True)
    for nu in range(1, nu_max + 1):
        for name in ("K", "K_atomic", "K_vector", "K_tensor"):
            assert_rel_close(getattr(got, name)[nu], want[name][nu], 1e-6 if route == "basis" else 1e-9,
                             f"{name}[{nu}] with species coupling, {h}")
        # the coupling changes the kernels (C's N neighbour in HCN now overlaps O neighbours, ...)
        assert rel_err(plain.K_atomic[nu], got.K_atomic[nu]) > 1e-3


def test_species_coupling_between_sets_with_different_neighbour_elements(engine):
    """A neighbour element that only one side has still overlaps the other side's heavy elements: C in CO
    (an O neighbour) against C in HCN (an N neighbour) is zero uncoupled and positive coupled, in both routes,
    and A×B is the transpose of B×A."""
    from ase import Atoms

    co = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.13]])
    hcn = Atoms("HCN", positions=[[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]])
    h = Hypers(hydrogen_weight=1.0, hydrogen_center_weight=1.0, nu_max=3, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.3, species_coupling=0.5)
    for route in ("basis", "exact"):
        hr = h.replace(nu1_route=route)
        ab = engine([co], hr.replace(species_coupling=0.0), frames_B=[hcn], atomic=True).K_atomic
        assert ab[1][0, 1] == 0.0  # C(O) vs C(H, N): no shared neighbour element
        ab = engine([co], hr, frames_B=[hcn], atomic=True).K_atomic
        ba = engine([hcn], hr, frames_B=[co], atomic=True).K_atomic
        assert ab[1][0, 1] > 0 and ab[1][0, 0] == 0  # C–C couples through O~N; C–H centres never pair
        np.testing.assert_allclose(ab, ba.transpose(0, 2, 1), rtol=1e-12, atol=1e-14)
