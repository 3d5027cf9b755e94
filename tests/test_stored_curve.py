"""The stored QM9 U0 learning curve (issue 17): the packaged benchmark result, its loader
(wkviz.evaluation.stored), its figures (wkviz.views.figures.curves) and the Learning curves page that shows it
beside the user's own curves, before any of them is computed."""

from __future__ import annotations

import csv
import fnmatch
import json
import pathlib
import re
import shutil
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest

from wkviz import Hypers, cache
from wkviz.errors import InputError
from wkviz.evaluation import stored
from wkviz.views import figures

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pages.support, as the page files import it
    sys.path.insert(0, str(ROOT))
PAGE = str(ROOT / "pages" / "4_Learning_curves.py")
BENCHMARK_CSV = ROOT / "benchmarks" / "results" / "sparse_curve_qm9_u0.csv"


# ---- the packaged file ------------------------------------------------------------------------------------------

def test_the_packaged_curve_parses_and_is_consistent():
    ref = stored.load_stored_curve()
    assert ref.target == "U0" and ref.unit == "eV" and ref.quantity == "total energy"
    assert ref.label == "QM9 U0, sparse Wigner kernel (stored, BENCHMARKS §13)"
    with open(ref.path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for repeat in {r["repeat"] for r in rows}:  # the file itself lists each repeat's sizes in increasing order
        sizes = [int(r["n_train"]) for r in rows if r["repeat"] == repeat]
        assert sizes == sorted(set(sizes)), "training sizes must increase down the file"
    assert len(ref.n_train) >= 3 and np.all(np.diff(ref.n_train) > 0)
    assert np.all(np.diff(ref.n_active) >= 0), "the active sets are FPS prefixes: M never shrinks as N grows"
    assert np.all(ref.mae > 0) and np.all(ref.rmse >= ref.mae), "RMSE ≥ MAE for any set of errors"
    # in eV, as the metadata says: a QM9 U0 MAE of a kernel model on 10³–10⁵ molecules is 5–100 meV, so numbers
    # written in meV (or Hartree, or kcal/mol) fall outside
    assert np.all((0.003 < ref.mae) & (ref.mae < 0.2))
    assert ref.mae[-1] < ref.mae[0], "more data, smaller error"
    assert ref.n_test >= 100
    assert np.all(ref.fit_seconds > 0) and "{" not in ref.model
    assert isinstance(ref.hypers, Hypers) and ref.hypers.nu_max >= 2
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ref.date)
    assert "bench_sparse_curve.py" in ref.command and "{" not in ref.command
    assert f"--sizes {','.join(map(str, ref.n_train))}" in ref.command
    assert f"--active {','.join(map(str, ref.n_active))}" in ref.command
    assert f"--n-test {ref.n_test}" in ref.command
    text = ref.provenance()
    for fact in (ref.date, ref.command, "BENCHMARKS.md §13", "2-core", f"{ref.n_test:,}"):
        assert fact in text


def test_the_benchmarks_section_it_names_is_the_sparse_qm9_curve():
    ref = stored.load_stored_curve()
    heading = next(line for line in (ROOT / "BENCHMARKS.md").read_text().splitlines()
                   if line.startswith(f"## {ref.section}."))
    assert "QM9 learning curve" in heading and "sparse" in heading.lower()


def test_the_packaged_copy_is_the_benchmark_output():
    """One fact in one place: the app's stored curve is the benchmark's CSV, byte for byte. After a new run of
    benchmarks/bench_sparse_curve.py, copy its CSV to wkviz/evaluation/stored_results/qm9_u0_sparse_curve.csv."""
    if not BENCHMARK_CSV.exists():
        pytest.skip("no benchmarks/results/sparse_curve_qm9_u0.csv in this checkout")
    packaged = stored.STORED_DIR / f"{stored.QM9_U0_SPARSE}.csv"
    assert packaged.read_bytes() == BENCHMARK_CSV.read_bytes(), (
        f"copy {BENCHMARK_CSV.relative_to(ROOT)} to {packaged.relative_to(ROOT)}")


