"""Internal building blocks of the engine against scipy and plain-NumPy oracles."""

import json
import math
import subprocess
import sys
import threading

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from scipy.special import ive, sph_harm_y

from naive import wigner_invariants, wigner_tensor_blocks
from wkviz import Hypers
from wkviz.engine.density import block_offsets, radial_kernel, scaled_spherical_in
from wkviz.errors import Cancelled, InputError, MemoryBudgetError, WkvizError
from wkviz.engine.kernels import KernelResult, WignerKernel
from wkviz.engine.neighbors import build_environments, cutoff_function
from wkviz.engine.spherical import (cartesian_to_lambda1, random_rotation, real_cg, real_spherical_harmonics,
                             wigner_d_real)
from wkviz.engine.wigner import build_plan, iterate


def test_real_spherical_harmonics_match_scipy_condon_shortley():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3))
    v[0] = [0, 0, 2.0]  # the pole
    r = np.linalg.norm(v, axis=1)
    theta, phi = np.arccos(v[:, 2] / r), np.arctan2(v[:, 1], v[:, 0])
    ours = real_spherical_harmonics(6, v)
    for l in range(7):
        for m in range(-l, l + 1):
            yc = sph_harm_y(l, abs(m), theta, phi)
            ref = yc.real if m == 0 else math.sqrt(2) * (-1) ** m * (yc.real if m > 0 else yc.imag)
            np.testing.assert_allclose(ours[:, l * l + l + m], ref, atol=1e-13)
    # MATH.md §2: Y_1 ∝ (y, z, x)
    np.testing.assert_allclose(ours[:, 1:4] / math.sqrt(3 / (4 * math.pi)), v[:, [1, 2, 0]] / r[:, None], atol=1e-14)


