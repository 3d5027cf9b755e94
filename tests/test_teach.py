"""The Teach page's experiments as library functions (wkviz.evaluation.teach): the kernel table of a teaching pair,
the kernels of a rotated molecule and the λ=1 dipole model, plus the RMSD of the MD demo.

The engine itself is checked elsewhere: every teaching pair's ν ≤ 2 degeneracy and ν=3 difference in
tests/test_data.py (``test_teaching_set_with_the_engine``), the rotation laws of K and K_vector in
tests/test_physics_invariance.py. Here the question is whether the functions pick the right atoms, columns and
blocks out of the engine's results, so every test compares against a direct ``WignerKernel.compute`` or a law
that a wrong index would break.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_molecules, make_periodic_cell
from wkviz.data import load_sample
from wkviz.engine.kernels import WignerKernel
from wkviz.engine.spherical import rotation_matrix
from wkviz.errors import InputError
from wkviz.evaluation import teach
from wkviz.evaluation.forces import trajectory_rmsd
from wkviz.hypers import Hypers

# the Teach page's settings at ν_max = 3 (the first order that tells a teaching pair apart)
PAIR_HYPERS = Hypers(nu_max=3, lambda_max=3, cutoff=4.0, cutoff_width=0.5, density_width=0.3, density_scaling=None)
# the equivariance demo's settings (ν_max 3, λ_max 2)
EQ_HYPERS = Hypers(nu_max=3, lambda_max=2, cutoff=4.0, cutoff_width=0.5)
ANGLES = (40.0, 70.0, -110.0)


def rel_err(got, want):
    want = np.asarray(want)
    scale = np.abs(want).max()
    assert scale > 0, "the reference is identically zero: the comparison would be vacuous"
    return np.abs(np.asarray(got) - want).max() / scale


# ---- 1. what a body order can see --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teaching():
    return load_sample("teaching")


def test_teaching_pair_is_a_then_b_and_names_the_pairs_on_a_bad_id(teaching):
    a, b = teach.teaching_pair(teaching, 2)
    assert (a.info["label"], b.info["label"]) == ("A", "B")
    assert int(a.info["pair"]) == int(b.info["pair"]) == 2
    with pytest.raises(InputError, match=r"teaching pair 17 has 0 structures instead of 2; choose one of \[0, 1"):
        teach.teaching_pair(teaching, 17)


@pytest.mark.parametrize("pair", [0, 4])
def test_pair_table_is_degenerate_up_to_nu2_and_distinct_at_nu3(teaching, pair):
    table = teach.pair_kernel_table(teach.teaching_pair(teaching, pair), PAIR_HYPERS)
    assert list(table.columns) == ["nu", "k(A,A)", "k(B,B)", "k(A,B)", "cosine", "distance"]
    assert table["nu"].tolist() == [1, 2, 3]
    row = {int(r["nu"]): r for _, r in table.iterrows()}
    for nu in (1, 2):
        assert abs(row[nu]["cosine"] - 1.0) < 1e-8, (nu, row[nu]["cosine"])
        # the same ν=2 features: the self-kernels agree as well
        assert row[nu]["k(A,A)"] == pytest.approx(row[nu]["k(B,B)"], rel=1e-8)
        assert row[nu]["distance"] < 1e-3
    # ν=3 tells them apart (test_data.py asserts 2 − 2·cos > 1e-3 for every pair)
    assert row[3]["cosine"] < 1.0 - 5e-4
    assert row[3]["distance"] > 0.03
    for r in row.values():
        assert r["cosine"] == pytest.approx(r["k(A,B)"] / np.sqrt(r["k(A,A)"] * r["k(B,B)"]), rel=1e-12)
        assert r["distance"] == pytest.approx(teach.kernel_distance(r["k(A,B)"], r["k(A,A)"], r["k(B,B)"]))


def _centre_last(atoms):
    """The same environment with its atoms reversed, so that the centre is the last atom."""
    out = atoms[::-1]
    out.info = dict(atoms.info, center=len(atoms) - 1 - int(atoms.info["center"]))
    return out


def test_pair_table_reads_the_centres_from_info_wherever_they_are(teaching):
    a, b = teach.teaching_pair(teaching, 1)
    assert int(a.info["center"]) == int(b.info["center"]) == 0  # the bundled convention the reversal moves
    want = teach.pair_kernel_table([a, b], PAIR_HYPERS)
    got = teach.pair_kernel_table([_centre_last(a), _centre_last(b)], PAIR_HYPERS)
    cols = ["k(A,A)", "k(B,B)", "k(A,B)", "cosine"]
    assert rel_err(got[cols].to_numpy(), want[cols].to_numpy()) < 1e-10


def test_pair_table_refuses_anything_but_two_environments_with_a_centre(teaching):
    a, b = teach.teaching_pair(teaching, 0)
    with pytest.raises(InputError, match="exactly two structures, got 1"):
        teach.pair_kernel_table([a], PAIR_HYPERS)
    bad = b.copy()
    bad.info = dict(b.info, center=len(b))
    with pytest.raises(InputError, match=f"structure B's centre {len(b)} is not one of its {len(b)} atoms"):
        teach.pair_kernel_table([a, bad], PAIR_HYPERS)


def test_kernel_distance_matches_definition():
    assert teach.kernel_distance(2.0, 2.0, 2.0) == pytest.approx(0.0)
    assert teach.kernel_distance(0.0, 1.0, 4.0) == pytest.approx(np.sqrt(2.0))
    assert teach.kernel_distance(1.0, 1.0, 4.0) == pytest.approx(1.0)  # cos = 0.5


def test_rotation_matrix_is_a_proper_rotation():
    R = rotation_matrix(30, 70, -110)
    assert np.allclose(R @ R.T, np.eye(3))
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert np.allclose(rotation_matrix(90, 0, 0) @ [1, 0, 0], [0, 1, 0])


# ---- 2. equivariance: rotate a molecule ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rotation_case():
    """A rattled molecule, two 'training' molecules, and the demo's kernels at ANGLES and at no rotation."""
    mols = make_molecules()
    atoms = max(mols, key=len)
    train = [m for m in mols if m is not atoms][:2]
    before = atoms.positions.copy()
    rotated, res = teach.rotated_kernels(atoms, train, ANGLES, EQ_HYPERS)
    _, ref = teach.rotated_kernels(atoms, train, (0.0, 0.0, 0.0), EQ_HYPERS)
    assert np.array_equal(atoms.positions, before)  # the input is not modified
    return atoms, train, rotated, res, ref


