"""Models compared on repeated splits (issue 15, parts 1 and 3): splits that cover every test element, paired
statistics against a hand computation, metrics of what is learned (R² of the target minus the composition
baseline, per-atom MAE), the ``compare`` CLI end to end, and the figures."""

from __future__ import annotations

import csv
import math

import ase.io
import numpy as np
import pytest

from conftest import require

from wkviz.data import load_sample
from wkviz.errors import InputError
from wkviz.evaluation import composition_baseline, metrics, score_predictions
from wkviz.evaluation.compare import (COMPARE_COLUMNS, Comparison, compare, compare_splits, cover_by_swaps,
                                      paired_difference)
from wkviz.models import KernelSet, TargetData


# ---- paired statistics ------------------------------------------------------------------------------------------
def test_paired_difference_against_a_hand_computation():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [1.5, 2.1, 3.4, 4.0, 5.3]
    # d = a − b = [−0.5, −0.1, −0.4, 0, −0.3]: mean −0.26; sample variance
    # ((−.24)² + (.16)² + (−.14)² + (.26)² + (−.04)²)/4 = 0.172/4 = 0.043; se = √(0.043/5) = 0.0927
    p = paired_difference(a, b)
    assert p["mean"] == pytest.approx(-0.26)
    assert p["se"] == pytest.approx(math.sqrt(0.043 / 5))
    assert (p["wins"], p["losses"], p["n"]) == (4, 0, 5)
    assert p["verdict"] == "better"  # 0.26 > 2 × 0.0927
    # the same mean with a large spread is a tie
    p = paired_difference([0.0, 1.0, -0.3, 0.2], [0.5, 0.0, 0.0, 0.0])
    assert p["verdict"] == "tie" and (p["wins"], p["losses"]) == (2, 2)
    assert paired_difference([1.0], [2.0])["verdict"] == "n/a"
    # the same model up to round-off is a tie, however small the spread of the difference
    same = paired_difference([0.1 + 2e-9, 0.2 + 2.1e-9, 0.15 + 1.9e-9], [0.1, 0.2, 0.15])
    assert same["verdict"] == "tie" and same["wins"] == 0
    assert math.isnan(paired_difference([1.0], [2.0])["se"])
    with pytest.raises(InputError):
        paired_difference([1.0, 2.0], [1.0])


def _synthetic_comparison():
    rows = []
    maes = {"composition": [0.70, 0.75, 0.72], "nu=2": [0.10, 0.13, 0.11], "mixed": [0.09, 0.12, 0.112]}
    for model, values in maes.items():
        for s, v in enumerate(values):
            rows.append({"model": model, "split": s, "n_train": 40, "n_test": 20, "mae": v, "rmse": 1.3 * v,
                         "r2": 1 - v, "cv_mae": 1.1 * v, "mae_per_atom": v / 10, "r2_total": 0.9999,
                         "max_error": 3 * v, "unit": "eV", "seconds": 0.1})
    return Comparison(rows=rows, models=list(maes), unit="eV"), maes


