"""WignerKernel.compute with the centres of B restricted (``centers_B``): the same numbers as the full atom
kernel's columns, in the given order, at the cost of the selected centres only."""

import numpy as np
import pytest
from conftest import make_molecules, make_periodic_cell

from wkviz import Hypers
from wkviz.errors import InputError, MemoryBudgetError
from wkviz.engine.kernels import KernelResult, WignerKernel

H = Hypers(density_width=0.3, density_scaling=None, nu_max=3, lambda_max=2, cutoff=4.0)
ROUTES = ("basis", "exact")


@pytest.fixture(scope="module")
def frames():
    # H, C, N, O molecules and a periodic Na/Cl cell whose environments are made of periodic images
    return make_molecules() + [make_periodic_cell()]


def _starts(frames):
    return np.concatenate([[0], np.cumsum([len(a) for a in frames])[:-1]])


def _close(a, b, scale=None):
    scale = np.abs(b).max() if scale is None else scale
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-12 * scale


@pytest.mark.parametrize("route", ROUTES)
def test_selected_centres_are_the_full_atom_kernels_columns(frames, route):
    h = Hypers(**{**H.to_dict(), "nu1_route": route})
    A, B = frames[:3] + frames[-1:], frames[2:]  # both sides mixed species, B holds the periodic cell
    full = WignerKernel(h).compute(A, B, atomic=True)
    n_b = sum(len(b) for b in B)
    # the cell's two atoms (last), atoms of three molecules, out of order
    centres = np.array([n_b - 1, 4, 0, n_b - 2, 9, 3])
    res = WignerKernel(h).compute(A, B, atomic=True, centers_B=centres)
    scale = np.abs(full.K_atomic).max()
    _close(res.K_atomic, full.K_atomic[:, :, centres], scale)
    # structure-vs-environment sums: K[ν, a, m] = Σ_{i∈a} w_i k^ν(i, c_m) with the structure's centre weights
    # only (hydrogen centres weigh hydrogen_center_weight); K[0] = the weighted same-element atom counts
    z_a = np.concatenate([a.numbers for a in A])
    z_c = np.concatenate([b.numbers for b in B])[centres]
    assert 0 < h.hydrogen_center_weight < 1 and np.any(z_a == 1) and np.any(z_c == 1)
    w = np.where(z_a == 1, h.hydrogen_center_weight, 1.0)
    _close(res.K, np.add.reduceat(w[None, :, None] * full.K_atomic[:, :, centres], _starts(A), axis=1), scale)
    np.testing.assert_allclose(res.K[0], np.add.reduceat((z_a[:, None] == z_c[None, :]) * w[:, None], _starts(A), 0),
                               rtol=1e-15)
    assert res.K.shape == (4, len(A), len(centres)) and res.K_atomic.shape == (4, sum(map(len, A)), len(centres))
    np.testing.assert_array_equal(res.centers_B, centres)
    np.testing.assert_array_equal(res.n_atoms_B, np.ones(len(centres)))
    assert np.abs(res.K[1:, :, :2]).max() > 0 and np.abs(res.K[1:, :2]).max() > 0  # Na/Cl rows and columns live


@pytest.mark.parametrize("route", ROUTES)
def test_centres_of_A_itself_without_frames_B(frames, route):
    h = Hypers(**{**H.to_dict(), "nu1_route": route})
    full = WignerKernel(h).compute(frames, atomic=True)  # symmetric request
    centres = np.array([sum(map(len, frames)) - 1, 7, 2])
    res = WignerKernel(h).compute(frames, atomic=True, centers_B=centres)
    _close(res.K_atomic, full.K_atomic[:, :, centres], np.abs(full.K_atomic).max())


