"""Kernel tiles on a real 2-worker dask LocalCluster: equal to the local engine, resumable, robust to a dead worker."""

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from ase.build import molecule

from conftest import require

require("distributed")
require("zarr")

# the client fixture starts a 2-worker Dask cluster for the module (its few quick checks ride along)
pytestmark = pytest.mark.slow

from wkviz import Hypers  # noqa: E402
from wkviz.cli.distributed import add_distributed_flags, compute_distributed  # noqa: E402
from wkviz.scale.distributed import choose_tile_size, compute_tiles, local_cluster  # noqa: E402
from wkviz.errors import Cancelled, InputError, MemoryBudgetError, WkvizError  # noqa: E402
from wkviz.engine.kernels import KernelResult, WignerKernel  # noqa: E402
from wkviz.scale.store import KernelStore  # noqa: E402

H = Hypers(density_width=0.3, density_scaling=None, nu_max=2, lambda_max=2, cutoff=4.0)
NAMES = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "HCN", "C2H4", "H2CO", "CO2", "CH3CN", "CH3NO2", "CH3CH2OH"]


@pytest.fixture(scope="module")
def frames():
    return [molecule(n) for n in NAMES]


@pytest.fixture(scope="module")
def local(frames):
    return WignerKernel(H).compute(frames)


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def _assert_same(K, ref):
    # same engine, same pairs: only the summation order of centre pairs differs (rounding level)
    assert K.shape == ref.shape
    assert np.abs(K - ref).max() <= 1e-13 * np.abs(ref).max()
    np.testing.assert_array_equal(K[0], ref[0])


def test_tiles_on_two_workers_equal_the_local_kernel(client, frames, local, tmp_path):
    run = compute_tiles(frames, hypers=H, client=client, store=tmp_path / "s", tile_size=4)
    assert run.tiles_total == 6 and run.tiles_computed == 6 and run.tiles_reused == 0
    assert run.workers == 2
    _assert_same(run.result.K, local.K)
    # both workers took part, each single-threaded with Numba pinned to one thread
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2
    threads = client.run(lambda: __import__("numba").get_num_threads())
    assert set(threads.values()) == {1}

    # a later session reuses every tile and computes nothing
    again = compute_tiles(frames, hypers=H, client=client, store=tmp_path / "s", tile_size=4)
    assert again.tiles_computed == 0 and again.tiles_reused == 6
    _assert_same(again.result.K, local.K)


def test_rectangular_request_with_vector_kernels(client, frames):
    a, b = frames[:5], frames[5:]
    ref = WignerKernel(H).compute(a, b, tensor_rank=1)
    run = compute_tiles(a, b, hypers=H, client=client, tile_size=2, tensor_rank=1)
    assert run.store is None and run.tiles_total == 3 * 4
    _assert_same(run.result.K, ref.K)
    assert np.abs(run.result.K_vector - ref.K_vector).max() <= 1e-13 * np.abs(ref.K_vector).max()


def test_interrupted_run_resumes_without_losing_or_repeating_tiles(client, frames, local, tmp_path):
    path = tmp_path / "s"
    finished = []

    def progress(fraction, eta):
        finished.append(fraction)

    # the cancel flag trips once 3 tiles are in: the run stops, queued tiles are dropped
    with pytest.raises(Cancelled):
        compute_tiles(frames, hypers=H, client=client, store=path, tile_size=3, progress=progress,
                      cancel=lambda: len(finished) > 3, max_in_flight=2)
    store = KernelStore.open(path, frames, hypers=H)
    done_first = store.n_done
    assert 3 <= done_first < store.n_tiles == 10
    assert store.runs[0]["status"] == "cancelled" and store.runs[0]["tiles_computed"] == done_first

    run = compute_tiles(frames, hypers=H, client=client, store=path)
    assert run.tiles_reused == done_first and run.tiles_computed == 10 - done_first
    store = KernelStore.open(path, frames, hypers=H)
    counts = store.write_counts()
    upper = np.triu(np.ones_like(counts, dtype=bool))
    assert np.all(counts[upper] == 1), counts  # every tile written exactly once over both runs
    assert np.all(counts[~upper] == 0)
    assert [r["status"] for r in store.runs] == ["cancelled", "finished"]
    assert sum(r["tiles_computed"] for r in store.runs) == store.n_tiles
    _assert_same(run.result.K, local.K)


def test_a_worker_killed_mid_run_loses_no_tile(client, frames, local, tmp_path):
    killed = {}

    def killer():
        # SIGKILL a worker process while it runs a tile (as an OOM killer or a lost node would); polled from a
        # thread so that the run keeps submitting tiles meanwhile
        pids = client.run(os.getpid)
        for _ in range(500):
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                killed.update(pid=pids[busy[0]], fraction=killed["last"])
                os.kill(pids[busy[0]], signal.SIGKILL)
                return
            time.sleep(0.005)

    def kill_a_busy_worker(fraction, eta):
        killed["last"] = fraction
        if fraction > 0 and "thread" not in killed:
            killed["thread"] = threading.Thread(target=killer)
            killed["thread"].start()

    doubled = frames + [a.copy() for a in frames]  # 24 structures in 4 × 4 tiles: 21 tiles of ~0.1 s each
    path = tmp_path / "s"
    run = compute_tiles(doubled, hypers=H, client=client, store=path, tile_size=4, progress=kill_a_busy_worker)
    killed["thread"].join()
    assert killed.get("pid") and killed["fraction"] < 0.9  # killed while most tiles were still to come
    assert run.tiles_computed == run.tiles_total == 21
    counts = KernelStore.open(path, doubled, hypers=H).write_counts()
    assert np.all(counts[np.triu_indices(6)] == 1)
    _assert_same(run.result.K, np.tile(local.K, (1, 2, 2)))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert killed["pid"] not in client.run(os.getpid).values()


