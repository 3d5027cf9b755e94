"""The Streamlit app, driven headlessly with streamlit.testing.v1.AppTest, and its caching layer (wkviz.cache).

The app is a ``pages/`` multipage app: ``app.py`` is the Home page, ``pages/<n>_<Name>.py`` the others, and every
page file sets itself up through ``pages.support.nav.run_page``. The tests reach pages the ways a user can:
from Home with ``switch_page``, and by starting a fresh run directly on a page file.

Widgets are found by their namespaced keys ("kernels.nu_max"), never by position. Sizes are small (60 QM9
molecules, ν_max ≤ 3) so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import threading
import time

import ase.build
import numpy as np
import pytest

from wkviz import Hypers, cache
from wkviz.errors import Cancelled, InputError

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pages.support, as the page files import it
    sys.path.insert(0, str(ROOT))
APP = str(ROOT / "app.py")
PAGES = {
    "home": "app.py",
    "data": "pages/1_Data.py",
    "kernels": "pages/2_Kernels.py",
    "models": "pages/3_Models.py",
    "learning_curves": "pages/4_Learning_curves.py",
    "map": "pages/5_Map.py",
    "teach": "pages/6_Teach.py",
}
TIMEOUT = 240


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _problems(at):
    return [e.value for e in at.exception], [e.value for e in at.error]


def _goto(at, page):
    at.switch_page(PAGES[page]).run()
    exc, err = _problems(at)
    assert not exc, f"{page}: {exc}"
    return at


def _values(v):
    """A plotly JSON array: a list, or (plotly ≥ 6) a base64 typed array {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def _chart_spec(at, index=0):
    import json

    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _sidebar_text(at):
    return " ".join(m.value for m in at.sidebar.markdown)


def _number(text):
    return float(re.search(r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?", text).group(0).replace(",", ""))


# ---- wkviz.cache ----------------------------------------------------------------------------------------------------

def test_structure_hash_sees_geometry_not_targets():
    a = ase.build.molecule("CH3OH")
    h = cache.hash_structures([a])
    b = a.copy()
    b.info["U0"] = -1.0  # a target is not part of the kernel's content
    assert cache.hash_structures([b]) == h
    b.positions[2, 1] += 1e-9
    assert cache.hash_structures([b]) != h
    c = a.copy()
    c.numbers[0] = 7
    assert cache.hash_structures([c]) != h
    assert cache.hash_structures([a, a]) != h
    assert cache.hash_bytes(b"abc") == cache.hash_bytes(bytes(b"abc")) != cache.hash_bytes(b"abd")


def test_hash_key_combines_hypers_arrays_and_options():
    k = cache.hash_key("data", Hypers(density_width=0.3, density_scaling=None, nu_max=3), np.arange(4), {"atomic": False, "rank": 1})
    assert k == cache.hash_key("data", Hypers(density_width=0.3, density_scaling=None, nu_max=3), np.arange(4), {"rank": 1, "atomic": False})
    assert k != cache.hash_key("data", Hypers(density_width=0.3, density_scaling=None, nu_max=4), np.arange(4), {"atomic": False, "rank": 1})
    assert k != cache.hash_key("data", Hypers(density_width=0.3, density_scaling=None, nu_max=3), np.arange(4, dtype=np.int32), {"atomic": False, "rank": 1})
    with pytest.raises(TypeError, match="content key"):
        cache.hash_key(object())


def test_result_store_evicts_least_recently_used_beyond_budget():
    store = cache.ResultStore(max_bytes=3 * 800)
    for name in "abc":
        store.put(name, np.zeros(100))  # 800 bytes each
    assert store.get("a") is not None  # a is now the most recent
    store.put("d", np.zeros(100))
    assert "b" not in store and "a" in store and "d" in store
    store.put("huge", np.zeros(10_000))
    assert len(store) == 1 and "huge" in store, "the newest result is kept even when alone over budget"


def test_background_job_reports_progress_and_stores_result():
    release = threading.Event()

    def work(progress, cancel):
        progress(0.5, 1.0)
        release.wait(5)
        return 42

    job = cache.BackgroundJob(work, label="t", key="test:job").start()
    deadline = time.time() + 5
    while job.state().fraction < 0.5 and time.time() < deadline:
        time.sleep(0.01)
    state = job.state()
    assert state.status == "running" and state.fraction == 0.5 and state.eta_seconds == 1.0
    release.set()
    assert job.join(5)
    assert job.state().status == "done" and job.result == 42 and cache.RESULTS.get("test:job") == 42


def test_background_job_cancel_and_errors():
    def slow(progress, cancel):
        for _ in range(500):
            if cancel.is_set():
                raise Cancelled("stopped")
            time.sleep(0.01)
        return "finished"

    job = cache.BackgroundJob(slow, use_engine_lock=False).start()
    job.cancel()
    assert job.join(5) and job.state().status == "cancelled" and job.result is None

    def bad_input(progress, cancel):
        raise InputError("structure 3: two atoms 0.00 Å apart")

    job = cache.BackgroundJob(bad_input).start()
    job.join(5)
    assert job.state().status == "failed" and isinstance(job.error, InputError) and job.error_traceback is None

    def bug(progress, cancel):
        raise ZeroDivisionError("oops")

    job = cache.BackgroundJob(bug).start()
    job.join(5)
    assert job.state().status == "failed" and "ZeroDivisionError" in job.error_traceback


def test_engine_lock_queues_a_second_caller_and_lets_it_cancel():
    from wkviz import runtime

    waited, taken, release = [], threading.Event(), threading.Event()

    def other_session():  # another browser session's thread (the lock is re-entrant within one thread)
        with runtime.engine_lock():
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=other_session)
    holder.start()
    assert taken.wait(10)
    flag = threading.Event()
    flag.set()
    try:
        with pytest.raises(Cancelled):
            with runtime.engine_lock(on_wait=lambda: waited.append(True), cancel=flag):
                pass
    finally:
        release.set()
        holder.join(10)
    assert waited == [True]
    with runtime.engine_lock(on_wait=lambda: waited.append(False)):
        pass
    assert waited == [True], "a free lock is taken without waiting"


def test_two_sessions_computing_kernels_at_once_do_not_interfere():
    """Two jobs (as two browser sessions would start them) on the real engine: both finish, same numbers."""
    from wkviz.engine.kernels import WignerKernel

    frames = [ase.build.molecule(n) for n in ("H2O", "NH3", "CH4", "CH3OH", "C2H6", "HCOOH")]
    engine = WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=3, lambda_max=2))
    jobs = [cache.BackgroundJob(lambda progress, cancel: engine.compute(frames, progress=progress, cancel=cancel))
            .start() for _ in range(2)]
    assert all(job.join(120) for job in jobs)
    assert [job.state().status for job in jobs] == ["done", "done"]
    assert np.array_equal(jobs[0].result.K, jobs[1].result.K)


