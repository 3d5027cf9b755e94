"""Explicit body-ordered features (wkviz/features.py) against the Wigner-kernel engine.

The identity under test (derived in the wkviz.engine.features module docstring):

    k^ν_{0,+}(i, i') = 8π² · Σ_p A^ν_{0,+}[p](i) A^ν_{0,+}[p](i')

for same-species centres, where A^ν are the CG-coupled ν-fold products of the *same* density coefficients the
engine uses for its ν=1 kernel (``nu1_route="basis"``: H^l = Σ_{a,n} c c'). Derivation in brief: the engine
computes k^ν_λ = ∫dR D^λ(R) h(R)^ν = 8π²/(2λ+1) F^ν_λ with F^ν the D-coefficients of h^ν, the orthogonality
∫D^λ_{μμ'} D^λ'_{νν'} = 8π²/(2λ+1) δδδ of the Haar measure (volume 8π²) giving the prefactor. F^1 = H is a
Gram matrix of the ν=1 features; the product rule D^{l1} ⊗ D^{l2} = Σ_λ C D^λ Cᵀ, which holds with the
orthonormal real CG, makes every F^{ν+1} = Σ C C F^ν F^1 term factorise into (C A^ν A^1)(i)·(C A^ν A^1)(i'),
so F^ν_λ stays the Gram matrix of A^ν_λ at every order and, at λ=0, k^ν = 8π²·(feature dot product) with no
ν-, path- or species-dependent factor.

Truncation (what "nothing truncated differently" means): the engine keeps l ≤ L in the seed and λ ≤ L in every
intermediate. The *complete* features (``truncation="complete"``) keep every intermediate λ the invariants can
see. At ν=3 an order-2 block of λ > L would have to couple with a seed l2 ≤ L to λ=0, impossible, so for ν ≤ 3
the complete features and the engine see exactly the same products: any L works, and the ν ≤ 3 invariant kernels
equal ∫h_L^ν (MATH.md §6). From ν=4 on, order-2 blocks with L < λ ≤ 2L reach λ ≤ L at order 3 and the complete
kernel differs; the engine-truncated features still match the engine exactly (checked at ν=4, and the difference
of the complete ones is shown to be real).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from wkviz.engine import features as F
from wkviz.errors import InputError, MemoryBudgetError
from wkviz.hypers import Hypers
from wkviz.engine.kernels import WignerKernel
from wkviz.engine.spherical import random_rotation, wigner_d_real

EIGHT_PI2 = 8.0 * math.pi**2


def _rattled(name, seed):
    import ase.build

    atoms = ase.build.molecule(name)
    # no point-group symmetry left: vanishing blocks cannot hide sign or index errors
    atoms.rattle(stdev=0.08, seed=seed)
    atoms.center()
    return atoms


@pytest.fixture(scope="module")
def water_peroxide():
    """Two species channels (H, O), 7 environments."""
    return [_rattled("H2O", 1), _rattled("H2O2", 2)]


@pytest.fixture(scope="module")
def carbon_clusters():
    """One species channel: two random carbon clusters (4 and 5 atoms, ≥ 1.2 Å apart)."""
    from ase import Atoms

    rng = np.random.default_rng(7)
    frames = []
    for n in (4, 5):
        pos = []
        while len(pos) < n:
            p = rng.uniform(-1.3, 1.3, size=3)
            if all(np.linalg.norm(p - q) > 1.2 for q in pos):
                pos.append(p)
        frames.append(Atoms(f"C{n}", positions=pos))
    return frames


def relative_deviation(got, want):
    scale = np.abs(want).max()
    assert scale > 0, "reference kernel is identically zero: the comparison would be vacuous"
    return float(np.abs(got - want).max() / scale)


def fitted_constant(wigner, feature_gram):
    """Least-squares c in wigner ≈ c · feature_gram."""
    return float((wigner * feature_gram).sum() / (feature_gram * feature_gram).sum())


# ==========================================================================================================
# the acceptance check: ν=3 (and ν=1, 2) Wigner kernels = 8π² × linear kernel of the explicit features
# ==========================================================================================================
def test_nu3_wigner_kernel_is_8pi2_times_linear_kernel_of_complete_nu3_features(water_peroxide):
    h = Hypers(density_scaling=None, nu_max=3, lambda_max=3, cutoff=3.0, cutoff_width=0.5, density_width=0.5, nu1_route="basis")
    engine = WignerKernel(h).compute(water_peroxide, atomic=True).K_atomic
    dens = F.density_features(water_peroxide, h)
    assert len(dens.species) == 2
    complete = F.body_ordered_features(dens, 3, truncation="complete")
    truncated = F.body_ordered_features(dens, 3, truncation="engine")
    for nu in (1, 2, 3):
        gram = F.linear_kernel(complete.invariants[nu], dens.numbers)
        assert relative_deviation(EIGHT_PI2 * gram, engine[nu]) < 1e-8, f"nu={nu}"
        assert abs(fitted_constant(engine[nu], gram) / EIGHT_PI2 - 1) < 1e-8, f"nu={nu}"
        # for ν ≤ 3 the complete and the engine-truncated invariants are the same features
        np.testing.assert_array_equal(complete.invariants[nu], truncated.invariants[nu])
    # different elements never pair, in both routes
    assert np.all(engine[3][dens.numbers[:, None] != dens.numbers[None, :]] == 0)
    # a non-trivial system: many features and a kernel that is not (nearly) rank one
    assert complete.invariants[3].shape[1] > 10_000
    assert np.linalg.matrix_rank(engine[3], tol=1e-10 * np.abs(engine[3]).max()) >= 4


def test_feature_kernels_reproduce_engine_atom_and_structure_kernels(water_peroxide):
    """The one-call route used by the benchmark and the app: same layout and values as KernelResult."""
    h = Hypers(density_scaling=None, nu_max=3, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.5, nu1_route="basis")
    engine = WignerKernel(h).compute(water_peroxide, atomic=True)
    fk = F.feature_kernels(water_peroxide, h)
    np.testing.assert_array_equal(fk.K_atomic[0], engine.K_atomic[0])
    np.testing.assert_allclose(fk.K[0], engine.K[0])
    for nu in (1, 2, 3):
        assert relative_deviation(fk.K_atomic[nu], engine.K_atomic[nu]) < 1e-8, nu
        assert relative_deviation(fk.K[nu], engine.K[nu]) < 1e-8, nu
    assert fk.n_features[1:] == [F.n_invariant_features(nu, fk.n_radial, 2, 2) for nu in (1, 2, 3)]


def test_nu2_is_8pi2_times_the_power_spectrum_kernel(water_peroxide):
    """ν=2 against a CG-free power spectrum p_l[q, q'] = Σ_m c_qlm c_q'lm (MATH.md §10): k² = 8π² Σ_l p·p'/(2l+1)."""
    h = Hypers(density_scaling=None, nu_max=2, lambda_max=3, cutoff=3.0, cutoff_width=0.5, density_width=0.5, nu1_route="basis")
    engine = WignerKernel(h).compute(water_peroxide, atomic=True).K_atomic
    dens = F.density_features(water_peroxide, h)
    same = dens.numbers[:, None] == dens.numbers[None, :]
    ps = np.concatenate([np.einsum("iqm,ipm->iqp", c, c).reshape(len(c), -1) / math.sqrt(2 * l + 1)
                         for l, c in enumerate(dens.blocks)], axis=1)
    assert relative_deviation(EIGHT_PI2 * (ps @ ps.T) * same, engine[2]) < 1e-8
    # the ν=1 invariant is the l=0 density overlap
    c0 = dens.blocks[0][:, :, 0]
    assert relative_deviation(EIGHT_PI2 * (c0 @ c0.T) * same, engine[1]) < 1e-8
    # and the CG-coupled ν=2 invariants are the power spectrum itself, up to one sign per l
    feats = F.body_ordered_features(dens, 2).invariants[2]
    np.testing.assert_allclose(np.abs(feats).sum(1), np.abs(ps).sum(1), rtol=1e-12)


def test_nu4_matches_engine_with_engine_truncation_and_not_when_complete(carbon_clusters):
    h = Hypers(density_scaling=None, nu_max=4, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=1.0, nu1_route="basis")
    engine = WignerKernel(h).compute(carbon_clusters, atomic=True).K_atomic
    dens = F.density_features(carbon_clusters, h)
    assert len(dens.species) == 1
    for truncation in ("engine", "complete"):
        feats = F.body_ordered_features(dens, 4, truncation=truncation)
        dev = [relative_deviation(EIGHT_PI2 * F.linear_kernel(feats.invariants[nu], dens.numbers), engine[nu])
               for nu in (1, 2, 3, 4)]
        assert max(dev[:3]) < 1e-8, (truncation, dev)
        if truncation == "engine":
            assert dev[3] < 1e-8, dev
        else:
            # intermediates L < λ ≤ 2L at order 2 feed order 3 and change ∫h_L⁴ (MATH.md §6)
            assert dev[3] > 1e-5, dev


# ==========================================================================================================
# counts, memory and symmetry of the features themselves
# ==========================================================================================================
def test_counts_formula_matches_computed_arrays_and_closed_forms(water_peroxide):
    h = Hypers(density_scaling=None, nu_max=3, lambda_max=3, cutoff=3.0, cutoff_width=0.5, density_width=0.5)
    for n_radial in (None, 1, 3):
        dens = F.density_features(water_peroxide, h, n_radial=n_radial)
        # every block of every order only for the small bases (the full one has ~10⁶ equivariant features)
        feats = F.body_ordered_features(dens, 3, keep_equivariant=n_radial is not None)
        n_s, nr, L = len(dens.species), dens.n_radial, h.lambda_max
        N = n_s * nr
        for nu in (1, 2, 3):
            assert feats.invariants[nu].shape == (dens.n_environments,
                                                  F.n_invariant_features(nu, nr, n_s, L))
            if feats.equivariants is not None:
                counts = F.feature_counts(nu, nr, n_s, L)
                assert {k: v.shape[1] for k, v in feats.equivariants[nu].items()} == counts
        # closed forms, independent of the coupling schedule
        assert F.n_invariant_features(1, nr, n_s, L) == N[0]
        assert F.n_invariant_features(2, nr, n_s, L) == int((N**2).sum())
        triples = sum(N[a] * N[b] * N[c] for a in range(L + 1) for b in range(L + 1) for c in range(L + 1)
                      if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0)
        assert F.n_invariant_features(3, nr, n_s, L) == triples
    # blocks present (MATH.md §5): ν=2 has (0,+1) but not (0,−1); ν=3 has all 2L+2
    c2, c3 = F.feature_counts(2, 2, 1, 3), F.feature_counts(3, 2, 1, 3)
    assert (0, -1) not in c2 and (1, -1) in c2 and len(c2) == 2 * 3 + 1
    assert len(c3) == 2 * 3 + 2
    # exponential in ν, polynomial in the basis: ratio N-independent paths × N
    seq = [F.n_invariant_features(nu, 4, 1, 2) for nu in range(1, 7)]
    assert all(b > 4 * a for a, b in zip(seq, seq[1:]))
    assert F.n_invariant_features(4, 3, 1, 2, truncation="complete") > F.n_invariant_features(4, 3, 1, 2)
    with pytest.raises(InputError):
        F.n_invariant_features(2, 0, 1, 2)
    with pytest.raises(InputError):
        F.n_invariant_features(2, [3, 3], 1, 2)


def test_memory_estimate_tracks_allocations_and_budget_refuses_before_work(water_peroxide):
    import tracemalloc

    h = Hypers(density_scaling=None, nu_max=3, lambda_max=3, cutoff=3.0, cutoff_width=0.5, density_width=0.5)
    dens = F.density_features(water_peroxide, h, n_radial=4)
    tracemalloc.start()
    try:
        feats = F.body_ordered_features(dens, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    est = F.estimate_memory(dens.n_environments, 3, tuple(dens.n_radial), len(dens.species), 3,
                            chunk_size=feats.estimate["chunk_size"], kernels=False)
    assert est["invariants"] == 8 * dens.n_environments * sum(a.shape[1] for a in feats.invariants.values())
    assert 0.5 * est["total"] < peak < 1.5 * est["total"], (peak, est)
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        F.feature_kernels(water_peroxide, h, n_radial=4, memory_budget=est["invariants"] // 2)


def test_features_transform_with_their_parity_labels():
    """A(Q·X) = A(X)·D^λ(Q)ᵀ for proper Q; under inversion each block gets σ(−1)^λ (MATH.md §5)."""
    atoms = _rattled("CH3OH", 3)
    h = Hypers(density_scaling=None, nu_max=3, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.5)

    def blocks(a):
        return F.body_ordered_features(F.density_features([a], h, n_radial=2), 3,
                                       keep_equivariant=True).equivariants

    ref = blocks(atoms)
    rot = random_rotation(np.random.default_rng(5))
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    inverted = atoms.copy()
    inverted.positions = -atoms.positions
    got_rot, got_inv = blocks(moved), blocks(inverted)
    for nu in (1, 2, 3):
        for (lam, sigma), a in ref[nu].items():
            scale = np.abs(a).max()
            assert scale > 1e-8, f"block {(lam, sigma)} of nu={nu} vanishes; the check would be vacuous"
            d = wigner_d_real(lam, rot)
            assert np.abs(got_rot[nu][(lam, sigma)] - a @ d.T).max() < 1e-9 * scale
            assert np.abs(got_inv[nu][(lam, sigma)] - sigma * (-1) ** lam * a).max() < 1e-9 * scale
    # the pseudoscalars of ν=3 flip, the invariants do not
    assert (0, -1) in ref[3] and np.abs(ref[3][(0, -1)]).max() > 1e-6


def test_feature_kernels_with_species_coupling_and_hydrogen_weight_reproduce_the_engine():
    """With neighbour elements coupled (κ = U Uᵀ mixes the density channels), explicit features still give
    8π² × their linear kernel = the Wigner kernel, for molecules with C, N and O neighbours."""
    from ase.build import molecule

    frames = [molecule("HCN"), molecule("CH3OH"), molecule("NH3"), molecule("H2O")]
    h = Hypers(density_scaling=None, nu_max=3, lambda_max=2, cutoff=3.0, cutoff_width=0.5, density_width=0.5,
               species_coupling=0.5)
    engine = WignerKernel(h).compute(frames, atomic=True)
    fk = F.feature_kernels(frames, h)
    plain = WignerKernel(h.replace(species_coupling=0.0)).compute(frames, atomic=True)
    for nu in (1, 2, 3):
        assert relative_deviation(fk.K_atomic[nu], engine.K_atomic[nu]) < 1e-8, nu
        assert relative_deviation(plain.K_atomic[nu], engine.K_atomic[nu]) > 1e-3, nu
    # hydrogen neighbours weighted by w_H enter the explicit features the same way
    hw = h.replace(hydrogen_weight=0.6)
    fk = F.feature_kernels(frames, hw)
    engine = WignerKernel(hw).compute(frames, atomic=True)
    for nu in (1, 2, 3):
        assert relative_deviation(fk.K_atomic[nu], engine.K_atomic[nu]) < 1e-8, nu
    # and hydrogen centres weighted by w_c in the structure sums (the default 0.3 above; the plain sum here)
    hc = hw.replace(hydrogen_center_weight=1.0)
    fk_c = F.feature_kernels(frames, hc)
    engine_c = WignerKernel(hc).compute(frames)
    for nu in (0, 1, 2, 3):
        assert relative_deviation(fk_c.K[nu], engine_c.K[nu]) < 1e-8, nu
        assert relative_deviation(fk_c.K[nu], fk.K[nu]) > 1e-2, nu