def test_cli_entry_on_a_scheduler_address(client, frames, local, tmp_path):
    from ase.io import write

    path = tmp_path / "mols.xyz"
    write(path, frames)
    parser = argparse.ArgumentParser()
    add_distributed_flags(parser)
    args = parser.parse_args(["--scheduler", client.scheduler.address, "--store", str(tmp_path / "st")])
    args.out = str(tmp_path / "K.npz")
    args.tensor_rank = None
    args.memory_budget = 1.0
    assert compute_distributed(args, frames, None, H) == 0
    _assert_same(KernelResult.from_npz(args.out).K, local.K)
    args.atomic = True
    with pytest.raises(InputError, match="atomic"):
        compute_distributed(args, frames, None, H)


def test_a_store_of_another_request_is_refused_before_any_work(client, frames, tmp_path):
    compute_tiles(frames[:4], hypers=H, client=client, store=tmp_path / "s")
    t0 = time.perf_counter()
    with pytest.raises(WkvizError, match="hash"):
        # no client given: refused before a LocalCluster would even be started
        compute_tiles(frames[:5], hypers=H, scheduler="local", store=tmp_path / "s")
    assert time.perf_counter() - t0 < 1.5
    with pytest.raises(MemoryBudgetError, match="store path"):
        compute_tiles(frames, hypers=H, scheduler="local", memory_budget=1000)
    assert time.perf_counter() - t0 < 3.0


def test_cancel_is_prompt_while_tiles_run(client, frames, tmp_path):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        compute_tiles(frames * 4, hypers=H, client=client, store=tmp_path / "s", tile_size=2, cancel=stop)
    assert time.perf_counter() - t0 < 10


def test_tile_size_gives_every_worker_several_tiles():
    assert choose_tile_size(100_000, None, 64) == 256
    t = choose_tile_size(40, None, 2)
    nb = -(-40 // t)
    assert nb * (nb + 1) // 2 >= 8
    assert choose_tile_size(3, None, 2) >= 1


# A parent script with work at its top level (like a Streamlit page, which runs as __main__): it appends its
# process id to a marker file on every execution, also when a spawned process re-runs it as __mp_main__.
_PARENT_SCRIPT = """
import os
import sys

with open(sys.argv[1], "a") as fh:
    fh.write(f"{os.getpid()}\\n")


def plus_one(x):
    return x + 1


if __name__ == "__main__":
    from wkviz.scale.distributed import local_cluster

    main = sys.modules["__main__"]
    with local_cluster(1) as client:
        assert client.submit(plus_one, 1).result() == 2
        assert client.submit(os.getpid).result() != os.getpid()
    assert sys.modules["__main__"] is main  # the script's own __main__ is back
    print(os.getpid())
"""


def test_workers_do_not_rerun_the_parents_main_script(tmp_path):
    script, marker = tmp_path / "parent_page.py", tmp_path / "marker.txt"
    script.write_text(_PARENT_SCRIPT)
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(script), str(marker)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # written once, by the parent: the worker process did not run the script again
    assert marker.read_text().split() == [proc.stdout.split()[-1]]


def test_the_stand_in_main_hides_file_and_module_and_is_restored_safely(monkeypatch):
    import importlib.machinery
    import multiprocessing.spawn
    import types

    from wkviz.scale.distributed import _main_not_rerun

    def reruns():
        prep = multiprocessing.spawn.get_preparation_data("worker")
        return "init_main_from_path" in prep or "init_main_from_name" in prep

    page = types.ModuleType("__main__")
    page.__file__ = "/somewhere/page.py"  # a script (Streamlit page)
    page.answer = 42
    as_module = types.ModuleType("__main__")
    as_module.__spec__ = importlib.machinery.ModuleSpec("somepackage.tool", None)  # python -m somepackage.tool
    for main in (page, as_module):
        monkeypatch.setitem(sys.modules, "__main__", main)
        assert reruns()
        with _main_not_rerun():
            assert not reruns()
        assert sys.modules["__main__"] is main
    monkeypatch.setitem(sys.modules, "__main__", page)
    with _main_not_rerun():
        assert sys.modules["__main__"].answer == 42  # names are still found in __main__ meanwhile
    with pytest.raises(RuntimeError), _main_not_rerun():
        raise RuntimeError("cluster start failed")
    assert sys.modules["__main__"] is page
    # replaced meanwhile (Streamlit's next script run installs a fresh __main__): the newer one stays
    newer = types.ModuleType("__main__")
    with _main_not_rerun():
        sys.modules["__main__"] = newer
    assert sys.modules["__main__"] is newer
    # overlapping starts in two threads: each is covered until it ends, and the original comes back
    monkeypatch.setitem(sys.modules, "__main__", page)
    covered = []

    def start(hold):
        with _main_not_rerun():
            time.sleep(hold)
            covered.append(not reruns())

    threads = [threading.Thread(target=start, args=(0.05,)), threading.Thread(target=start, args=(0.1,))]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert covered == [True, True] and sys.modules["__main__"] is page