def test_rotated_copy_turns_about_the_centre_of_mass(rotation_case):
    atoms, _, rotated, _, _ = rotation_case
    R = rotation_matrix(*ANGLES)
    com = atoms.get_center_of_mass()
    assert np.allclose(rotated.get_center_of_mass(), com, atol=1e-12)
    assert np.allclose(rotated.positions - com, (atoms.positions - com) @ R.T, atol=1e-12)
    assert not np.allclose(rotated.positions, atoms.positions, atol=1e-3)  # a real rotation


def test_rotated_kernels_are_invariant_at_lambda0_and_turn_with_r_at_lambda1(rotation_case):
    atoms, train, _, res, _ = rotation_case
    R = rotation_matrix(*ANGLES)
    direct = WignerKernel(EQ_HYPERS).compute([atoms], [atoms] + train, tensor_rank=1)  # K(A, ·), unrotated
    assert res.K.shape == (EQ_HYPERS.nu_max + 1, 1, 1 + len(train))
    assert res.K_vector.shape == (EQ_HYPERS.nu_max + 1, 1, 3, 1 + len(train), 3)
    # λ=0: k(R·A, A) = k(A, A), and against the training structures too
    assert rel_err(res.K[:, 0, 0], direct.K[:, 0, 0]) < 1e-10
    assert rel_err(res.K[:, 0, 1:], direct.K[:, 0, 1:]) < 1e-10
    for nu in range(1, EQ_HYPERS.nu_max + 1):
        for col in range(1 + len(train)):
            want = R @ direct.K_vector[nu, 0, :, col, :]
            assert rel_err(res.K_vector[nu, 0, :, col, :], want) < 1e-10, (nu, col)
            # not vacuous: the unrotated block differs from the rotated one
            assert rel_err(direct.K_vector[nu, 0, :, col, :], want) > 1e-2, (nu, col)