def test_cancelling_a_kernel_job_stops_the_engine():
    from wkviz import data
    from wkviz.engine.kernels import WignerKernel

    frames = data.load_sample("qm9")[:80]
    engine = WignerKernel(Hypers(density_width=0.3, density_scaling=None, nu_max=4), tile_size=32)  # small tiles: many cancellation points
    seen = []

    def work(progress, cancel):
        def report(fraction, eta):
            seen.append(fraction)
            progress(fraction, eta)
            if fraction > 0:
                cancel.set()  # what the page's Cancel button does
        return engine.compute(frames, progress=report, cancel=cancel)

    job = cache.BackgroundJob(work, key="test:cancelled").start()
    assert job.join(120)
    assert job.state().status == "cancelled" and job.result is None and "test:cancelled" not in cache.RESULTS
    assert 0 < max(seen) < 1, "stopped part-way"


# ---- every page renders, however it is reached ------------------------------------------------------------------

def test_navigation_matches_the_page_files_and_streamlit_order():
    """The sidebar lists every page file once, in Streamlit's order, under the label Streamlit derives from its
    name (Home stands for app.py); the shared layer is not a page."""
    from streamlit.source_util import page_icon_and_name, page_sort_key

    from pages.support import nav

    items = [item for section in nav.NAVIGATION.values() for item in section]
    assert items[0].path == "app.py" and items[0].label == "Home"
    files = sorted((p for p in (ROOT / "pages").glob("*.py") if p.name != "__init__.py"), key=page_sort_key)
    assert [f"pages/{p.name}" for p in files] == [item.path for item in items[1:]]
    assert [page_icon_and_name(p)[1].replace("_", " ") for p in files] == [item.label for item in items[1:]]
    assert sorted(PAGES.values()) == sorted(item.path for item in items)
    assert (ROOT / "pages" / "support" / "nav.py").is_file()


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_without_exception(page):
    at = _app()
    at.run()
    assert not _problems(at)[0]
    if page != "home":
        _goto(at, page)
    assert at.title and at.title[0].value
    assert not _problems(at)[1], f"{page} shows errors on a fresh session: {_problems(at)[1]}"
    # the sidebar shows the navigation and the session's data set, target and hyperparameters on every page
    side = _sidebar_text(at)
    assert "QM9 subset" in side and "U0" in side and "up to 5-body correlations" in side
    assert [c.value for c in at.sidebar.caption][:3] == ["Start", "Workflow", "Understand"]