def test_the_stored_files_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["wkviz"]
    files = [p.relative_to(ROOT / "wkviz").as_posix() for p in stored.STORED_DIR.iterdir()]
    assert {f"{stored.QM9_U0_SPARSE}.csv", f"{stored.QM9_U0_SPARSE}.json"} <= {pathlib.Path(f).name for f in files}
    for f in files:
        assert any(fnmatch.fnmatch(f, p) for p in patterns), f"{f} would not be installed"


# ---- the loader, on files written here --------------------------------------------------------------------------

def _copy_meta(tmp_path, name="curve"):
    shutil.copy(stored.STORED_DIR / f"{stored.QM9_U0_SPARSE}.json", tmp_path / f"{name}.json")


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _row(n, m, mae, repeat=0, **extra):
    return {"model": "sparse-mixed", "n_train": n, "repeat": repeat, "mae": mae, "rmse": 1.5 * mae, "n_active": m,
            "n_test": 500, "fit_seconds": n / 10, **extra}


def test_loader_averages_repeats_reads_the_date_and_fills_the_command(tmp_path):
    _copy_meta(tmp_path)
    extra = dict(fit_cpu_seconds=50.0, pool=30000)
    rows = [_row(4000, 2000, 0.030, 1, date="2027-01-03", load="1.0 1.0 1.0", **extra),
            _row(1000, 1000, 0.050, 0, date="2027-01-02", load="3.5 2.0 1.0", **extra),
            _row(1000, 1000, 0.054, 1, date="2027-01-02", load="3.5 2.0 1.0", **extra),
            _row(4000, 2000, 0.028, 0, date="2027-01-03", load="1.0 1.0 1.0", **extra)]
    _write_csv(tmp_path / "curve.csv", rows)
    ref = stored.load_stored_curve("curve", tmp_path)
    assert list(ref.n_train) == [1000, 4000] and list(ref.n_active) == [1000, 2000]
    assert np.allclose(ref.mae, [0.052, 0.029]) and np.allclose(ref.rmse, 1.5 * ref.mae)
    assert np.allclose(ref.mae_std, [np.std([0.050, 0.054], ddof=1), np.std([0.028, 0.030], ddof=1)])
    assert list(ref.n_repeats) == [2, 2] and ref.n_test == 500
    assert ref.date == "2027-01-03", "the CSV's date wins over the JSON's"
    assert "--sizes 1000,4000 --active 1000,2000 --n-test 500 --pool 30000 --kernels" in ref.command
    assert "random structures holding about 30,000" in ref.model
    assert np.allclose(ref.fit_seconds, [100, 400]) and np.allclose(ref.fit_cpu_seconds, 50.0)
    assert "500 random held-out QM9 molecules" in ref.dataset and "4,000 others" in ref.dataset
    assert ref.load == ("3.5 2.0 1.0", "1.0 1.0 1.0")
    (trace,) = figures.stored_curve_plot(ref).data
    assert list(trace.customdata[:, 3]) == ["100 s (50 s CPU)", "400 s (50 s CPU)"]
    assert list(trace.customdata[:, 4]) == [" at load 3.5", " at load 1.0"]
    mean, std = ref.errors("rmse")
    assert np.allclose(mean, ref.rmse) and np.allclose(std, ref.rmse_std)
    with pytest.raises(InputError, match="'mae' and 'rmse'"):
        ref.errors("r2")


