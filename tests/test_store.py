"""The on-disk kernel store: identity by content hash, tiles, manifest, transposed reads (no Dask needed)."""

import json

import numpy as np
import pytest
from ase.build import molecule

from conftest import require

require("zarr")

from wkviz import Hypers  # noqa: E402
from wkviz.errors import InputError, WkvizError  # noqa: E402
from wkviz.engine.kernels import WignerKernel  # noqa: E402
from wkviz.scale.store import KernelStore, store_key  # noqa: E402

H = Hypers(density_width=0.3, density_scaling=None, nu_max=2, lambda_max=2, cutoff=4.0)
NAMES = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "HCN", "C2H4"]


@pytest.fixture(scope="module")
def frames():
    return [molecule(n) for n in NAMES]


@pytest.fixture(scope="module")
def local(frames):
    return WignerKernel(H).compute(frames, tensor_rank=1)


def _fill(store, frames, tensor_rank=0, only=None):
    """Write the store's tiles from local engine calls, as a worker would."""
    eng = WignerKernel(H)
    for bi, bj in store.missing_tiles() if only is None else only:
        fi = frames[store.tile_rows(bi)]
        res = eng.compute(fi, tensor_rank=tensor_rank) if bi == bj else \
            eng.compute(fi, frames[store.tile_cols(bj)], tensor_rank=tensor_rank)
        arrays = {"K": res.K}
        if res.K_vector is not None:
            arrays["K_vector"] = res.K_vector
        store.write_tile(bi, bj, arrays)


def test_symmetric_store_holds_upper_tiles_and_reads_back_the_full_kernel(tmp_path, frames, local):
    store = KernelStore.open(tmp_path / "s", frames, hypers=H, tensor_rank=1, tile_size=3)
    assert store.grid == (3, 3)
    assert store.tiles() == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    _fill(store, frames, tensor_rank=1)
    store.flush(force=True)
    assert store.complete
    res = store.to_result()
    scale = np.abs(local.K).max()
    assert np.abs(res.K - local.K).max() <= 1e-13 * scale
    np.testing.assert_array_equal(res.K[0], local.K[0])
    # lower-triangle blocks come from transposed upper tiles, components included
    vscale = np.abs(local.K_vector).max()
    assert np.abs(res.K_vector - local.K_vector).max() <= 1e-13 * vscale
    rows, cols = [6, 0, 4], [1, 5]
    np.testing.assert_allclose(store.read(rows, cols), local.K[:, rows][:, :, cols], rtol=1e-12)
    np.testing.assert_array_equal(res.n_atoms_A, [len(a) for a in frames])


def test_reopening_the_same_request_keeps_finished_tiles(tmp_path, frames):
    path = tmp_path / "s"
    store = KernelStore.open(path, frames, hypers=H, tile_size=3)
    _fill(store, frames, only=[(0, 0), (1, 2)])
    store.flush(force=True)
    again = KernelStore.open(path, [a.copy() for a in frames], hypers=Hypers.from_json(H.to_json()), tile_size=5)
    assert again.tile_size == 3  # an existing store keeps its layout
    assert sorted(again.missing_tiles()) == [(0, 1), (0, 2), (1, 1), (2, 2)]
    with pytest.raises(WkvizError, match="not computed yet"):
        again.read([0], [4])


def test_store_refuses_another_request_naming_both_hashes(tmp_path, frames):
    path = tmp_path / "s"
    store = KernelStore.open(path, frames, hypers=H, tile_size=3)
    moved = [a.copy() for a in frames]
    moved[2].positions[0, 0] += 0.01
    for other_frames, other_h, what in ((moved, H, "structures A"),
                                        (frames, H.replace(cutoff=4.5), "hyperparameters")):
        other = store_key(other_frames, None, other_h)["key"]
        with pytest.raises(WkvizError) as info:
            KernelStore.open(path, other_frames, hypers=other_h)
        msg = str(info.value)
        assert store.key in msg and other in msg and what in msg
        assert "--store" in msg and "delete" in msg
    with pytest.raises(WkvizError, match="kernel kinds"):
        KernelStore.open(path, frames, hypers=H, tensor_rank=1)
    with pytest.raises(WkvizError, match="hash"):
        KernelStore.open(path, frames, frames, hypers=H)  # A × B is not the symmetric A × A request