@pytest.mark.parametrize("page", [p for p in PAGES if p != "home"])
def test_a_run_started_directly_on_a_page_file_sets_itself_up(page):
    """What a deep link or ``streamlit run pages/…`` does: the page file runs first, with no app.py before it."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / PAGES[page]), default_timeout=TIMEOUT)
    at.run()
    exc, err = _problems(at)
    assert not exc and not err, (exc, err)
    assert at.title and at.title[0].value
    side = _sidebar_text(at)
    assert "Current session" in side and "QM9 subset" in side and "up to 5-body correlations" in side
    # the session defaults exist although app.py never ran
    assert at.session_state["kernels.nu_max"] == 4 and at.session_state["wk.dataset"].n == 300
    # links to other pages degrade to plain labels (no other page is registered in such a run)
    assert any("started on its own" in c.value for c in at.sidebar.caption)


def _failing_page(root):
    import sys

    sys.path.insert(0, root)
    import streamlit as st

    from pages.support import nav
    from wkviz.errors import InputError

    def render():
        st.title("A page with bad input")
        raise InputError("structure 3 has two atoms 0.00 Å apart; fix or remove it")

    nav.run_page(render, "Broken")


def test_bad_input_escaping_a_page_becomes_a_message_and_the_sidebar_stays():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_failing_page, args=(str(ROOT),), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["structure 3 has two atoms 0.00 Å apart; fix or remove it"]
    assert at.title[0].value == "A page with bad input"
    assert "Current session" in _sidebar_text(at)


# ---- the main flow ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_main_flow_qm9_kernels_fit_learning_curve_map():
    cache.RESULTS.clear()
    at = _app()
    at.run()
    # Data: 60 molecules of the bundled QM9 subset, target U0
    _goto(at, "data")
    at.number_input(key="data.n").set_value(60).run()
    assert at.session_state["wk.dataset"].n == 60
    assert at.selectbox(key="data.target").value == "U0"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Structures"] == "60"

    # Kernels: ν_max = 3, λ_max = 2, estimate, compute
    _goto(at, "kernels")
    at.slider(key="kernels.nu_max").set_value(3)
    at.slider(key="kernels.lambda_max").set_value(2)
    at.button(key="kernels.apply.btn").click().run()
    est = {m.label: m.value for m in at.metric}
    assert _number(est["Atom pairs (same element)"]) > 60
    at.button(key="kernels.compute.btn").click().run()
    assert not any(_problems(at))
    done = at.success[0].value
    assert "60 structures, ν = 0…3" in done
    key = at.session_state["wk.kernel_job_key"]
    res = cache.RESULTS.get(key)
    assert res.K.shape == (4, 60, 60)
    assert np.allclose(res.K, np.transpose(res.K, (0, 2, 1)))
    assert np.all(np.diag(res.K[2]) > 0)

    # Models: fit the mixed model and the baselines
    _goto(at, "models")
    at.button(key="models.fit.btn").click().run()
    assert not any(_problems(at))
    metrics = {m.label: m.value for m in at.metric}
    mae = _number(metrics["Test MAE (eV)"])
    assert 0 < mae < 5.0
    fit = at.session_state["wk.fit"]
    result = cache.RESULTS.get(fit["key"])
    assert set(result["models"]) == {"composition", "nu=1", "nu=2", "nu=3", "mixed"}
    assert len(fit["test"]) == 12 and len(fit["train"]) == 48
    mixed = result["models"]["mixed"]
    y_true = np.asarray(result["y_true"])
    assert mixed["metrics"]["mae"] == pytest.approx(np.mean(np.abs(mixed["pred"] - y_true)))
    assert mae == pytest.approx(mixed["metrics"]["mae"], rel=1e-3)
    assert mixed["metrics"]["mae"] < result["models"]["composition"]["metrics"]["mae"], \
        "Wigner kernels must beat the composition baseline on U0"
    assert np.all(mixed["std"] > 0)
    assert sum(mixed["weights"].values()) == pytest.approx(1.0)
    assert fit["selection"] == "evidence"  # the default, as `python -m wkviz fit`

    # Learning curves: 3 sizes × 2 repeats
    _goto(at, "learning_curves")
    at.slider(key="curves.n_sizes").set_value(3)
    at.slider(key="curves.repeats").set_value(2)
    at.button(key="curves.run.btn").click().run()
    assert not any(_problems(at))
    curve = cache.RESULTS.get(at.session_state["wk.lc"]["key"])
    assert len(curve.sizes) == 3 and len(curve.rows) == 3 * 2 * 5
    slopes = curve.slopes()
    assert slopes["mixed"] < 0, "more training data must lower the error of the mixed model"
    table = at.dataframe[0].value
    assert list(table["model"])[-1].startswith("mixed") and np.isfinite(table["log–log slope"]).all()

    # Map (chemiscope): with a fit, the test structures coloured by the mixed model's error; then all 60
    _goto(at, "map")
    shown = _chemiscope(at)
    props = shown["properties"]
    assert len(shown["structures"]) == 12
    assert "% of its variance" in props["mixed PC1"]["description"] and "ν=3 PC2" in props
    assert shown["settings"]["map"]["color"]["property"] == "|error| (mixed)"
    assert np.allclose(sorted(props["|error| (mixed)"]["values"]), sorted(np.abs(np.asarray(mixed["pred"]) - y_true)),
                       rtol=1e-6)
    test_ids = sorted(int(i) for i in fit["test"])
    assert props["structure"]["values"] == test_ids
    at.radio(key="map.which").set_value("all structures").run()
    shown = _chemiscope(at)
    assert len(shown["structures"]) == 60 and "|error| (mixed)" not in shown["properties"]
    assert shown["settings"]["map"]["color"]["property"] == "U0 per atom"  # not the total, which counts atoms

    # Navigating back shows the cached kernels: nothing is recomputed, the widgets kept their values
    _goto(at, "kernels")
    assert at.slider(key="kernels.nu_max").value == 3
    assert at.success[0].value == done
    assert cache.RESULTS.get(key) is res

    # Models again, weights chosen by k-fold CV: a new fit (new cache key), still far better than composition
    _goto(at, "models")
    at.selectbox(key="models.selection").set_value("k-fold cross-validation")
    at.button(key="models.fit.btn").click().run()
    assert not any(_problems(at))
    fit_cv = at.session_state["wk.fit"]
    assert fit_cv["selection"] == "cv" and fit_cv["key"] != fit["key"]
    res_cv = cache.RESULTS.get(fit_cv["key"])
    assert res_cv["models"]["mixed"]["metrics"]["mae"] < 0.5 * res_cv["models"]["composition"]["metrics"]["mae"]


def test_bad_hyperparameters_show_a_message_not_a_traceback():
    at = _app()
    at.run()
    _goto(at, "kernels")
    at.number_input(key="kernels.cutoff").set_value(1.0)
    at.number_input(key="kernels.cutoff_width").set_value(2.0)
    at.button(key="kernels.apply.btn").click().run()
    exc, err = _problems(at)
    assert not exc
    assert any("cutoff_width must be above 0 and at most the cutoff" in e for e in err)
    # the previous, valid hyperparameters stay in force
    assert at.session_state["wk.hypers"].cutoff == 5.0


def _chemiscope(at) -> dict:
    """The dataset (with its settings) the page passed to chemiscope's component."""
    comps = at.get("component_instance")
    assert comps, "no chemiscope component on the page"
    args = json.loads(comps[-1].proto.json_args)
    return args["dataset"]