def test_scaled_bessel_matches_scipy_to_1e13():
    x = np.concatenate([[0.0], np.logspace(-12, 0, 300), np.linspace(0.01, 700, 4000)])
    ours = scaled_spherical_in(10, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.stack([np.sqrt(np.pi / (2 * x)) * ive(l + 0.5, x) for l in range(11)], axis=1)
    ref[0] = [1.0] + [0.0] * 10  # x → 0 limit: i_0 = 1, i_l = 0
    nz = ref != 0
    rel = np.abs(ours[nz] - ref[nz]) / np.abs(ref[nz])
    assert rel.max() < 1e-13
    assert np.all(np.isfinite(ours))


def test_real_cg_couple_wigner_matrices():
    rng = np.random.default_rng(3)
    for _ in range(2):
        q = random_rotation(rng)
        for l1 in range(4):
            for l2 in range(4):
                lhs = np.kron(wigner_d_real(l1, q), wigner_d_real(l2, q))
                rhs = sum(real_cg(l1, l2, lam).reshape(-1, 2 * lam + 1) @ wigner_d_real(lam, q)
                          @ real_cg(l1, l2, lam).reshape(-1, 2 * lam + 1).T
                          for lam in range(abs(l1 - l2), l1 + l2 + 1))
                np.testing.assert_allclose(lhs, rhs, atol=1e-12)
    # stacked over λ the coefficients are orthogonal
    stack = np.concatenate([real_cg(2, 3, lam).reshape(35, -1) for lam in range(1, 6)], axis=1)
    np.testing.assert_allclose(stack.T @ stack, np.eye(35), atol=1e-13)


def test_wigner_d_is_a_representation_of_o3():
    rng = np.random.default_rng(4)
    q1, q2 = random_rotation(rng), random_rotation(rng, improper=True)
    for l in range(5):
        np.testing.assert_allclose(wigner_d_real(l, q1 @ q2), wigner_d_real(l, q1) @ wigner_d_real(l, q2),
                                   atol=1e-12)
        np.testing.assert_allclose(wigner_d_real(l, -np.eye(3)), (-1) ** l * np.eye(2 * l + 1), atol=1e-12)
    p = cartesian_to_lambda1()
    np.testing.assert_allclose(wigner_d_real(1, q2), p @ q2 @ p.T, atol=1e-12)


@pytest.mark.parametrize("lambda_max,nu_max", [(1, 5), (2, 4), (3, 4), (3, 3)])
@pytest.mark.parametrize("normalization", ["exact", "reference"])
def test_numba_iteration_matches_numpy_oracle(lambda_max, nu_max, normalization):
    rng = np.random.default_rng(lambda_max * 10 + nu_max)
    n_pairs = 37  # not a multiple of the chunk size
    boff = block_offsets(lambda_max)
    seed = rng.normal(size=(n_pairs, boff[-1])) * 0.3
    for schedule in ("full", "reduced"):
        plan = build_plan(lambda_max, nu_max, schedule, normalization, ())
        got = iterate(plan, seed)
        for p in range(n_pairs):
            blocks = [seed[p, boff[l]:boff[l + 1]].reshape(2 * l + 1, 2 * l + 1) for l in range(lambda_max + 1)]
            want, _ = wigner_invariants(blocks, nu_max, lambda_max, normalization)
            np.testing.assert_allclose(got[p, :nu_max], want, rtol=1e-11, atol=1e-11 * np.abs(want).max())


def test_numba_tensor_outputs_match_numpy_oracle():
    rng = np.random.default_rng(7)
    L, nu_max = 2, 3
    boff = block_offsets(L)
    seed = rng.normal(size=(5, boff[-1]))
    plan = build_plan(L, nu_max, "reduced", "exact", (1, 2))
    got = iterate(plan, seed)
    for lam in (1, 2):
        d = 2 * lam + 1
        for p in range(5):
            blocks = [seed[p, boff[l]:boff[l + 1]].reshape(2 * l + 1, 2 * l + 1) for l in range(L + 1)]
            want = wigner_tensor_blocks(blocks, nu_max, L, lam)
            for nu in range(1, nu_max + 1):
                idx = [plan.output_index("tensor", nu, lam, mu, mu2) for mu in range(d) for mu2 in range(d)]
                np.testing.assert_allclose(got[p, idx].reshape(d, d), want[nu - 1], atol=1e-10)


def test_reduced_plan_is_cheaper_and_counts_match_math_md():
    # MATH.md §11: L=3 step 1→2 has 15 875 CG products (before any merging), reduced ν_max=4 adds 84 + 167
    full = build_plan(3, 4, "full", "exact", ())
    reduced = build_plan(3, 4, "reduced", "exact", ())
    assert reduced.n_terms_step < full.n_terms_step / 2


def test_cutoff_function_is_smooth_shifted_cosine():
    r = np.array([0.0, 3.4, 3.5, 3.75, 4.0, 4.5])
    np.testing.assert_allclose(cutoff_function(r, 4.0, 0.5), [1, 1, 1, 0.5, 0, 0], atol=1e-15)


def test_neighbours_exclude_centre_but_keep_periodic_images():
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 2.5, pbc=True)
    env = build_environments([atoms], cutoff=2.6, cutoff_width=0.5)
    # six images at 2.5 Å, none at 0
    assert env.neighbor_counts()[0] == 6
    assert np.all(env.distances > 2.4)
    iso = build_environments([Atoms("Ar", positions=[[0, 0, 0]])], cutoff=5, cutoff_width=0.5)
    assert iso.neighbor_counts()[0] == 0


def test_radial_kernel_is_positive_definite():
    r = np.linspace(0.1, 5, 40)
    k = radial_kernel(3, r[:, None], r[None, :], 0.3)
    for l in range(4):
        assert np.linalg.eigvalsh(k[:, :, l]).min() > -1e-12


def test_hypers_validation_messages():
    with pytest.raises(ValueError, match="nu_max must be between 1 and 12"):
        Hypers(density_width=0.3, density_scaling=None, nu_max=0)
    with pytest.raises(ValueError, match="cutoff_width"):
        Hypers(density_width=0.3, density_scaling=None, cutoff=3.0, cutoff_width=4.0)
    with pytest.raises(ValueError, match="schedule"):
        Hypers(density_width=0.3, density_scaling=None, schedule="fast")
    h = Hypers(density_width=0.3, nu_max=3, density_scaling=2.0)
    assert Hypers.from_json(h.to_json()) == h
    assert hash(h) == hash(Hypers.from_dict(h.to_dict()))


