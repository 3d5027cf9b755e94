"""The app's large-data options, driven with AppTest on a small bundled subset with the large-data limit lowered.

``WKVIZ_LARGE_SECONDS=0`` makes every data set count as large (``pages.support.jobs.large_limits``), so 24
QM9 molecules at ν_max = 2 reach the Kernels page's tiles into an on-disk store (on a real 2-worker Dask
LocalCluster) and the Models page's sparse model. ``XDG_CACHE_HOME`` points the default store directory into a
temporary folder.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import pytest

from conftest import require

require("distributed")
require("zarr")

from wkviz import Hypers, cache  # noqa: E402
from wkviz.errors import Cancelled  # noqa: E402
from wkviz.engine.kernels import WignerKernel  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # pages.support, as the page files import it
    sys.path.insert(0, str(ROOT))
APP = str(ROOT / "app.py")
TIMEOUT = 120
N = 24


@pytest.fixture
def large(monkeypatch, tmp_path):
    monkeypatch.setenv("WKVIZ_LARGE_SECONDS", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache.RESULTS.clear()
    yield tmp_path
    cache.RESULTS.clear()


def _problems(at):
    return [e.value for e in at.exception], [e.value for e in at.error]


def _texts(elements):
    return " ".join(e.value for e in elements)


def _number(text):
    import re

    return float(re.search(r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?", text).group(0).replace(",", ""))


def _session(nu_max=2):
    """A fresh session on the first N bundled QM9 molecules with ν_max, λ_max = nu_max, 2 applied, on Kernels."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/1_Data.py").run()
    at.number_input(key="data.n").set_value(N).run()
    at.switch_page("pages/2_Kernels.py").run()
    at.slider(key="kernels.nu_max").set_value(nu_max)
    at.slider(key="kernels.lambda_max").set_value(2)
    at.button(key="kernels.apply.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    return at


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _reference(at):
    frames = at.session_state["wk.dataset"].frames
    return WignerKernel(at.session_state["wk.hypers"]).compute(frames).K


def _assert_same_kernel(K, ref):
    assert K.shape == ref.shape
    assert np.abs(K - ref).max() <= 1e-12 * np.abs(ref).max()


def test_large_limits_come_from_one_place_and_the_environment(monkeypatch):
    from pages.support import jobs, state

    monkeypatch.delenv("WKVIZ_LARGE_SECONDS", raising=False)
    monkeypatch.delenv("WKVIZ_LARGE_BYTES", raising=False)
    assert jobs.large_limits() == (jobs.LARGE_SECONDS, state.MEMORY_BUDGET / 4)
    small = {"seconds": 5.0, "output_bytes": 10**6}
    assert not jobs.is_large(small) and not jobs.is_large(None)
    assert jobs.is_large({"seconds": 121.0, "output_bytes": 0})
    assert jobs.is_large({"seconds": 1.0, "output_bytes": state.MEMORY_BUDGET // 4 + 1})
    assert "2.0 min" in jobs.large_rule() and "512 MB" in jobs.large_rule()
    monkeypatch.setenv("WKVIZ_LARGE_SECONDS", "1")
    assert jobs.is_large(small)
    monkeypatch.setenv("WKVIZ_LARGE_SECONDS", "soon")  # unreadable: the default stays in force
    assert jobs.large_limits()[0] == jobs.LARGE_SECONDS


def test_cluster_workers_do_not_rerun_the_page_script(monkeypatch):
    """Streamlit installs each page as ``__main__``; spawned processes would re-run that file first."""
    import multiprocessing.spawn
    import types

    from wkviz.scale.distributed import _main_not_rerun

    page = types.ModuleType("__main__")
    page.__file__ = str(ROOT / "pages" / "2_Kernels.py")
    monkeypatch.setitem(sys.modules, "__main__", page)
    assert multiprocessing.spawn.get_preparation_data("w")["init_main_from_path"] == page.__file__
    with _main_not_rerun():
        prep = multiprocessing.spawn.get_preparation_data("w")
        assert "init_main_from_path" not in prep and "init_main_from_name" not in prep
    assert sys.modules["__main__"] is page


@pytest.mark.slow
def test_store_option_tiles_on_a_local_cluster_then_a_new_session_reuses_every_tile(large):
    at = _session()
    # the store option, with its default directory under the per-user cache, named by the content hash
    panel = _texts(at.markdown)
    assert "above the large-data limit" in panel
    assert "New store" in panel and "**6 tiles**" in panel  # 24 structures in tiles of 8: upper triangle of 3 × 3
    default = at.text_input(key="kernels.store_path").placeholder
    assert pathlib.Path(default).parent == large / "cache" / "wkviz" / "stores"

    at.button(key="kernels.tiles.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    job = at.session_state["wk.kernel_job"]
    info = job.result
    assert job.state().status == "done" and info["path"] == default
    assert (info["tiles_total"], info["tiles_computed"], info["tiles_reused"]) == (6, 6, 0)
    assert info["fallback"] is None and "local Dask cluster of 2" in info["where"]
    # the cluster (2 single-threaded worker processes) was shut down when the job ended
    assert len(set(info["worker_pids"])) == 2
    deadline = time.time() + 15
    while any(_alive(p) for p in info["worker_pids"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in info["worker_pids"])
    res = cache.RESULTS.get(at.session_state["wk.kernel_job_key"])
    ref = _reference(at)
    _assert_same_kernel(res.K, ref)
    assert "Tiles: **6 computed**, 0 reused" in _texts(at.info)
    assert f"Kernels for {N} structures, ν = 0…2" in at.success[0].value

    # a later session (nothing in memory) finds every tile in the store and computes none
    cache.RESULTS.clear()
    at = _session()
    assert "**6 of 6 tiles** already done" in _texts(at.markdown)
    button = at.button(key="kernels.tiles.btn")
    assert button.label == "Load the kernels from the store"
    button.click().run()
    assert not any(_problems(at)), _problems(at)
    again = at.session_state["wk.kernel_job"].result
    assert (again["tiles_computed"], again["tiles_reused"], again["worker_pids"]) == (0, 6, [])
    _assert_same_kernel(cache.RESULTS.get(at.session_state["wk.kernel_job_key"]).K, ref)
    assert "Tiles: **0 computed**, 6 reused" in _texts(at.info)

    # that store named for other hyperparameters: the store's own refusal, as a message in the page
    at.text_input(key="kernels.store_path").set_value(default).run()
    at.slider(key="kernels.nu_max").set_value(3)
    at.button(key="kernels.apply.btn").click().run()
    exc, err = _problems(at)
    assert not exc
    assert any(e.startswith("This store cannot be used: the kernel store at") and "holds content hash" in e
               and "different hyperparameters" in e for e in err), err
    assert "kernels.tiles.btn" not in [b.key for b in at.button]


@pytest.mark.slow
def test_without_a_cluster_tiles_run_in_this_process_resume_after_cancel_and_say_so(large, monkeypatch, tmp_path):
    from pages.support import jobs
    from wkviz import data
    from wkviz.scale import distributed

    def no_cluster(*args, **kwargs):
        raise OSError("cannot start worker processes here")

    monkeypatch.setattr(distributed, "local_cluster", no_cluster)
    frames = data.load_sample("qm9")[:10]
    h = Hypers(density_width=0.3, density_scaling=None, nu_max=2, lambda_max=2)
    request = {"tensor_rank": 0, "atomic": False}
    stop = []

    def progress(fraction, eta):
        stop.append(fraction)

    with pytest.raises(Cancelled):  # cancelled once the first tile is in
        jobs.compute_store_tiles(frames, h, request, tmp_path / "s", progress=progress, cancel=lambda: bool(stop))
    result, info = jobs.compute_store_tiles(frames, h, request, tmp_path / "s")
    assert (info["tiles_total"], info["tiles_reused"], info["tiles_computed"]) == (3, 1, 2)
    assert "OSError: cannot start worker processes here" in info["fallback"]
    assert info["where"].startswith("in this process") and "could not be started" in info["where"]
    _assert_same_kernel(result.K, WignerKernel(h).compute(frames).K)
    from wkviz.scale.store import KernelStore

    store = KernelStore.open(tmp_path / "s", frames, hypers=h)
    assert store.write_counts().max() == 1, "no tile computed twice"
    assert [r["status"] for r in store.runs] == ["cancelled", "finished"]

    # the page says where the tiles ran, and why
    at = _session()
    at.button(key="kernels.tiles.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    shown = _texts(at.info)
    assert "Tiles: **6 computed**" in shown and "in this process, one tile after another, because a local Dask " \
        "cluster could not be started (OSError: cannot start worker processes here)" in shown
    _assert_same_kernel(cache.RESULTS.get(at.session_state["wk.kernel_job_key"]).K, _reference(at))


def test_sparse_model_joins_the_exact_models_in_the_table_and_parity_plot(large):
    at = _session()
    at.button(key="kernels.compute.btn").click().run()  # the exact kernels, in memory
    at.switch_page("pages/3_Models.py").run()
    assert not any(_problems(at)), _problems(at)
    at.checkbox(key="models.compare").uncheck()
    at.button(key="models.fit.btn").click().run()
    assert not any(_problems(at)), _problems(at)

    # the sparse panel: M active structures with the N×M against N×N cost
    assert "Sparse model for a large data set" in [h.value for h in at.subheader]
    at.number_input(key="models.sparse_m").set_value(8).run()
    metrics = {m.label: m.value for m in at.metric}
    train, test = at.session_state["wk.fit"]["train"], at.session_state["wk.fit"]["test"]
    n_train = len(train)
    sparse_pairs, exact_pairs = (_number(metrics["Kernel pairs, sparse"]),
                                 _number(metrics["Kernel pairs, exact N×N"]))
    assert 0 < sparse_pairs < exact_pairs
    assert exact_pairs == WignerKernel(at.session_state["wk.hypers"]).estimate(
        [at.session_state["wk.dataset"].frames[i] for i in train])["n_pairs"]
    assert "Estimated kernel time" in metrics

    at.button(key="models.sparse.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    meta = at.session_state["wk.sparse_fit"]
    name = meta["name"]
    assert name == "sparse M=8 structures"
    result = cache.RESULTS.get(meta["key"])
    sparse = result["models"][name]
    y = np.asarray(result["y_true"])
    assert sparse["metrics"]["mae"] == pytest.approx(np.mean(np.abs(sparse["pred"] - y)))
    assert np.all(sparse["std"] > 0), "error bars from the exact kernels' self-similarities"
    # shown in the page: its test MAE, the comparison table next to the exact mixed model, the parity plot
    assert at.selectbox(key="models.show").value == name
    mae = _number({m.label: m.value for m in at.metric}["Test MAE (eV)"])
    assert mae == pytest.approx(sparse["metrics"]["mae"], rel=1e-3) and 0 < mae < 5.0
    table = at.dataframe[0].value
    assert list(table["model"]) == ["mixed Σ_ν c_ν K^ν", name]
    assert len(at.get("plotly_chart")) >= 1 and n_train + len(test) == N
    assert any("Reproduce the sparse model" in e.proto.label for e in at.expander)

    # other target kinds: said, not attempted
    at.switch_page("pages/1_Data.py").run()
    at.selectbox(key="data.target").set_value("mulliken_dipole").run()
    at.switch_page("pages/3_Models.py").run()
    assert not any(_problems(at)), _problems(at)
    assert "The sparse model learns scalar targets only" in _texts(at.info)
    assert "models.sparse.btn" not in [b.key for b in at.button]


def test_sparse_model_on_active_environments_needs_no_full_kernel(large):
    at = _session()
    at.switch_page("pages/3_Models.py").run()
    assert not any(_problems(at)), _problems(at)
    assert "The exact models need the full N×N kernels" in _texts(at.info)
    at.radio(key="models.sparse_kind").set_value("environments").run()
    at.number_input(key="models.sparse_m").set_value(40).run()
    at.slider(key="models.folds").set_value(3).run()  # the options are in the panel when there is no exact form
    at.button(key="models.sparse.btn").click().run()
    assert not any(_problems(at)), _problems(at)
    meta = at.session_state["wk.sparse_fit"]
    assert meta["name"] == "sparse M=40 environments" and meta["folds"] == 3
    result = cache.RESULTS.get(meta["key"])
    model = result["models"][meta["name"]]
    assert len(result["active"]) == 40 and model["std"] is None
    mae = _number({m.label: m.value for m in at.metric}["Test MAE (eV)"])
    assert mae == pytest.approx(model["metrics"]["mae"], rel=1e-3) and np.isfinite(mae)
    assert not at.session_state.get("wk.fit"), "no exact fit was made"
