"""Metrics, grouped errors and learning curves (from one kernel, sub-blocks only)."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

from wkviz.errors import Cancelled, InputError
from wkviz.evaluation import (
    LC_COLUMNS,
    LearningCurve,
    errors_by_element,
    errors_by_element_count,
    errors_by_group,
    errors_by_size,
    format_summary,
    learning_curve,
    learning_curve_splits,
    log_grid,
    loglog_slope,
    metrics,
)
from wkviz.models import KernelSet, TargetData, fit_predict


def test_metrics_against_hand_computed_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 4.0])
    m = metrics(t, p, unit="eV")
    assert m.mae == pytest.approx(0.375)
    assert m.rmse == pytest.approx(np.sqrt((0.25 + 1.0) / 4))
    assert m.max_error == pytest.approx(1.0)
    assert m.r2 == pytest.approx(1 - 1.25 / 5.0)
    assert m.n == 4 and "eV" in str(m) and m.as_dict()["unit"] == "eV"
    # vectors: components pooled
    mv = metrics(np.zeros((2, 3)), np.array([[1.0, 0, 0], [0, -2.0, 0]]))
    assert mv.mae == pytest.approx(0.5) and mv.n == 6
    with pytest.raises(InputError, match="shape"):
        metrics(t, p[:3])


def test_grouped_errors():
    t = np.zeros(5)
    p = np.array([1.0, -1.0, 2.0, 0.0, 4.0])
    rows = errors_by_size(t, p, n_atoms=[3, 3, 5, 5, 9])
    assert [(r["n_atoms"], r["n"], r["mae"]) for r in rows] == [(3, 2, 1.0), (5, 2, 1.0), (9, 1, 4.0)]
    binned = errors_by_size(t, p, n_atoms=[3, 3, 5, 5, 9], bins=[0, 4, 10])
    assert [r["n"] for r in binned] == [2, 3]
    counts = np.array([[1, 0], [1, 1], [0, 2], [2, 0], [1, 1]])
    by_el = {r["element"]: r for r in errors_by_element(t, p, counts, species=[1, 8])}
    assert by_el[1]["n"] == 4 and by_el[1]["mae"] == pytest.approx((1 + 1 + 0 + 4) / 4)
    assert by_el[8]["n"] == 3 and by_el[8]["max_error"] == 4.0
    by_count = errors_by_element_count(t, p, counts, [1, 8], element=8)
    assert [(r["n_Z8"], r["n"]) for r in by_count] == [(0, 2), (1, 2), (2, 1)]
    # per-structure grouping of vector targets pools the components
    rows = errors_by_group(np.zeros((2, 3)), np.array([[3.0, 0, 0], [1, 1, 1]]), ["a", "b"])
    assert [r["mae"] for r in rows] == [1.0, 1.0] and rows[0]["rmse"] == pytest.approx(np.sqrt(3))


def test_log_grid_and_slope():
    g = log_grid(10, 1000, 5)
    assert list(g) == [10, 32, 100, 316, 1000]
    sizes = np.array([10, 20, 40, 80])
    assert loglog_slope(sizes, 3.0 * sizes**-0.5) == pytest.approx(-0.5)
    assert np.isnan(loglog_slope([10], [1.0]))


def synthetic_task(n=150, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    G = X @ X.T / 5
    K = np.stack([np.ones_like(G), np.exp(G), np.exp(2 * G)])
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    return K, y


@pytest.mark.slow
def test_learning_curve_decreases_on_a_learnable_target(tmp_path):
    K, y = synthetic_task()
    curve = learning_curve(K, y, [15, 30, 60, 110], repeats=2, test_size=40, seed=1)
    assert curve.models == ["composition", "nu=1", "nu=2", "mixed"]
    assert len(curve.rows) == 2 * 4 * 4
    summ = {(r["model"], r["n_train"]): r for r in curve.summary()}
    for model in ("nu=1", "nu=2", "mixed"):
        maes = [summ[(model, s)]["mae_mean"] for s in curve.sizes]
        assert maes[-1] < 0.6 * maes[0], (model, maes)
        assert curve.slopes()[model] < -0.2
        assert summ[(model, 15)]["n_repeats"] == 2 and summ[(model, 15)]["mae_std"] >= 0
    # composition (a constant kernel here) cannot learn this target
    assert summ[("mixed", 110)]["mae_mean"] < 0.5 * summ[("composition", 110)]["mae_mean"]
    path = tmp_path / "lc.csv"
    curve.to_csv(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == LC_COLUMNS
        assert sum(1 for _ in reader) == len(curve.rows)
    again = LearningCurve.from_csv(path)
    assert again.summary() == curve.summary()
    assert "log–log slopes" in format_summary(curve)


def test_learning_curve_entries_are_fits_on_sub_blocks_of_the_one_kernel():
    K, y = synthetic_task(n=80)
    splits = learning_curve_splits(80, [20, 40], repeats=2, test_size=30, seed=3)
    curve = learning_curve(K, y, [20, 40], repeats=2, test_size=30, seed=3, models=["mixed", "nu=2"])
    ks = KernelSet(K=K)
    td = TargetData(kind="scalar", values=y, n_atoms=np.ones(80, int))
    for row in curve.rows:
        test_idx, order = splits[row["repeat"]]
        train_idx = np.sort(order[: row["n_train"]])
        assert not np.intersect1d(test_idx, train_idx).size
        pred, _ = fit_predict(ks.subset(train_idx, train_idx), td.subset(train_idx), ks.subset(test_idx, train_idx),
                              td.subset(test_idx), model=row["model"], baseline=False, random_state=3 + row["repeat"])
        assert row["mae"] == pytest.approx(np.abs(pred - y[test_idx]).mean(), rel=1e-12)
    # nested training sets within a repeat, different test sets across repeats
    assert not np.array_equal(splits[0][0], splits[1][0])


def test_learning_curve_hyperparameters_ignore_test_targets():
    K, y = synthetic_task(n=90)
    splits = learning_curve_splits(90, [20, 50], repeats=1, test_size=30, seed=0)
    poisoned = y.copy()
    poisoned[splits[0][0]] = 1e6 * np.random.default_rng(0).normal(size=30)
    clean = learning_curve(K, y, [20, 50], repeats=1, test_size=30, seed=0, models=["mixed"])
    dirty = learning_curve(K, poisoned, [20, 50], repeats=1, test_size=30, seed=0, models=["mixed"])
    assert clean.weights == dirty.weights
    assert all(d["mae"] > 1e4 for d in dirty.rows)


def test_learning_curve_vector_and_atomic_kinds():
    rng = np.random.default_rng(5)
    n = 40
    # λ=1 kernel from per-structure vectors: K(A,B) = (v_A v_Bᵀ) · s(A,B)
    V = rng.normal(size=(n, 3))
    X = rng.normal(size=(n, 2))
    S = np.exp(X @ X.T / 2)
    Kv = np.zeros((2, n, 3, n, 3))
    Kv[1] = np.einsum("ij,ia,jb->iajb", S, V, V)
    yv = V * np.tanh(X[:, :1])
    curve = learning_curve(KernelSet(K_vector=Kv), TargetData(kind="vector", values=yv, n_atoms=np.ones(n, int)),
                           [10, 25], repeats=1, test_size=15)
    assert curve.models == ["nu=1", "mixed"] and len(curve.rows) == 4
    # atomic: 3 atoms per structure
    n_atoms = np.full(n, 3)
    feats = rng.normal(size=(3 * n, 2))
    numbers = np.tile([1, 6, 1], n)
    same = (numbers[:, None] == numbers[None, :]).astype(float)
    Ka = np.stack([same, same * np.exp(feats @ feats.T / 2)])
    ya = np.sin(feats[:, 0]) + (numbers == 6)
    ta = TargetData(kind="atomic", values=ya, n_atoms=n_atoms, numbers=numbers)
    curve = learning_curve(KernelSet(K_atomic=Ka, n_atoms_A=n_atoms, n_atoms_B=n_atoms), ta, [10, 25], repeats=1,
                           test_size=15)
    summ = {(r["model"], r["n_train"]): r["mae_mean"] for r in curve.summary()}
    assert summ[("mixed", 25)] < summ[("mixed", 10)]


def test_progress_cancel_and_bad_sizes():
    K, y = synthetic_task(n=60)
    seen = []
    learning_curve(K, y, [10, 20], repeats=1, test_size=20, models=["nu=1"], progress=lambda f, eta: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    flag = threading.Event()

    def progress(fraction, eta):
        if fraction > 0:
            flag.set()

    with pytest.raises(Cancelled):
        learning_curve(K, y, [10, 20, 30], repeats=2, test_size=20, progress=progress, cancel=flag)
    with pytest.raises(InputError, match="cannot hold"):
        learning_curve(K, y, [10, 50], test_size=20)
    with pytest.raises(InputError, match="≥ 2"):
        learning_curve(K, y, [1, 10])


def test_learning_curve_leaves_out_test_structures_with_unseen_elements():
    # element 2 appears only in test structure 0; at the small size no training structure has it, so its
    # baseline energy is 0 and that prediction is off by ~100: it must be left out and counted, not averaged in
    from wkviz.evaluation import learning_curve

    rng = np.random.default_rng(5)
    n = 40
    counts = rng.integers(1, 4, size=(n, 2)).astype(float)
    counts = np.hstack([counts, np.zeros((n, 1))])
    counts[0, 2] = 1.0   # test structure with the rare element
    counts[39, 2] = 1.0  # the only training structure with it, used only at the largest size
    eps = np.array([1.0, 2.0, 100.0])
    y = counts @ eps + 0.01 * rng.normal(size=n)
    feats = rng.normal(size=(n, 3))
    K = np.stack([counts @ counts.T, feats @ feats.T])
    test_idx = np.arange(0, 10)
    pool = np.r_[np.arange(10, 39), 39]
    curve = learning_curve(K, y, [10, 30], models=["composition"], splits=[(test_idx, pool)], counts=counts,
                           species=np.array([1, 6, 9]))
    small = [r for r in curve.rows if r["n_train"] == 10][0]
    assert curve.excluded[(10, 0)] == 1
    assert small["mae"] < 1.0
    assert (30, 0) not in curve.excluded  # structure 39 brings the element in