def test_equivariance_check_reports_the_laws_and_catches_a_wrong_rotation(rotation_case):
    _, _, _, res, ref = rotation_case
    R = rotation_matrix(*ANGLES)
    check = teach.equivariance_check(res, ref, R, nu=2)
    assert set(check["invariant"]) == {1, 2, 3}
    assert all(abs(v - 1.0) < 1e-10 for v in check["invariant"].values())
    assert check["deviation"] < 1e-10
    assert check["scale"] == pytest.approx(np.abs(ref.K_vector[2, 0, :, 0, :]).max())
    np.testing.assert_array_equal(check["block"], res.K_vector[2, 0, :, 0, :])
    # the inverse rotation does not explain the block
    assert teach.equivariance_check(res, ref, R.T, nu=2)["deviation"] > 1e-2
    with pytest.raises(InputError, match=r"ν = 1 … 3, got ν = 0"):
        teach.equivariance_check(res, ref, R, nu=0)


# ---- the λ=1 dipole model --------------------------------------------------------------------------------------

N_TRAIN = 10


@pytest.fixture(scope="module")
def dipole_case():
    qm9 = load_sample("qm9")
    # a periodic structure at the end: the model must skip it and take the last molecules before it
    frames = qm9[:20] + [make_periodic_cell()]
    model, idx = teach.fit_dipole_model(frames, "mulliken_dipole", EQ_HYPERS, N_TRAIN)
    return frames, model, idx


def test_dipole_model_trains_on_the_last_molecules_and_predicts_vectors(dipole_case):
    frames, model, idx = dipole_case
    assert idx == list(range(10, 20))
    train = [frames[i] for i in idx]
    y = np.array([a.info["mulliken_dipole"] for a in train])
    res = WignerKernel(EQ_HYPERS).compute(train, tensor_rank=1)
    pred = model.predict(res.K_vector, n_atoms=res.n_atoms_A)
    assert pred.shape == (N_TRAIN, 3)
    # it learned something: the training dipoles are matched better than by predicting zero
    assert np.mean(np.linalg.norm(pred - y, axis=1)) < 0.5 * np.mean(np.linalg.norm(y, axis=1))


def test_dipole_prediction_turns_with_the_molecule(dipole_case):
    frames, model, idx = dipole_case
    # the molecule with the clearest dipole among those the model has not seen (as the page picks one)
    atoms = max(frames[:idx[0]], key=lambda a: np.linalg.norm(a.info["mulliken_dipole"]))
    train = [frames[i] for i in idx]
    R = rotation_matrix(*ANGLES)
    _, res = teach.rotated_kernels(atoms, train, ANGLES, EQ_HYPERS)
    _, ref = teach.rotated_kernels(atoms, train, (0.0, 0.0, 0.0), EQ_HYPERS)
    pred, pred0 = teach.predict_vector(model, res), teach.predict_vector(model, ref)
    assert pred.shape == (3,)
    assert np.linalg.norm(pred0) > 0.1  # e·Å: a real arrow to turn
    assert rel_err(pred, R @ pred0) < 1e-8
    # the original (column 0) is not a training structure: predict_vector leaves it out
    direct = WignerKernel(EQ_HYPERS).compute([atoms], train, tensor_rank=1)
    assert rel_err(pred0, model.predict(direct.K_vector, n_atoms=direct.n_atoms_A)[0]) < 1e-10


def test_dipole_model_needs_molecules_and_a_positive_size():
    cells = [make_periodic_cell()]
    with pytest.raises(InputError, match="needs non-periodic molecules"):
        teach.fit_dipole_model(cells, "mulliken_dipole", EQ_HYPERS, 5)
    with pytest.raises(InputError, match="n_train must be at least 1, got 0"):
        teach.fit_dipole_model(make_molecules(), "mulliken_dipole", EQ_HYPERS, 0)


# ---- 4. the MD demo's distance between trajectories -------------------------------------------------------------

def test_trajectory_rmsd_per_frame():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 5, 3))
    b = a.copy()
    b[2, 3] += [0.0, 0.3, 0.4]  # one atom of frame 2 moved by 0.5 Å
    np.testing.assert_allclose(trajectory_rmsd(a, b), [0.0, 0.0, 0.5 / np.sqrt(5), 0.0], atol=1e-15)
    np.testing.assert_allclose(trajectory_rmsd(a, a + [1.0, 2.0, 2.0]), np.full(4, 3.0))
    with pytest.raises(InputError, match=r"same shape are needed, got \(4, 5, 3\) and \(4, 4, 3\)"):
        trajectory_rmsd(a, b[:, :4])