def test_loader_reads_every_column_the_benchmark_writes(tmp_path):
    """The header of benchmarks/bench_sparse_curve.py's CSV as it is now (a CSV without 'date': the JSON's)."""
    _copy_meta(tmp_path)
    header = ("model,n_train,repeat,mae,rmse,n_active,n_test,fit_seconds,fit_cpu_seconds,products_seconds,"
              "search_seconds,evaluations,kernel_seconds_all_sizes,selection_seconds,pool,peak_rss_mib,cv_mae,"
              "relative_regularization,load")
    lines = [header,
             "sparse-mixed,2000,0,0.034,0.050,2000,10000,210.0,105.0,27,139,194,2532,230,all,3118,0.039,2e-05,9.3 8.3 9.2",
             "sparse-mixed,20000,0,0.016,0.024,5000,10000,900.0,650.0,500,300,150,4000,900,all,11000,0.017,1e-05,2.1 2.0 2.2"]
    (tmp_path / "curve.csv").write_text("\n".join(lines) + "\n")
    ref = stored.load_stored_curve("curve", tmp_path)
    assert list(ref.n_train) == [2000, 20000] and ref.n_test == 10000 and np.allclose(ref.fit_cpu_seconds, [105, 650])
    assert ref.date == json.loads((tmp_path / "curve.json").read_text())["date"]
    assert "--n-test 10000 --kernels benchmarks/results/sparse_curve_kernels_20000_10000_s0.npz" in ref.command
    assert "--pool" not in ref.command and "random structures" not in ref.model
    assert "10,000 random held-out" in ref.dataset


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[1].update(mae="-0.01"), r"line 3: column 'mae' is '-0.01', not a positive number"),
    (lambda rows: rows[1].update(mae="0.03 eV"), r"line 3: column 'mae' is '0.03 eV', not a number"),
    (lambda rows: rows[1].update(n_test=1000), r"mixes test sets of \[500, 1000\]"),
    (lambda rows: rows[1].update(model="exact-mixed"), r"holds the models exact-mixed, sparse-mixed"),
    (lambda rows: [r.update(pool=p) for r, p in zip(rows, (20000, 30000))], r"mixes FPS pools \[20000, 30000\]"),
    (lambda rows: [r.pop("n_active") for r in rows], r"no column 'n_active'"),
])
def test_loader_refuses_a_malformed_csv_in_one_sentence(tmp_path, change, message):
    _copy_meta(tmp_path)
    rows = [_row(1000, 1000, 0.05), _row(2000, 1500, 0.04)]
    change(rows)
    _write_csv(tmp_path / "curve.csv", rows)
    with pytest.raises(InputError, match=message):
        stored.load_stored_curve("curve", tmp_path)


