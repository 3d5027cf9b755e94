"""Energy-and-force sparse GP (wkviz.models.forces): forces are −dE/dr of its own energy, rotate with the
structure, sum to zero on a cluster; the stress is the strain derivative; save/load without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from wkviz.data.samples import load_sample
from wkviz.engine.spherical import random_rotation
from wkviz.errors import InputError
from wkviz.hypers import Hypers
from wkviz.models.forces import EnergyForceModel, forces_of

HYPERS = Hypers(nu_max=2, lambda_max=2, cutoff=4.0, cutoff_width=0.5, density_width=0.5, radial_scale=None)


@pytest.fixture(scope="module")
def gold():
    frames = load_sample("gold")
    clusters = [a for a in frames if not a.pbc.any() and len(a) <= 14][:12]
    cells = [a for a in frames if a.pbc.any() and len(a) <= 8][:6]
    return clusters, cells


@pytest.fixture(scope="module")
def model(gold):
    clusters, cells = gold
    train = clusters[:8] + cells[:4]
    E = [a.get_potential_energy() for a in train]
    F = [forces_of(a) for a in train]
    return EnergyForceModel(HYPERS, n_active=25).fit(train, E, F)


def test_forces_are_minus_the_energy_gradient(model, gold):
    clusters, cells = gold
    for atoms in (clusters[-1], cells[-1]):
        _, F = model.predict([atoms])
        for a in (0, len(atoms) - 1):
            for x in range(3):
                # five-point stencil: the energy sums large, cancelling terms, so a wider step keeps roundoff out
                e = {}
                for k in (-2, -1, 1, 2):
                    moved = atoms.copy()
                    moved.positions[a, x] += k * 1e-3
                    e[k] = model.predict([moved], forces=False)[0]
                fd = -(-e[2] + 8 * e[1] - 8 * e[-1] + e[-2]) / 12e-3
                assert abs(fd - F[0][a, x]) <= 1e-6 * np.abs(F[0]).max()


def test_rotated_structure_rotated_forces_and_zero_net_force(model, gold):
    clusters, _ = gold
    atoms = clusters[-2]
    E, F = model.predict([atoms])
    Q = random_rotation(np.random.default_rng(1))
    rot = atoms.copy()
    rot.positions = atoms.positions @ Q.T
    E2, F2 = model.predict([rot])
    assert abs(E2[0] - E[0]) <= 1e-8 * abs(E[0])
    assert np.abs(F2[0] - F[0] @ Q.T).max() <= 1e-8 * np.abs(F[0]).max()
    assert np.abs(F[0].sum(axis=0)).max() <= 1e-10 * np.abs(F[0]).max()


def test_stress_is_the_strain_derivative_over_the_volume(model, gold):
    _, cells = gold
    atoms = cells[-1]
    _, _, S = model.predict([atoms], stress=True)
    for a, b in [(0, 0), (1, 2)]:
        vals = []
        for sign in (1, -1):
            Fm = np.eye(3)
            Fm[a, b] += sign * 1e-5
            Fm[b, a] += sign * 1e-5 if a != b else 0.0
            at = atoms.copy()
            at.set_cell(atoms.cell[:] @ Fm.T, scale_atoms=False)
            at.positions = atoms.positions @ Fm.T
            vals.append(model.predict([at], forces=False)[0])
        fd = (vals[0] - vals[1]) / 2e-5 / atoms.get_volume()
        expect = S[0][a, b] * (2 if a != b else 1)  # a symmetric strain moves both (a, b) and (b, a)
        assert abs(fd - expect) <= 1e-6 * np.abs(S[0]).max()


def test_forces_improve_the_fit_on_training_forces(model, gold):
    clusters, cells = gold
    train = clusters[:8] + cells[:4]
    E = [a.get_potential_energy() for a in train]
    energy_only = EnergyForceModel(HYPERS, n_active=25).fit(train, E)
    F_true = np.concatenate([forces_of(a) for a in train])
    err = {}
    for name, m in (("energy", energy_only), ("forces", model)):
        _, F = m.predict(train)
        err[name] = np.abs(np.concatenate(F) - F_true).mean()
    assert err["forces"] < 0.5 * err["energy"]
    assert model.sigma_force_ > 0 and energy_only.sigma_force_ is None


@pytest.mark.parametrize("with_forces", [True, False])
def test_evidence_gradient_equals_finite_differences_and_the_fit_is_its_maximum(model, gold, with_forces):
    """The search runs on the analytic gradient of the evidence: it must equal central differences of the evidence
    (away from the optimum, every coordinate: c_ν, σ_E, σ_F), and the chosen θ must be a maximum."""
    clusters, cells = gold
    train = clusters[:8] + cells[:4]
    E = [a.get_potential_energy() for a in train]
    m = model if with_forces else EnergyForceModel(HYPERS, n_active=25).fit(train, E)
    theta = m.theta_ + np.random.default_rng(0).normal(scale=0.5, size=m.theta_.shape)
    ev, alpha, grad = m._solve(theta, gradient=True)
    assert ev == m._solve(theta)[0] and np.array_equal(alpha, m._solve(theta)[1])
    h = 1e-5
    fd = np.array([(m._solve(theta + d)[0] - m._solve(theta - d)[0]) / (2 * h) for d in h * np.eye(len(theta))])
    assert np.abs(grad - fd).max() <= 1e-5 * np.abs(fd).max()
    assert np.abs(fd).max() > 1e-2  # a point where the gradient is not trivially zero
    best = m._solve(m.theta_evidence_)[0]
    for step in h * 100 * np.eye(len(theta)):
        assert m._solve(m.theta_evidence_ + step)[0] <= best and m._solve(m.theta_evidence_ - step)[0] <= best


def test_save_load_round_trip_without_pickle(model, gold, tmp_path):
    clusters, _ = gold
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert {"meta", "active_numbers", "active_positions", "active_lengths", "active_weights"} <= set(data.files)
    again = EnergyForceModel.load(path)
    assert again.sigma_per_atom is model.sigma_per_atom is True  # the default, kept by the file
    assert again.energy_noise == "cv" and again.energy_noise_cv_ == model.energy_noise_cv_
    E1, F1 = model.predict(clusters[-3:])
    E2, F2 = again.predict(clusters[-3:])
    assert np.array_equal(E1, E2) and all(np.array_equal(a, b) for a, b in zip(F1, F2))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(2))
    with pytest.raises(InputError, match="not a wkviz energy-force model"):
        EnergyForceModel.load(bad)


def test_per_atom_energy_noise_is_sigma_times_root_n():
    """With every structure of n atoms, the per-atom noise σ_E·√n is a per-structure noise: the evidence surface is
    the same one, shifted by log √n in log σ_E, so both choose the same per-structure noise, evidence and model."""
    frames = [a for a in load_sample("gold") if not a.pbc.any() and len(a) == 13][:8]
    E = [a.get_potential_energy() for a in frames]
    F = [forces_of(a) for a in frames]
    per_atom = EnergyForceModel(HYPERS, n_active=15).fit(frames[:6], E[:6], F[:6])
    per_structure = EnergyForceModel(HYPERS, n_active=15, sigma_per_atom=False).fit(frames[:6], E[:6], F[:6])
    assert per_atom.sigma_energy_ * np.sqrt(13) == pytest.approx(per_structure.sigma_energy_, rel=2e-3)
    assert per_atom.sigma_force_ == pytest.approx(per_structure.sigma_force_, rel=2e-3)
    ev = per_structure.log_evidence_
    assert per_atom.log_evidence_ == pytest.approx(ev, abs=1e-4 * abs(ev))  # the Σ log n_i term of log |Σ| included
    e1, e2 = per_atom.predict(frames[6:], forces=False), per_structure.predict(frames[6:], forces=False)
    assert np.abs(e1 - e2).max() <= 1e-2 * np.abs(np.asarray(E[6:]) - np.mean(E[:6])).max()
    assert per_atom.summary()["sigma_per_atom"] and not per_structure.summary()["sigma_per_atom"]


def test_bad_inputs(gold):
    clusters, _ = gold
    with pytest.raises(InputError, match="energies for"):
        EnergyForceModel(HYPERS, n_active=5).fit(clusters[:3], [1.0, 2.0])
    with pytest.raises(InputError, match="has no forces of shape"):
        EnergyForceModel(HYPERS, n_active=5).fit(clusters[:2], [1.0, 2.0], [np.zeros((2, 3)), None])
    with pytest.raises(InputError, match="not fitted"):
        EnergyForceModel(HYPERS).predict(clusters[:1])


def test_ase_calculator_energy_forces_and_numerical_stress(model, gold, tmp_path):
    from ase.calculators.fd import calculate_numerical_stress

    from wkviz.calculator import WignerCalculator

    clusters, cells = gold
    model.save(tmp_path / "m.npz")
    calc = WignerCalculator.load(tmp_path / "m.npz")
    atoms = cells[-1].copy()
    atoms.calc = calc
    E, F, S = model.predict([atoms], stress=True)
    assert atoms.get_potential_energy() == pytest.approx(E[0], rel=1e-12)
    assert np.allclose(atoms.get_forces(), F[0], rtol=0, atol=1e-12)
    numerical = calculate_numerical_stress(atoms, eps=1e-4, force_consistent=False)
    assert np.abs(atoms.get_stress() - numerical).max() <= 1e-6 * np.abs(numerical).max() + 1e-9
    mol = clusters[-1].copy()
    mol.calc = WignerCalculator(model)
    assert np.abs(mol.get_forces().sum(axis=0)).max() < 1e-9
    with pytest.raises(InputError, match="stress needs a periodic cell"):
        mol.get_stress()
    with pytest.raises(InputError, match="needs a fitted model"):
        WignerCalculator(EnergyForceModel(HYPERS))


def test_several_elements_with_qm9_default_weights_forces_are_the_energy_gradient():
    """Per-element baseline and active sets, species coupling and hydrogen weights (the QM9 defaults)."""
    import ase.build
    from ase.calculators.emt import EMT

    frames = []
    for k, name in enumerate(["CH4", "H2O", "CH3OH", "CH4", "H2O", "CH3OH"]):
        atoms = ase.build.molecule(name)
        atoms.rattle(stdev=0.08, seed=k)
        atoms.calc = EMT()
        frames.append(atoms)
    E = [a.get_potential_energy() for a in frames]
    F = [a.get_forces() for a in frames]
    model = EnergyForceModel(Hypers(nu_max=2, lambda_max=2), n_active=12).fit(frames[:5], E[:5], F[:5])
    assert set(model.baseline_) == {1, 6, 8}
    atoms = frames[5].copy()
    _, Fp = model.predict([atoms])
    Q = random_rotation(np.random.default_rng(4))
    rot = atoms.copy()
    rot.positions = atoms.positions @ Q.T
    assert np.abs(model.predict([rot])[1][0] - Fp[0] @ Q.T).max() <= 1e-8 * np.abs(Fp[0]).max()
    for a, x in [(0, 2), (3, 0)]:
        e = {}
        for k in (-2, -1, 1, 2):
            moved = atoms.copy()
            moved.positions[a, x] += k * 1e-3
            e[k] = model.predict([moved], forces=False)[0]
        fd = -(-e[2] + 8 * e[1] - 8 * e[-1] + e[-2]) / 12e-3
        assert abs(fd - Fp[0][a, x]) <= 1e-6 * np.abs(Fp[0]).max()
    with pytest.raises(InputError, match="not trained on element"):
        model.predict([ase.build.molecule("NH3")])


def test_energy_noise_by_cross_validation_lowers_sigma_e_to_the_best_cv_step(model, gold):
    """energy_noise="cv" (default): σ_E is the evidence's or below it, at the step with the smallest product of the
    cross-validated energy and force RMSEs; "evidence" keeps the evidence's maximum. Both are described in words."""
    from wkviz.models.forces import describe_noise_choice

    cv = model.energy_noise_cv_
    n = len(model.nus_)
    assert len(cv) >= 2 and cv[0]["sigma_energy"] == pytest.approx(np.exp(model.theta_evidence_[n]))
    scores = [np.log(r["cv_rmse_energy"]) + np.log(r["cv_rmse_force"]) for r in cv]
    assert model.sigma_energy_ == pytest.approx(cv[int(np.argmin(scores))]["sigma_energy"])
    assert model.sigma_energy_ <= cv[0]["sigma_energy"] * (1 + 1e-12)
    assert model.sigma_force_ == pytest.approx(np.exp(model.theta_evidence_[n + 1]))  # σ_F stays the evidence's
    assert all(r["cv_rmse_energy"] > 0 and r["cv_rmse_force"] > 0 for r in cv)
    assert "cross-validation" in describe_noise_choice(model.summary())
    clusters, cells = gold
    train = clusters[:8] + cells[:4]
    E = [a.get_potential_energy() for a in train]
    F = [forces_of(a) for a in train]
    plain = EnergyForceModel(HYPERS, n_active=25, energy_noise="evidence").fit(train, E, F)
    assert plain.energy_noise_cv_ == [] and np.array_equal(plain.theta_, plain.theta_evidence_)
    assert plain.log_evidence_ >= model.log_evidence_ - 1e-9
    assert "chosen by the evidence" in describe_noise_choice(plain.summary())
    with pytest.raises(InputError, match="energy_noise must be one of"):
        EnergyForceModel(HYPERS, energy_noise="loo")