def test_uploads_bad_file_message_then_good_file_switches_data_set():
    at = _app()
    at.run()
    _goto(at, "data")
    at.radio(key="data.source").set_value("Upload a file").run()
    bad = b"3\n\nO 0 0 0\nH 0.96 0 0\n"  # declares 3 atoms, has 2
    at.file_uploader(key="data.upload").set_value(("broken.xyz", bad, "chemical/x-xyz")).run()
    exc, err = _problems(at)
    assert not exc
    assert any("broken.xyz" in e and "declares 3 atoms" in e for e in err), err
    assert at.session_state["wk.dataset"].name == "qm9", "a bad upload leaves the current data set in place"

    good = "".join(f"3\nenergy={-14.0 - 0.1 * k}\nO 0 0 0\nH {0.96 + 0.01 * k} 0 0\nH 0 0.96 0\n"
                   for k in range(5)).encode()
    at.file_uploader(key="data.upload").set_value(("water.xyz", good, "chemical/x-xyz")).run()
    assert not any(_problems(at))
    ds = at.session_state["wk.dataset"]
    assert ds.name == "upload" and ds.n == 5
    assert at.selectbox(key="data.target").value == "energy"
    side = _sidebar_text(at)
    assert "water.xyz" in side and "energy" in side
    # an extended-XYZ file declares no unit: eV is assumed from the name, said so, and the user can set it
    table = at.dataframe[0].value
    assert table.set_index("key").loc["energy", "unit"] == "eV (assumed)"
    at.text_input(key=f"data.unit.{ds.digest[:8]}.energy").set_value("kcal/mol").run()
    assert at.dataframe[0].value.set_index("key").loc["energy", "unit"] == "kcal/mol (set by you)"
    assert "(kcal/mol)" in _sidebar_text(at)