def test_loader_refuses_missing_files_and_bad_metadata(tmp_path):
    with pytest.raises(InputError, match="is missing; reinstall wkviz"):
        stored.load_stored_curve("nothing", tmp_path)
    _write_csv(tmp_path / "curve.csv", [_row(1000, 1000, 0.05)])
    meta = json.loads((stored.STORED_DIR / f"{stored.QM9_U0_SPARSE}.json").read_text())
    (tmp_path / "curve.json").write_text(json.dumps({**meta, "command": "bench --sizes {size}"}))
    with pytest.raises(InputError, match="'command' has a placeholder other than"):
        stored.load_stored_curve("curve", tmp_path)
    (tmp_path / "curve.json").write_text(json.dumps({**meta, "hypers": {"nu_max": 4, "sigma": 1}}))
    with pytest.raises(InputError, match="'hypers' are not valid"):
        stored.load_stored_curve("curve", tmp_path)
    (tmp_path / "curve.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "unit"}))
    with pytest.raises(InputError, match="lacks 'unit'"):
        stored.load_stored_curve("curve", tmp_path)


def test_only_total_energies_in_ev_share_the_stored_curves_axes():
    ref = stored.load_stored_curve()
    assert ref.comparable_to("U0", "eV") and ref.comparable_to("H", "eV") and ref.comparable_to("energy", "eV")
    assert not ref.comparable_to("U0", "kcal/mol"), "a unit the user set is not converted"
    assert not ref.comparable_to("gap", "eV", extensive=False), "an intensive energy: errors of another quantity"
    assert not ref.comparable_to("zpve", "eV")
    assert not ref.comparable_to("mulliken_dipole", "e·Å", kind="vector")
    assert not ref.comparable_to("dipole_norm", "D", extensive=False)


# ---- the figures ------------------------------------------------------------------------------------------------

def _user_table():
    rows = [{"model": m, "n_train": n, "repeat": r, "mae": (3.0 if m == "composition" else 1.0) / n ** 0.5 * (1 + 0.02 * r),
             "rmse": 1.3 / n ** 0.5} for m in ("composition", "nu=1", "mixed") for n in (10, 30, 90) for r in range(2)]
    return pd.DataFrame(rows)


def _stored_traces(fig):
    return [t for t in fig.data if t.legendgroup == "stored"]


@pytest.mark.parametrize("metric", ["mae", "rmse"])
def test_learning_curve_plot_draws_the_stored_curve_beside_the_users(metric):
    ref = stored.load_stored_curve()
    table = _user_table()
    plain = figures.learning_curve_plot(table, metric=metric, unit="eV", target="U0")
    fig = figures.learning_curve_plot(table, metric=metric, unit="eV", target="U0", reference=ref)
    assert len(fig.data) == len(plain.data) + 1, "the user's curves stay, one trace is added"
    for mine, before in zip(fig.data[:-1], plain.data):
        assert mine.name == before.name and np.allclose(mine.y, before.y)
    (trace,) = _stored_traces(fig)
    assert trace.name.replace("<br>", " ").startswith("QM9 U0, sparse Wigner kernel (stored, BENCHMARKS §13)")
    assert "slope -0." in trace.name
    assert trace.line.dash == "dash" and trace.line.color == figures.STORED_COLOR
    assert trace.marker.symbol == "diamond" and trace.mode == "lines+markers"
    assert figures.STORED_COLOR not in {t.line.color for t in plain.data}
    assert np.array_equal(trace.x, ref.n_train) and np.allclose(trace.y, getattr(ref, metric)), "in eV, on the eV axis"
    # the hover: N, M, the error in meV, the fit time
    custom = np.asarray(trace.customdata, dtype=object)
    assert list(custom[:, 0]) == [f"{n:,}" for n in ref.n_train] and list(custom[:, 1]) == [f"{m:,}" for m in ref.n_active]
    assert np.allclose(custom[:, 2].astype(float), 1000 * getattr(ref, metric))
    assert custom[0, 3].startswith(f"{ref.fit_seconds[0]:,.0f} s")
    assert f"{metric.upper()} %{{customdata[2]:.1f}} meV" in trace.hovertemplate
    assert "active environments" in trace.hovertemplate and "fit %{customdata[3]}" in trace.hovertemplate
    assert fig.layout.yaxis.title.text.startswith(f"test {metric.upper()} of U0 (eV)")
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert int(ref.n_train[-1]) in fig.layout.xaxis.tickvals and 10 in fig.layout.xaxis.tickvals
    assert min(fig.layout.yaxis.tickvals) <= getattr(ref, metric).min()


def test_the_stored_curve_is_refused_on_an_axis_of_another_unit():
    ref = stored.load_stored_curve()
    with pytest.raises(ValueError, match="stored_curve_plot"):
        figures.learning_curve_plot(_user_table(), unit="D", target="dipole_norm", reference=ref)
    with pytest.raises(ValueError, match="no unit"):
        figures.learning_curve_plot(_user_table(), unit=None, reference=ref)


def test_stored_curve_plot_stands_alone_in_its_own_unit():
    ref = stored.load_stored_curve()
    fig = figures.stored_curve_plot(ref, metric="rmse")
    (trace,) = fig.data
    assert trace.legendgroup == "stored" and np.allclose(trace.y, ref.rmse)
    assert fig.layout.yaxis.title.text.startswith("test RMSE of U0 (eV)")
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext) == [f"{n:,}" for n in ref.n_train]
    inside = [t for t in fig.layout.yaxis.tickvals if ref.rmse.min() <= t <= ref.rmse.max()]
    assert len(inside) >= 2, "a curve within one decade still gets labelled ticks"
    assert fig.layout.height < figures.learning_curve_plot(_user_table(), unit="eV").layout.height