def test_store_refuses_a_directory_that_is_not_a_store(tmp_path, frames):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(WkvizError, match="not a wkviz kernel store"):
        KernelStore.open(tmp_path, frames, hypers=H)


def test_manifest_records_every_write_and_is_valid_json_after_each_flush(tmp_path, frames):
    path = tmp_path / "s"
    store = KernelStore.open(path, frames[:4], frames[4:], hypers=H, tile_size=2, flush_seconds=0)
    assert not store.symmetric and store.grid == (2, 2) and store.n_tiles == 4
    store.begin_run(workers=1)
    _fill_rect(store, frames[:4], frames[4:], [(0, 0), (1, 1)])
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["runs"][-1]["tiles_computed"] == 2 and on_disk["runs"][-1]["status"] == "running"
    store.end_run("cancelled")
    reopened = KernelStore.open(path, frames[:4], frames[4:], hypers=H)
    np.testing.assert_array_equal(reopened.write_counts(), [[1, 0], [0, 1]])
    assert reopened.runs[0]["status"] == "cancelled"
    with pytest.raises(WkvizError, match="not part"):
        store.write_tile(2, 0, {})


def _fill_rect(store, fa, fb, tiles):
    eng = WignerKernel(H)
    for bi, bj in tiles:
        store.write_tile(bi, bj, {"K": eng.compute(fa[store.tile_rows(bi)], fb[store.tile_cols(bj)]).K})


def test_bad_tile_shape_and_bad_kind_are_refused(tmp_path, frames):
    store = KernelStore.open(tmp_path / "s", frames, hypers=H, tile_size=3)
    with pytest.raises(WkvizError, match="shape"):
        store.write_tile(0, 0, {"K": np.zeros((3, 2, 2))})
    with pytest.raises(InputError, match="K_tensor"):
        store.read(kind="K_tensor")


def test_one_writer_at_a_time_and_stale_locks_are_taken_over(tmp_path, frames):
    import socket

    path = tmp_path / "s"
    first = KernelStore.open(path, frames, hypers=H, tile_size=3)
    first.begin_run()
    second = KernelStore.open(path, frames, hypers=H)
    with pytest.raises(WkvizError, match="being written by process"):
        second.begin_run()
    first.end_run()
    second.begin_run()  # free again once the first run ended
    second.end_run()
    # a lock left by a killed process (no such pid) does not block the next run
    (path / "writer.lock").write_text(f"{socket.gethostname()} 999999999")
    third = KernelStore.open(path, frames, hypers=H)
    third.begin_run()
    third.end_run()
    assert not (path / "writer.lock").exists()


# ---- tiles in this process (no Dask): wkviz.scale.distributed with scheduler="in-process" -----------------------

def test_tiles_in_process_fill_a_store_equal_to_the_engine_and_resume_after_a_cancel(tmp_path, frames, local):
    from wkviz.errors import Cancelled
    from wkviz.scale.distributed import IN_PROCESS, compute_tiles

    seen = []

    def progress(fraction, eta):
        seen.append((fraction, eta))

    with pytest.raises(Cancelled):  # cancelled once the first tile is in
        compute_tiles(frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, tile_size=3, tensor_rank=1,
                      progress=progress, cancel=lambda: bool(seen))
    store = KernelStore.open(tmp_path / "s", frames, hypers=H, tensor_rank=1)
    assert store.n_done == 1 and [r["status"] for r in store.runs] == ["cancelled"]
    assert seen[0][1] is not None  # progress with an ETA after the tile

    run = compute_tiles(frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, tensor_rank=1)
    assert (run.tiles_total, run.tiles_reused, run.tiles_computed) == (6, 1, 5)
    assert run.result is not None and run.workers == 1
    np.testing.assert_allclose(run.result.K, local.K, rtol=0, atol=1e-13 * np.abs(local.K).max())
    np.testing.assert_array_equal(run.result.K[0], local.K[0])
    np.testing.assert_allclose(run.result.K_vector, local.K_vector, rtol=0,
                               atol=1e-13 * np.abs(local.K_vector).max())
    store = KernelStore.open(tmp_path / "s", frames, hypers=H, tensor_rank=1)
    assert store.write_counts().max() == 1, "no tile computed twice"
    assert [r["status"] for r in store.runs] == ["cancelled", "finished"]
    assert store.runs[-1]["scheduler"] == "in-process (no cluster)"