def test_every_centre_selected_regroups_into_the_structure_kernels(frames):
    A, B = frames[:2], frames[3:]
    eng = WignerKernel(H)
    full = eng.compute(A, B, tensor_rank=(1, 2))
    res = eng.compute(A, B, tensor_rank=(1, 2), centers_B=np.arange(sum(len(b) for b in B)))
    sb = _starts(B)
    # a centre column carries the structure side's weights only: regrouping adds the column's own w_m
    zb = np.concatenate([b.numbers for b in B])
    assert np.any(zb == 1) and H.hydrogen_center_weight != 1.0
    w = np.where(zb == 1, H.hydrogen_center_weight, 1.0)

    def regroup(K, axis):
        K = K.copy()
        shape = [1] * K.ndim
        shape[axis] = -1
        K *= w.reshape(shape)
        return np.add.reduceat(K, sb, axis=axis)

    _close(regroup(res.K, 2), full.K)
    _close(regroup(res.K_vector, 3), full.K_vector)
    _close(regroup(res.K_tensor, 3), full.K_tensor)
    assert res.n_pairs == full.n_pairs


def test_column_order_and_repeated_centres(frames):
    eng = WignerKernel(H)
    B = frames[1:4]
    centres = np.array([5, 0, 11, 2])
    res = eng.compute(frames[:2], B, atomic=True, centers_B=centres)
    rev = eng.compute(frames[:2], B, atomic=True, centers_B=centres[::-1])
    # the same numbers up to rounding: BLAS may block the reversed columns differently (1 ulp seen)
    _close(rev.K_atomic, res.K_atomic[:, :, ::-1])
    _close(rev.K, res.K[:, :, ::-1])
    rep = eng.compute(frames[:2], B, atomic=True, centers_B=[0, 5, 0, 5, 5])
    # another centre set: the basis route may sum over other neighbour channels (zeros), rounding only
    _close(rep.K_atomic, res.K_atomic[:, :, [1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(rep.K_atomic[:, :, 0], rep.K_atomic[:, :, 2])
    est = eng.estimate(frames[:2], B, centers_B=[0, 5, 0, 5, 5])
    assert est["n_pairs"] == rep.n_pairs and est["computed_pairs"] < est["n_pairs"]  # repeats computed once


def test_bad_centre_indices_are_refused(frames):
    eng = WignerKernel(H)
    n_b = sum(len(b) for b in frames[1:3])
    for bad, match in [([n_b], "outside"), ([-1], "outside"), ([], "empty"), ([0.0, 1.0], "integer"),
                       (np.ones(n_b, dtype=bool), "flatnonzero"), ([[0, 1]], "one-dimensional")]:
        with pytest.raises(InputError, match=match):
            eng.compute(frames[:1], frames[1:3], centers_B=bad)
        with pytest.raises(InputError, match=match):
            eng.estimate(frames[:1], frames[1:3], centers_B=bad)
    with pytest.raises(InputError, match="outside"):  # B = A: indices count A's atoms
        eng.compute(frames[:1], centers_B=[len(frames[0])])


def test_estimate_and_memory_budget_count_the_selected_centres_only(frames):
    A, B = frames[:3], frames[2:]
    centres = np.array([0, 3, 8])
    eng = WignerKernel(H)
    est = eng.estimate(A, B, atomic=True, centers_B=centres)
    z_a = np.concatenate([a.numbers for a in A])
    z_c = np.concatenate([b.numbers for b in B])[centres]
    pairs = int((z_a[:, None] == z_c[None, :]).sum())
    assert est["n_pairs"] == est["computed_pairs"] == pairs
    nu1, atoms_a = H.nu_max + 1, len(z_a)
    assert est["output_bytes"] == 8 * nu1 * (len(A) * 3 + atoms_a * 3)
    full = eng.estimate(A, B, atomic=True)
    # work, not seconds: the two estimates time their own micro-runs (different tile shapes), so on a busy machine
    # their seconds can come out in either order for structures this small
    assert est["computed_pairs"] < full["computed_pairs"] and est["output_bytes"] < full["output_bytes"]
    res = eng.compute(A, B, atomic=True, centers_B=centres)
    assert res.n_pairs == pairs
    # a budget the full atom kernel exceeds but the selected columns fit in
    tight = WignerKernel(H, memory_budget=est["output_bytes"])
    assert not tight.estimate(A, B, atomic=True)["fits"]
    assert tight.estimate(A, B, atomic=True, centers_B=centres)["fits"]
    with pytest.raises(MemoryBudgetError):
        tight.compute(A, B, atomic=True)
    np.testing.assert_array_equal(tight.compute(A, B, atomic=True, centers_B=centres).K_atomic, res.K_atomic)
    with pytest.raises(MemoryBudgetError, match="fewer centres"):
        WignerKernel(H, memory_budget=est["output_bytes"] - 1).compute(A, B, atomic=True, centers_B=centres)


def test_result_with_centres_round_trips_through_npz(frames, tmp_path):
    res = WignerKernel(H).compute(frames[:2], frames[2:4], centers_B=[3, 1])
    res.to_npz(tmp_path / "K.npz")
    back = KernelResult.from_npz(tmp_path / "K.npz")
    np.testing.assert_array_equal(back.K, res.K)
    np.testing.assert_array_equal(back.centers_B, [3, 1])
    assert KernelResult.from_npz(_write(WignerKernel(H).compute(frames[:2]), tmp_path)).centers_B is None


def _write(res, tmp_path):
    path = tmp_path / "full.npz"
    res.to_npz(path)
    return path


@pytest.mark.parametrize("route", ROUTES)
def test_centres_of_both_sides_are_the_atom_kernel_block(frames, route):
    """centers_A too: rows are single centres, K = K_atomic = the full atom kernel's block (unweighted), as a
    sparse model's K_MM among its active environments; repeats, the npz round trip and the cost follow."""
    h = Hypers(**{**H.to_dict(), "nu1_route": route})
    A, B = frames[:3] + frames[-1:], frames[2:]
    full = WignerKernel(h).compute(A, B, atomic=True)
    n_a, n_b = sum(map(len, A)), sum(map(len, B))
    rows, cols = np.array([n_a - 1, 5, 0, 7, 5]), np.array([n_b - 1, 4, 0, 6, 2])  # Cl, H, O, C; a repeat
    eng = WignerKernel(h)
    res = eng.compute(A, B, atomic=True, centers_A=rows, centers_B=cols)
    block = full.K_atomic[:, rows][:, :, cols]
    z_a = np.concatenate([a.numbers for a in A])[rows]
    assert np.any(z_a == 1) and np.abs(block[1:, 0]).max() > 0
    _close(res.K_atomic, block)
    _close(res.K, block)  # no centre weights on either side: the hydrogen rows are the atom kernel itself
    np.testing.assert_array_equal(res.K[0], z_a[:, None] == np.concatenate([b.numbers for b in B])[cols][None, :])
    np.testing.assert_array_equal(res.K[:, 1], res.K[:, 4])
    assert res.n_atoms_A.tolist() == [1] * len(rows) and res.K.shape == (4, 5, 5)
    np.testing.assert_array_equal(res.centers_A, rows)
    est = eng.estimate(A, B, centers_A=rows, centers_B=cols)
    assert est["n_pairs"] == res.n_pairs == int((block[0] > 0).sum())
    assert est["computed_pairs"] < est["n_pairs"]  # the repeated row computed once
    # B = A with both sides restricted is a rectangular request, not a symmetric one
    same = eng.compute(A, centers_A=rows[:3], centers_B=rows[:3], atomic=True)
    _close(same.K, WignerKernel(h).compute(A, atomic=True).K_atomic[:, rows[:3]][:, :, rows[:3]])


def test_centres_of_A_are_checked_and_kept_in_the_npz(frames, tmp_path):
    eng = WignerKernel(H)
    for bad, match in [([99], "centers_A holds atom index 99, outside A's"), ([], "centers_A is empty")]:
        with pytest.raises(InputError, match=match):
            eng.compute(frames[:1], frames[1:3], centers_A=bad, centers_B=[0])
    res = eng.compute(frames[:2], frames[1:3], centers_A=[0, 2], centers_B=[1])
    res.to_npz(tmp_path / "K.npz")
    back = KernelResult.from_npz(tmp_path / "K.npz")
    np.testing.assert_array_equal(back.centers_A, [0, 2])
    np.testing.assert_array_equal(back.K, res.K)