def test_split_moves_test_structures_with_unseen_elements_to_training():
    """In 300 QM9 molecules fluorine is rare; a random test set can hold the only fluorine molecule."""
    from wkviz import data

    at = _app()
    at.run()
    _goto(at, "data")
    at.number_input(key="data.n").set_value(300).run()
    frames = at.session_state["wk.dataset"].frames
    train, test = data.random_split(300, 0.2, 0)
    seen = set(np.concatenate([frames[i].numbers for i in train]).tolist())
    unseen = [int(i) for i in test if not set(frames[i].numbers.tolist()) <= seen]
    assert unseen, "the premise: seed 0 puts a molecule with an unseen element in the test set"
    note = next(c.value for c in at.caption if c.value.startswith("Moved to training"))
    assert sorted(int(x) for x in re.findall(r"\d+", note.split(",  which")[0].split("which")[0])) == unseen
    assert f"**{len(test) - len(unseen)}** test structures" in " ".join(m.value for m in at.markdown)


def test_target_change_resets_the_mean_kernel_default():
    at = _app()
    at.run()
    _goto(at, "models")
    assert at.session_state["models.intensive"] is False  # U0: extensive, sum kernel
    _goto(at, "data")
    at.selectbox(key="data.target").set_value("gap").run()
    _goto(at, "models")
    assert at.session_state["models.intensive"] is True  # the HOMO-LUMO gap: intensive, mean kernel


def test_missing_3dmol_copy_gives_a_notice_instead_of_a_broken_viewer(monkeypatch, tmp_path):
    from wkviz.views import viewer

    monkeypatch.setattr(viewer, "STATIC_DIR", tmp_path)
    at = _app()
    at.run()
    _goto(at, "teach")  # the py3Dmol viewers (the Data and Map pages use chemiscope, which brings its own)
    assert any("scripts/fetch_3dmol.py" in w.value for w in at.warning)
    assert not at.get("iframe")


def test_pages_that_need_kernels_point_to_the_kernels_page():
    cache.RESULTS.clear()
    at = _app()
    at.run()
    for page in ("models", "learning_curves", "map"):
        _goto(at, page)
        assert any("kernels" in i.value.lower() for i in at.info), page


# ---- Teach: the cost of body order, measured ------------------------------------------------------------------