def test_comparison_summary_and_paired_against_numpy(tmp_path):
    comp, maes = _synthetic_comparison()
    summ = {r["model"]: r for r in comp.summary()}
    for model, v in maes.items():
        v = np.array(v)
        assert summ[model]["mae_mean"] == pytest.approx(v.mean())
        assert summ[model]["mae_se"] == pytest.approx(v.std(ddof=1) / np.sqrt(3))
        assert summ[model]["n_splits"] == 3
    assert comp.best() == "mixed"
    paired = {p["model"]: p for p in comp.paired()}
    d = np.array(maes["nu=2"]) - np.array(maes["mixed"])
    assert paired["nu=2"]["mean"] == pytest.approx(d.mean())
    assert paired["nu=2"]["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert (paired["nu=2"]["wins"], paired["nu=2"]["losses"]) == (1, 2)
    assert paired["composition"]["verdict"] == "worse" and paired["mixed"]["mean"] == 0.0
    assert {p["reference"] for p in comp.paired("nu=2")} == {"nu=2"}
    with pytest.raises(InputError):
        comp.paired("nu=7")
    # CSV: the contract's columns, one row per (model, split), exact round trip
    path = tmp_path / "c.csv"
    comp.to_csv(path)
    with open(path) as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == COMPARE_COLUMNS
    assert {"model", "split", "n_train", "n_test", "mae", "rmse", "r2", "cv_mae"} <= set(header)
    back = Comparison.from_csv(path)
    assert len(back.rows) == 9 and back.models == comp.models and back.unit == "eV"
    assert back.values("nu=2").tolist() == maes["nu=2"]


# ---- splits ------------------------------------------------------------------------------------------------------
def _composition_target(n=60, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.zeros((n, 4))
    counts[:, 0] = rng.integers(1, 8, n)        # H
    counts[:, 1] = rng.integers(1, 5, n)        # C
    counts[rng.random(n) < 0.3, 2] = 1          # N in ~30 %
    counts[[5, 41], 3] = [1, 2]                 # F in two structures only
    y = counts @ np.array([-13.6, -1030.0, -1485.0, -2715.0]) + rng.normal(0, 0.5, n)
    return TargetData(kind="scalar", values=y, n_atoms=counts.sum(1).astype(int), counts=counts,
                      species=np.array([1, 6, 7, 9]), key="U0", unit="eV")


@pytest.mark.parametrize("stratify", ["none", "elements"])
def test_splits_cover_every_test_element_and_keep_sizes(stratify):
    target = _composition_target()
    has = target.counts > 0
    splits = compare_splits(target, 30, 20, n_splits=8, seed=3, stratify=stratify)
    assert len(splits) == 8
    for train, test in splits:
        assert len(train) == 30 and len(test) == 20
        assert not np.intersect1d(train, test).size
        assert np.all(has[train].any(0) | ~has[test].any(0)), "a test element is missing from training"
    assert not all(np.array_equal(splits[0][1], s[1]) for s in splits[1:]), "the splits must differ"
    again = compare_splits(target, 30, 20, n_splits=8, seed=3, stratify=stratify)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_stratified_splits_keep_the_element_set_proportions():
    target = _composition_target(n=100)
    labels = (target.counts > 0) @ (2 ** np.arange(4))
    share = {k: np.mean(labels == k) for k in np.unique(labels)}
    for train, test in compare_splits(target, 60, 40, n_splits=4, seed=0, stratify="elements"):
        for k, f in share.items():
            if f * 40 >= 3:
                assert abs(np.mean(labels[test] == k) - f) <= 1.5 / 40 + 1e-12


def test_cover_by_swaps_fixes_a_test_structure_with_an_unseen_element():
    counts = np.array([[1, 0], [1, 0], [1, 0], [1, 1], [1, 0]], float)
    train, test = cover_by_swaps([0, 1, 2], [3, 4], counts, seed=0)
    assert 3 in train and len(train) == 3 and len(test) == 2
    with pytest.raises(InputError, match="every element of the test part"):
        cover_by_swaps([3], [0, 1, 2, 4], np.array([[1, 0], [1, 0], [1, 0], [0, 1], [1, 0]], float))
    with pytest.raises(InputError):
        compare_splits(_composition_target(), 50, 20)


# ---- metrics of what is learned -----------------------------------------------------------------------------------
def test_metrics_residual_r2_and_per_atom_mae_by_hand():
    y = np.array([10.0, 20.0, 30.0, 41.0])
    p = np.array([10.5, 19.0, 30.0, 40.0])
    b = np.array([9.0, 21.0, 29.0, 40.0])
    n_atoms = np.array([2, 4, 5, 10])
    m = metrics(y, p, "eV", baseline=b, n_atoms=n_atoms)
    e = p - y
    r = y - b  # [1, −1, 1, 1]: mean 0.5, SS = 3
    assert m.r2_residual == pytest.approx(1 - (e**2).sum() / ((r - r.mean()) ** 2).sum())
    assert m.r2_residual == pytest.approx(1 - 2.25 / 3.0)
    assert m.r2 == pytest.approx(1 - (e**2).sum() / ((y - y.mean()) ** 2).sum())
    assert m.mae_per_atom == pytest.approx(np.mean(np.abs(e) / n_atoms))
    assert "composition baseline" in str(m) and "eV/atom" in str(m)
    plain = metrics(y, p)
    assert math.isnan(plain.r2_residual) and math.isnan(plain.mae_per_atom)


def test_composition_baseline_is_the_estimators_baseline():
    from wkviz.models import ScalarRegressor

    target = _composition_target()
    train, test = target.subset(np.arange(40)), target.subset(np.arange(40, 60))
    K = np.stack([train.counts @ train.counts.T, np.eye(40)])
    est = ScalarRegressor(nus=(0,), weights="free").fit(K, train.values, counts=train.counts, species=train.species)
    assert np.allclose(composition_baseline(train, test), test.counts @ est.baseline_coef_)
    inten = composition_baseline(train, test, intensive=True)
    assert inten.shape == (20,) and not np.allclose(inten, composition_baseline(train, test))
    assert composition_baseline(TargetData(kind="vector", values=np.zeros((3, 3)), n_atoms=[1, 1, 1]),
                                TargetData(kind="vector", values=None, n_atoms=[1])) is None


def test_composition_only_model_has_residual_r2_well_below_one():
    """On total energies R² is ~1 for ANY model (the spread is the molecule size); on the target minus the
    composition baseline the composition-only model is near 0 and a model of the structure is near 1."""
    target = _composition_target(n=80, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 2))
    target.values = target.values + 3.0 * np.sin(x[:, 0]) + x[:, 1] ** 2  # structure-dependent part
    kernels = KernelSet(K=np.stack([target.counts @ target.counts.T,
                                    np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))]))
    splits = compare_splits(target, 60, 20, n_splits=3, seed=0)
    comp = compare(kernels, target, splits, models=["composition", "nu=1"], weights="free")
    assert len(comp.rows) == 6 and {(r["model"], r["split"]) for r in comp.rows} == {
        (m, s) for m in ("composition", "nu=1") for s in range(3)}
    summ = {r["model"]: r for r in comp.summary()}
    assert all(r["r2_total"] > 0.999 for r in comp.rows)
    assert summ["composition"]["r2_mean"] < 0.3
    assert summ["nu=1"]["r2_mean"] > 0.8
    # score_predictions is what the rows hold
    tr, te = target.subset(splits[0][0]), target.subset(splits[0][1])
    row = next(r for r in comp.rows if r["model"] == "composition" and r["split"] == 0)
    assert row["n_train"] == 60 and row["n_test"] == 20 and row["unit"] == "eV"
    assert np.isfinite(row["mae_per_atom"]) and row["mae_per_atom"] < row["mae"]
    assert score_predictions(tr, te, te.values).mae == 0.0