def test_radial_weight_hypers_validation_round_trip_and_old_files():
    with pytest.raises(ValueError, match="radial_scale must be between"):
        Hypers(radial_scale=0.05)
    with pytest.raises(ValueError, match="radial_exponent must be between"):
        Hypers(radial_exponent=0)
    h = Hypers(radial_scale=2.0, radial_exponent=4)
    assert Hypers.from_json(h.to_json()) == h and h.digest() != h.replace(radial_scale=None).digest()
    np.testing.assert_allclose(h.weight_at([0.0, 2.0, 4.0]), [1.0, 0.5, 1.0 / 17.0])
    assert np.all(h.replace(radial_scale=None).weight_at([1.0, 3.0]) == 1.0)
    # a kernel file written before the weight existed was computed without it
    old = {k: v for k, v in h.to_dict().items() if k not in ("radial_scale", "radial_exponent", "species_coupling")}
    assert Hypers.from_dict(old).radial_scale is None and Hypers.from_dict(old).species_coupling == 0.0
    with pytest.raises(ValueError, match="species_coupling must be at least 0 and below 1"):
        Hypers(species_coupling=1.0)
    with pytest.raises(ValueError, match=r"species_coupling must be a number, got 'strong'"):
        Hypers(species_coupling="strong")
    with pytest.raises(ValueError, match=r"radial_scale must be a number in Å or None, got 'far'"):
        Hypers(radial_scale="far")
    with pytest.raises(ValueError, match="hydrogen_weight must be between 0.05 and 5"):
        Hypers(hydrogen_weight=0.0)
    assert h.digest() != h.replace(hydrogen_weight=0.5).digest()
    assert Hypers.from_dict({k: v for k, v in h.to_dict().items() if k != "hydrogen_weight"}).hydrogen_weight == 1.0
    with pytest.raises(ValueError, match="hydrogen_center_weight must be between 0 and 5"):
        Hypers(hydrogen_center_weight=-0.1)
    assert h.digest() != h.replace(hydrogen_center_weight=0.5).digest()
    old = {k: v for k, v in h.to_dict().items() if k != "hydrogen_center_weight"}
    assert Hypers.from_dict(old).hydrogen_center_weight == 1.0  # kernels stored before it existed: plain sums


def test_radial_weight_cli_flags():
    import argparse

    from wkviz.cli.common import add_hyper_flags, hypers_from_args

    ap = argparse.ArgumentParser()
    add_hyper_flags(ap)
    assert hypers_from_args(ap.parse_args([])) == Hypers()
    h = hypers_from_args(ap.parse_args(["--radial-scale", "none"]))
    assert h.radial_scale is None
    h = hypers_from_args(ap.parse_args(["--radial-scale", "2.5", "--radial-exponent", "4", "--species-coupling", "0.3",
                                        "--hydrogen-weight", "0.7", "--hydrogen-center-weight", "0.5"]))
    assert (h.radial_scale, h.radial_exponent, h.species_coupling, h.hydrogen_weight) == (2.5, 4.0, 0.3, 0.7)
    assert h.hydrogen_center_weight == 0.5
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Hypers.from_dict({"nu": 3})


def test_isolated_atoms_and_single_species():
    frames = [Atoms("Ne", positions=[[0, 0, 0]]), molecule("H2"), Atoms("Ne2", positions=[[0, 0, 0], [0, 0, 2.0]])]
    res = WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=3, cutoff=3.0)).compute(frames)
    assert np.all(np.isfinite(res.K))
    # the isolated Ne has no neighbours: only the composition kernel sees it
    assert np.all(res.K[1:, 0, :] == 0)
    assert res.K[0, 0, 2] == 2.0
    assert res.K[1, 2, 2] > 0


def test_memory_budget_refuses_before_starting():
    frames = [molecule("CH4")] * 40
    with pytest.raises(MemoryBudgetError, match="GiB"):
        WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=2), memory_budget=10_000).compute(frames, atomic=True)


def test_progress_reports_and_cancel_stops():
    frames = [molecule(n) for n in ("CH4", "C2H6", "CH3OH", "C6H6")] * 3
    seen = []
    WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=2), tile_size=8).compute(frames, progress=lambda f, eta: seen.append((f, eta)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert seen[-1][1] == pytest.approx(0.0, abs=1e-9)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=2)).compute(frames, cancel=stop)


def test_one_engine_lock_reentrant_for_a_job_and_waited_for_by_other_threads():
    from wkviz import cache, runtime

    assert cache.ENGINE_LOCK is runtime.ENGINE_LOCK and cache.engine_lock is runtime.engine_lock
    h = Hypers(density_width=0.3, density_scaling=None, nu_max=2)
    frames = [molecule("H2O"), molecule("NH3")]
    ref = WignerKernel(h).compute(frames)
    finished = threading.Event()
    other = threading.Thread(target=lambda: (WignerKernel(h).compute(frames), finished.set()))
    with runtime.engine_lock():  # what a BackgroundJob holds for its whole run
        res = WignerKernel(h).compute(frames)  # the engine takes the lock again in the same thread
        other.start()
        assert not finished.wait(1.0), "another thread's engine call must wait for the holder"
    other.join(60)
    assert finished.is_set()
    np.testing.assert_array_equal(res.K, ref.K)