@pytest.mark.slow
def test_teach_measures_wigner_kernels_against_explicit_features():
    from wkviz.engine import features
    from wkviz.evaluation import scaling

    at = _app()
    at.run()
    _goto(at, "teach")
    assert any(i.value.startswith("Choose a few structures") for i in at.info)
    at.multiselect(key="teach.cost_ids").set_value([0, 1])
    at.slider(key="teach.cost_nu_max").set_value(3)
    at.select_slider(key="teach.cost_n_radial").set_value(1)
    at.selectbox(key="teach.cost_budget_mb").set_value(64)
    at.slider(key="teach.cost_nu_basis").set_value(2)
    at.button(key="teach.cost.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    res = cache.RESULTS.get(at.session_state["wk.cost_request"]["key"])
    frames = at.session_state["wk.dataset"].frames[:2]
    n_env = sum(len(a) for a in frames)
    n_species = len(set(np.concatenate([a.numbers for a in frames]).tolist()))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Atomic environments"] == str(n_env) == str(res.n_environments)
    assert metrics["Density basis"] == f"{n_species} × 1/1/1/1"
    # the two routes compute the same kernel: 8π² × the linear kernel of the complete features
    assert float(metrics["Kernels agree to"]) < 1e-10 and res.max_deviation < 1e-10
    table = at.dataframe[-1].value
    assert list(table["ν"]) == [1, 2, 3]
    counts = [features.n_invariant_features(nu, 1, n_species, 3) for nu in (1, 2, 3)]
    assert list(table["features per environment"]) == [f"{n:,}" for n in counts]
    assert list(table["explicit features"]) == ["measured"] * 3
    rows = res.summary_rows()
    assert [r["features"] for r in rows] == counts
    assert all(r["wigner_seconds"] > 0 and r["features_seconds"] > 0 for r in rows)
    assert any("Both routes ran up to ν = 3" in s.value for s in at.success)
    # time against ν, memory, feature counts and basis size, drawn from those measurements
    specs = {}
    for i in range(len(at.get("plotly_chart"))):
        spec = _chart_spec(at, i)
        specs[((spec["layout"].get("title") or {}).get("text") or "").replace("<br>", " ")] = spec
    time_chart = specs["Wall time against body order"]
    wigner = next(t for t in time_chart["data"] if t["name"] == scaling.WIGNER)
    assert np.allclose(_values(wigner["y"]), [r["wigner_seconds"] for r in rows])
    assert "Peak memory against body order" in specs and "Time against radial basis size at ν = 2" in specs
    count_line = next(t for t in specs["Invariant features per environment (explicit route)"]["data"]
                      if t["name"].startswith("1/1/1/1"))
    assert _values(count_line["y"]) == counts
    # the basis experiment includes the engine's basis-free route
    routes = {r["route"] for r in res.basis}
    assert routes == {scaling.WIGNER, scaling.FEATURES, scaling.EXACT}
    assert [r["n_radial"] for r in res.basis if r["route"] == scaling.WIGNER][:2] == [1, 2]

    # the whole optimal basis: the explicit features run out of the memory budget at ν = 3 and stop, with a note
    at.select_slider(key="teach.cost_n_radial").set_value("all")
    at.button(key="teach.cost.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    res = cache.RESULTS.get(at.session_state["wk.cost_request"]["key"])
    assert res.stopped_at == 3
    stopped = [r for r in res.body_order if r["route"] == scaling.FEATURES and r["nu"] == 3][0]
    assert stopped["status"] == "stopped" and stopped["estimate_bytes"] > 64 * 2**20 and stopped["seconds"] is None
    assert any("Explicit features ran up to ν = 2; ν = 3 was not started" in w.value for w in at.warning)
    assert list(at.dataframe[-1].value["features time"])[2] == "not run"
    wigner3 = [r for r in res.body_order if r["route"] == scaling.WIGNER and r["nu"] == 3][0]
    assert wigner3["status"] == "measured" and wigner3["seconds"] > 0


_WITHOUT_TEST_DEPS = r'''
import importlib.abc, sys
BLOCKED = {"featomic", "qm9pack", "playwright", "pytest_playwright"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in requirements.txt)")
        return None

sys.meta_path.insert(0, Blocker())
import importlib.util
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] in BLOCKED else _find_spec(name, *a, **k)

from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120)
at.run()
for page in sys.argv[2:]:
    at.switch_page(page).run()
    assert not at.exception, (page, [e.value for e in at.exception])
at.switch_page("pages/1_Data.py").run()
at.radio(key="data.source").set_value("Full QM9 (qm9pack)").run()
assert not at.exception
print("WARNINGS:", " | ".join(w.value for w in at.warning))
print("LOADED:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
'''


@pytest.mark.slow
def test_the_app_runs_without_the_test_dependencies():
    """`make run` installs requirements.txt only: every page renders with featomic, qm9pack and playwright
    unimportable (a fresh interpreter that refuses them), and the Data page says how to get full QM9."""
    import subprocess

    pages = [p for name, p in PAGES.items() if name != "home"]
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TEST_DEPS, str(APP), *pages], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED: []" in out.stdout
    assert "python -m pip install qm9pack" in out.stdout