# ---- the page -----------------------------------------------------------------------------------------------------

def _values(v):
    """A plotly JSON array: a list, or (plotly ≥ 6) a base64 typed array {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def _charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _stored_in(spec):
    return [t for t in spec["data"] if t.get("legendgroup") == "stored"]


def _captions(at):
    return " ".join(c.value for c in at.caption)


def test_the_page_shows_the_stored_curve_before_anything_is_computed():
    from streamlit.testing.v1 import AppTest

    cache.RESULTS.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    assert any("kernels" in i.value.lower() for i in at.info), "no kernels yet: the page asks for them"
    box = at.checkbox(key="curves.stored")
    assert box.label == "Show the stored QM9 curve" and box.value is True, "on for QM9 with U0"
    ref = stored.load_stored_curve()
    (spec,) = _charts(at)
    (trace,) = _stored_in(spec)
    assert trace["line"]["dash"] == "dash" and np.allclose(_values(trace["x"]), ref.n_train)
    assert np.allclose(_values(trace["y"]), ref.mae)
    text = _captions(at)
    for fact in (ref.command, ref.date, "2-core", "BENCHMARKS.md §13"):
        assert fact in text
    assert len(cache.RESULTS) == 0, "nothing was computed: no kernels, no learning curves"

    box.uncheck().run()
    assert not _charts(at) and ref.command not in _captions(at)
    box = at.checkbox(key="curves.stored")
    box.check().run()
    assert len(_charts(at)) == 1

    # another target: the default is off (the curve is of U0); ticked, it is drawn on its own axes
    at.session_state["data.target"] = "gap"
    at.run()
    assert at.checkbox(key="curves.stored").value is False and not _charts(at)
    at.checkbox(key="curves.stored").check().run()
    (spec,) = _charts(at)
    assert _stored_in(spec) and "(eV)" in spec["layout"]["yaxis"]["title"]["text"]
    assert "U0" in spec["layout"]["yaxis"]["title"]["text"]


def test_the_page_draws_the_stored_curve_on_the_users_axes_only_for_an_energy():
    """With the user's own curve: U0 (a total energy in eV) shares its axes with the stored curve; the HOMO-LUMO
    gap (eV too, but not a total energy) gets the stored curve on separate axes, with a caption saying why."""
    from streamlit.testing.v1 import AppTest

    from pages.support.state import kernel_key
    from wkviz.engine.kernels import WignerKernel

    cache.RESULTS.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["data.n"] = 24  # small: the kernels take a fraction of a second once compiled
    at.session_state["wk.hypers"] = Hypers(nu_max=2, lambda_max=2)
    at.run()
    ds, hypers = at.session_state["wk.dataset"], at.session_state["wk.hypers"]
    assert ds.n == 24
    cache.RESULTS.put(kernel_key(ds, hypers, {"tensor_rank": 0, "atomic": False}), WignerKernel(hypers).compute(ds.frames))
    at.run()
    at.slider(key="curves.n_sizes").set_value(2)
    at.slider(key="curves.repeats").set_value(1)
    at.button(key="curves.run.btn").click().run()
    assert not at.exception and not at.error
    (spec,) = _charts(at)  # one figure: the user's curves and the stored one
    (trace,) = _stored_in(spec)
    assert {t["legendgroup"] for t in spec["data"]} >= {"mixed", "composition", "stored"}
    assert "(eV)" in spec["layout"]["yaxis"]["title"]["text"]
    assert "Dashed grey diamonds" in _captions(at)

    at.session_state["data.target"] = "gap"
    at.run()
    at.checkbox(key="curves.stored").check().run()
    at.button(key="curves.run.btn").click().run()
    assert not at.exception and not at.error
    mine, alone = _charts(at)
    assert not _stored_in(mine) and "gap" in mine["layout"]["yaxis"]["title"]["text"]
    assert [t["legendgroup"] for t in alone["data"]] == ["stored"]
    assert "not a total energy" in _captions(at) and "slopes" in _captions(at)