# ---- the CLI end to end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_qm9(tmp_path_factory):
    from ase.io import write

    from wkviz.data import load_sample

    path = tmp_path_factory.mktemp("compare") / "qm9_40.extxyz"
    write(str(path), load_sample("qm9")[:40])
    return path


@pytest.mark.slow
def test_compare_cli_end_to_end(small_qm9, tmp_path, capsys):
    from wkviz.cli import main

    out = tmp_path / "compare.csv"
    code = main(["compare", "--data", str(small_qm9), "--target", "U0", "--train-size", "28", "--test-size", "12",
                 "--splits", "3", "--nu-max", "2", "--lambda-max", "2", "--stratify", "elements", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    last = dict(part.split("=", 1) for part in lines[-1].split())  # BEST=nu=2: the first "=" splits
    assert set(last) == {"BEST", "MAE", "SE", "SPLITS"} and last["SPLITS"] == "3"
    assert float(last["MAE"]) > 0 and float(last["SE"]) > 0
    assert any("paired difference" in line and "nu=2" in line for line in lines)
    assert "fits" in captured.err  # progress on stderr
    comp = Comparison.from_csv(out)
    assert len(comp.rows) == 4 * 3 and comp.models == ["composition", "nu=1", "nu=2", "mixed"]
    assert all(r["n_train"] == 28 and r["n_test"] == 12 and r["unit"] == "eV" for r in comp.rows)
    summ = {r["model"]: r for r in comp.summary()}
    assert last["BEST"] == comp.best()
    assert float(last["MAE"]) == pytest.approx(summ[comp.best()]["mae_mean"], rel=1e-6)
    assert summ["composition"]["r2_mean"] < 0.5 < summ["nu=2"]["r2_mean"]


def test_compare_cli_refuses_bad_sizes(small_qm9, tmp_path, capsys):
    from wkviz.cli import main

    code = main(["compare", "--data", str(small_qm9), "--target", "U0", "--train-size", "35", "--test-size", "10",
                 "--out", str(tmp_path / "c.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "40 structures" in err[-1] and "--train-size" in err[-1]
    assert main(["compare", "--data", str(small_qm9), "--target", "U0", "--train-size", "20", "--splits", "0",
                 "--out", str(tmp_path / "c.csv")]) == 2


# ---- figures -----------------------------------------------------------------------------------------------------
def test_paired_difference_chart_and_residual_parity():
    from wkviz.views import figures

    comp, maes = _synthetic_comparison()
    fig = figures.paired_difference_chart(comp.paired(), unit="eV", target="U0")
    bar = fig.data[0]
    assert len(bar.x) == 2  # the reference (mixed) is left out
    d = np.array(maes["composition"]) - np.array(maes["mixed"])
    assert bar.y[0] == pytest.approx(d.mean())
    assert bar.error_y.array[0] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert "wins" in bar.hovertemplate and "(eV)" in fig.layout.yaxis.title.text
    y = np.array([100.0, 200.0, 300.0])
    fig = figures.parity_plot(y, y + 0.1, ids=range(3), target="U0", unit="eV", baseline=y - 1.0)
    pts = fig.data[1]
    assert np.allclose(pts.x, 1.0) and np.allclose(pts.y, 1.1)
    assert fig.layout.xaxis.title.text == "true U0 − baseline (eV)"


# ---- the Models page ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_models_page_fit_job_adds_splits_to_the_users_split():
    """What the Models page runs in its background job: split 0 is the page's split (parity plot), the others
    random splits of the same sizes; every row of the comparison is scored like compare.csv."""
    require("streamlit")
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from pages.support import jobs

    from wkviz import Hypers
    from wkviz.data import load_sample
    from wkviz.engine.kernels import WignerKernel

    frames = load_sample("qm9")[:24]
    kres = WignerKernel(Hypers(nu_max=2, lambda_max=2)).compute(frames)
    train, test = np.arange(6, 24), np.arange(6)
    seen = []
    out = jobs.fit_models(kres, frames, "U0", train, test, names=["composition", "nu=2"], weights="free",
                          selection="evidence", folds=3, intensive=False, splits=3, seed=0,
                          progress=lambda f, eta: seen.append(f))
    comp = out["comparison"]
    assert comp.splits == [0, 1, 2] and len(comp.rows) == 6
    assert seen[-1] == pytest.approx(1.0) and all(b >= a - 1e-12 for a, b in zip(seen, seen[1:]))
    row0 = next(r for r in comp.rows if r["model"] == "nu=2" and r["split"] == 0)
    assert row0["mae"] == pytest.approx(out["models"]["nu=2"]["metrics"]["mae"])
    assert row0["r2"] == pytest.approx(out["models"]["nu=2"]["metrics"]["r2_residual"])
    assert all(r["n_train"] == 18 and r["n_test"] == 6 for r in comp.rows)
    assert out["baseline"].shape == (6,)
    assert jobs.default_splits(300) == 5 and jobs.default_splits(5000) == 1


@pytest.mark.slow
def test_models_page_with_splits_shows_mean_se_and_paired_chart():
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    import pathlib

    from wkviz import cache

    root = pathlib.Path(__file__).resolve().parent.parent
    cache.RESULTS.clear()
    at = AppTest.from_file(str(root / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/1_Data.py").run()
    at.number_input(key="data.n").set_value(30).run()
    at.switch_page("pages/2_Kernels.py").run()
    at.slider(key="kernels.nu_max").set_value(2)
    at.slider(key="kernels.lambda_max").set_value(2)
    at.button(key="kernels.apply.btn").click().run()
    at.button(key="kernels.compute.btn").click().run()
    at.switch_page("pages/3_Models.py").run()
    assert at.number_input(key="models.splits").value == 5  # small data set: 5 splits by default
    at.number_input(key="models.splits").set_value(3)
    at.button(key="models.fit.btn").click().run()
    assert not at.exception and not at.error
    fit = at.session_state["wk.fit"]
    result = cache.RESULTS.get(fit["key"])
    assert fit["splits"] == 3 and result["comparison"].splits == [0, 1, 2]
    table = at.dataframe[0].value
    assert any("±" in str(v) for v in table.iloc[:, 1])
    assert any(c.startswith("R² of U0 − composition") for c in table.columns)
    labels = {m.label for m in at.metric}
    assert "MAE/atom (eV)" in labels and "R² residual" in labels
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("Paired difference" in (s["layout"].get("title") or {}).get("text", "") for s in specs)
    assert any("− baseline" in s["layout"]["xaxis"].get("title", {}).get("text", "") for s in specs)


def test_paired_difference_chart_zooms_on_the_close_models():
    from wkviz.views import figures

    rows = [{"model": m, "reference": "nu=2", "mean": d, "se": 0.1 * abs(d) + 1e-4, "n": 5, "wins": 0, "losses": 5,
             "verdict": "worse"} for m, d in (("composition", 0.82), ("nu=1", 0.15), ("nu=3", -0.0003),
                                              ("nu=4", 0.0027), ("mixed", -0.0042))]
    fig = figures.paired_difference_chart(rows, unit="eV", target="U0")
    lo, hi = fig.layout.yaxis.range
    assert hi < 0.02 and lo == -hi  # the meV differences are readable
    texts = [a.text for a in fig.layout.annotations]
    assert any("+0.82 eV (off scale)" in t for t in texts) and any("+0.15 eV" in t for t in texts)


def test_compare_cli_refuses_a_folder_as_out_before_any_work(tmp_path):
    """`--out` is checked up front like every other sub-command's (one error line, nothing computed)."""
    import subprocess
    import sys

    frames = load_sample("qm9")[:12]
    data = tmp_path / "d.xyz"
    ase.io.write(data, frames, format="extxyz")
    proc = subprocess.run([sys.executable, "-m", "wkviz", "compare", "--data", str(data), "--target", "U0",
                           "--train-size", "8", "--splits", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "folder" in errors[0]
    assert "Traceback" not in proc.stderr