def test_tiles_in_process_of_a_rectangular_request_equal_the_engine(frames):
    from wkviz.scale.distributed import IN_PROCESS, compute_tiles

    a, b = frames[:5], frames[2:]
    run = compute_tiles(a, b, hypers=H, scheduler=IN_PROCESS, tile_size=2)
    ref = WignerKernel(H).compute(a, b)
    assert run.store is None and run.tiles_computed == 3 * 3
    np.testing.assert_allclose(run.result.K, ref.K, rtol=0, atol=1e-13 * np.abs(ref.K).max())


def test_compute_store_falls_back_to_this_process_and_reads_a_complete_store_back(tmp_path, frames, local,
                                                                                monkeypatch):
    from wkviz.scale import distributed

    def no_cluster(*args, **kwargs):
        raise OSError("cannot start worker processes here")

    monkeypatch.setattr(distributed, "local_cluster", no_cluster)
    result, info = distributed.compute_store(frames, H, tmp_path / "s", n_workers=2)
    assert "OSError: cannot start worker processes here" in info["fallback"]
    assert info["where"].startswith("in this process") and info["tiles_computed"] == info["tiles_total"]
    np.testing.assert_allclose(result.K, local.K, rtol=0, atol=1e-13 * np.abs(local.K).max())
    assert result.n_pairs == WignerKernel(H).estimate(frames)["n_pairs"] and info["in_memory"]
    again, info = distributed.compute_store(frames, H, tmp_path / "s", n_workers=2)
    assert info["tiles_computed"] == 0 and info["where"].startswith("with nothing to compute")
    np.testing.assert_array_equal(again.K, result.K)
    small, info = distributed.compute_store(frames, H, tmp_path / "s", memory_budget=100)
    assert small is None and not info["in_memory"]


def test_ctrl_c_during_a_tile_write_lands_after_the_tile_is_written_and_recorded(tmp_path, frames, monkeypatch,
                                                                                 ctrl_c_raises):
    """zarr writes on its own event-loop thread: an interrupt raised mid-write used to leave the write in flight
    (and "Task was destroyed but it is pending!" after the CLI's message). The Ctrl-C now waits for the tile."""
    import signal

    import wkviz.scale.store as store_module

    store = KernelStore.open(tmp_path / "s", frames, hypers=H, tile_size=3)
    original = store_module.tile_digest

    def digest_then_ctrl_c(*args):
        signal.raise_signal(signal.SIGINT)  # as if pressed while the chunk is being written
        return original(*args)

    monkeypatch.setattr(store_module, "tile_digest", digest_then_ctrl_c)
    eng = WignerKernel(H)
    with pytest.raises(KeyboardInterrupt):
        store.write_tile(0, 0, {"K": eng.compute(frames[store.tile_rows(0)]).K})
    monkeypatch.undo()
    assert (0, 0) not in store.missing_tiles() and store.n_done == 1
    assert store.read(range(3), range(3)).shape == (H.nu_max + 1, 3, 3)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_signals_deferred_hands_over_the_first_signal_once_and_restores_the_handlers(ctrl_c_raises):
    import signal

    from wkviz.runtime import signals_deferred

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert seen == []  # held while the block runs
        assert seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt), signals_deferred():
            signal.raise_signal(signal.SIGINT)
        with signals_deferred():
            pass
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