def test_seed_strategies_share_one_interface_and_give_the_same_kernel():
    from wkviz.engine.nu1 import BasisSeed, ExactSeed, seed_for

    h = Hypers(density_width=0.3, density_scaling=None, nu_max=2)
    assert isinstance(seed_for(h), BasisSeed) and isinstance(seed_for(h.replace(nu1_route="exact")), ExactSeed)
    frames = [molecule(n) for n in ("CH4", "H2O", "NH3")]
    basis = WignerKernel(h).compute(frames, frames[1:], atomic=True)
    exact = WignerKernel(h.replace(nu1_route="exact")).compute(frames, frames[1:], atomic=True)
    assert "radial_basis" in basis.timings and "radial_basis" not in exact.timings
    np.testing.assert_allclose(basis.K, exact.K, rtol=1e-8, atol=1e-9 * np.abs(exact.K).max())


def test_a_radial_basis_for_other_hypers_is_refused():
    from wkviz.engine.density import radial_basis

    h = Hypers(density_width=0.3, density_scaling=None, nu_max=2, lambda_max=3)
    with pytest.raises(InputError, match="lambda_max"):
        WignerKernel(h, radial_basis=radial_basis(h.replace(lambda_max=2)))


def test_tiles_and_symmetric_request_agree_with_plain_request():
    frames = [molecule(n) for n in ("CH4", "C2H6", "CH3OH", "C6H6", "H2O", "NH3")]
    h = Hypers(density_width=0.3, density_scaling=None, nu_max=3)
    ref = WignerKernel(h).compute(frames, [f.copy() for f in frames], atomic=True)
    small = WignerKernel(h, tile_size=3).compute(frames, atomic=True)
    np.testing.assert_allclose(small.K, ref.K, rtol=1e-12)
    np.testing.assert_allclose(small.K_atomic, ref.K_atomic, rtol=1e-12, atol=1e-12 * ref.K_atomic.max())


def test_npz_roundtrip(tmp_path):
    res = WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=2)).compute([molecule("H2O"), molecule("NH3")], tensor_rank=1)
    res.to_npz(tmp_path / "k.npz")
    back = KernelResult.from_npz(tmp_path / "k.npz")
    np.testing.assert_array_equal(back.K, res.K)
    np.testing.assert_array_equal(back.K_vector, res.K_vector)
    assert back.hypers == res.hypers


def test_rank_two_needs_lambda_max_two():
    with pytest.raises(WkvizError, match="lambda_max"):
        WignerKernel(Hypers(density_width=0.3, density_scaling=None, lambda_max=1, nu_max=2)).compute([molecule("H2O")], tensor_rank=2)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wkviz", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_kernels_contract(tmp_path):
    from ase.io import write

    a = tmp_path / "a.xyz"
    b = tmp_path / "b.extxyz"
    write(a, [molecule("H2O"), molecule("CH4"), molecule("NH3")])
    write(b, [molecule("CH3OH"), molecule("C2H6")])
    out = tmp_path / "K.npz"
    proc = _cli("kernels", str(a), "--other", str(b), "--atomic", "--tensor-rank", "1", "--tensor-rank", "2",
                "--nu-max", "3", "--cutoff", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "%" in proc.stderr  # progress on stderr
    with np.load(out, allow_pickle=False) as d:
        assert d["K"].shape == (4, 3, 2)
        assert d["K_atomic"].shape == (4, 3 + 5 + 4, 6 + 8)
        assert d["K_vector"].shape == (4, 3, 3, 2, 3)
        assert d["K_tensor"].shape == (4, 3, 5, 2, 5)
        assert list(d["species"]) == [1, 6, 7, 8]
        hypers = json.loads(str(d["hypers"]))
        assert hypers["nu_max"] == 3 and hypers["cutoff"] == 4.0
        # composition kernel: H2O·CH3OH = 2·4 (H, each hydrogen counting its centre weight w_c) + 1·1 (O)
        w_c = hypers["hydrogen_center_weight"]
        assert w_c != 1.0 and d["K"][0, 0, 0] == pytest.approx(2 * 4 * w_c**2 + 1, rel=1e-14)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\n\nH 0 0 0\n")
    for args in (["kernels", str(tmp_path / "missing.xyz"), "--out", "k.npz"],
                 ["kernels", str(bad), "--out", str(tmp_path / "k.npz")],
                 ["kernels", str(bad), "--nu-max", "40", "--out", str(tmp_path / "k.npz")]):
        proc = _cli(*args)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
