"""Faults injected into kernel stores and tiled runs (issue 19): damaged chunks, old stores, racing creators,
Ctrl-C and SIGTERM, bad --store paths, a disk too small. Nothing wrong is ever returned, and what happened is said.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

from conftest import ctrl_c_reaches_python, require

require("zarr")

from wkviz import Hypers  # noqa: E402
from wkviz.cli import main  # noqa: E402
from wkviz.engine.kernels import WignerKernel  # noqa: E402
from wkviz.errors import InputError, WkvizError  # noqa: E402
from wkviz.scale.distributed import IN_PROCESS, compute_tiles  # noqa: E402
from wkviz.scale.store import KernelStore  # noqa: E402
from wkviz.scale.tilecheck import tile_digest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H = Hypers(density_width=0.3, density_scaling=None, nu_max=2, lambda_max=2, cutoff=4.0)
NAMES = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "HCN", "C2H4"]
HYPER_FLAGS = ["--nu-max", "2", "--lambda-max", "2", "--cutoff", "4", "--density-width", "0.3",
               "--density-scaling", "none"]


@pytest.fixture(scope="module")
def frames():
    return [molecule(n) for n in NAMES]


@pytest.fixture(scope="module")
def local(frames):
    return WignerKernel(H).compute(frames)


@pytest.fixture(scope="module")
def filled(tmp_path_factory, frames):
    """A complete store of the 7 molecules in 3 × 3 tiles (6 tiles), written once; tests copy it."""
    path = tmp_path_factory.mktemp("filled") / "s"
    compute_tiles(frames, hypers=H, store=path, scheduler=IN_PROCESS, tile_size=3)
    return path


@pytest.fixture
def store_path(tmp_path, filled):
    path = tmp_path / "s"
    shutil.copytree(filled, path)
    return path


def _chunk(path, bi, bj, kind="K"):
    return Path(path) / "kernels.zarr" / kind / "c" / "0" / str(bi) / str(bj)


def _damage(path, how):
    """Damage tile (0, 1) the way a disk, a user or a bad copy would."""
    chunk = _chunk(path, 0, 1)
    if how == "flip":
        raw = bytearray(chunk.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        chunk.write_bytes(bytes(raw))
    elif how == "delete":
        chunk.unlink()
    elif how == "truncate":
        raw = chunk.read_bytes()
        chunk.write_bytes(raw[: len(raw) // 3])
    elif how == "neighbour":
        shutil.copyfile(_chunk(path, 1, 1), chunk)  # a full 3 × 3 tile copied over its neighbour
    return (0, 1)


@pytest.mark.parametrize("how", ["flip", "delete", "truncate", "neighbour"])
def test_a_damaged_tile_is_never_returned_and_the_next_run_recomputes_it(store_path, frames, local, how):
    bad = _damage(store_path, how)
    store = KernelStore.open(store_path, frames, hypers=H)
    assert store.complete  # the manifest alone cannot tell...
    with pytest.raises(InputError) as info:  # ...but every read checks the digests
        store.to_result()
    msg = str(info.value)
    assert "tile (0, 1)" in msg and f"store verify {store_path} --repair" in msg and "\n" not in msg
    np.testing.assert_array_equal(store.read([0, 1], [0, 2]), local.K[:, [0, 1]][:, :, [0, 2]])  # tile (0, 0)
    for rows, cols in (([0], [3]), ([3], [0]), ([0, 3], [3, 0])):  # the tile, its mirror, both at once
        with pytest.raises(InputError, match=r"^tile \(0, 1\) of K in the kernel store .* failed its check"):
            store.read(rows, cols)

    notes = []
    run = compute_tiles(frames, hypers=H, store=store_path, scheduler=IN_PROCESS, note=notes.append)
    assert [t for t, _ in run.repaired] == [bad]
    assert (run.tiles_computed, run.tiles_reused) == (1, 5)
    assert len(notes) == 2 and notes[0].startswith("tile (0, 1) of the kernel store") and "recomputing it" in notes[0]
    assert notes[1] == (f"5 of 6 tiles are finished in the kernel store {store_path} and are reused; computing the "
                        "other 1")
    # a flipped byte already fails the zstd frame checksum; a whole chunk in the wrong place fails the digest
    expected = {"flip": "does not decode", "neighbour": "failed its checksum", "delete": "its K chunk is missing",
                "truncate": "does not decode"}[how]
    assert expected in notes[0]
    np.testing.assert_array_equal(run.result.K, KernelStore.open(store_path, frames, hypers=H).to_result().K)
    np.testing.assert_allclose(run.result.K, local.K, rtol=0, atol=1e-13 * np.abs(local.K).max())
    counts = KernelStore.open(store_path, frames, hypers=H).write_counts()
    assert counts[bad] == 2 and counts.sum() == 7  # only the bad tile was written again


def test_the_digest_holds_the_tile_coordinates(store_path, frames):
    block = np.arange(9.0).reshape(1, 3, 3)
    assert tile_digest("K", 0, 1, block) != tile_digest("K", 1, 1, block)
    assert tile_digest("K", 0, 1, block) != tile_digest("K_vector", 0, 1, block)
    # a chunk and its manifest digest both copied over the neighbour: still caught by the coordinates
    shutil.copyfile(_chunk(store_path, 1, 1), _chunk(store_path, 0, 1))
    manifest = json.loads((store_path / "manifest.json").read_text())
    manifest["digests"]["0,1"] = manifest["digests"]["1,1"]
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    store = KernelStore.open(store_path, frames, hypers=H)
    assert [t for t, _ in store.check_tiles()] == [(0, 1)]


def test_store_verify_lists_bad_tiles_and_repair_makes_the_next_run_recompute_them(store_path, frames, capsys):
    assert main(["store", "verify", str(store_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("6 good, 0 bad, 0 not computed yet: ok")
    _damage(store_path, "flip")
    _chunk(store_path, 2, 2).unlink()
    assert main(["store", "verify", str(store_path)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tile (0, 1): its K chunk is damaged and does not decode")
    assert lines[1] == "tile (2, 2): its K chunk is missing"
    assert "4 good, 2 bad" in lines[2] and "--repair" in lines[2] and len(lines) == 3
    assert KernelStore.open(store_path, frames, hypers=H).n_done == 6  # verify alone changes nothing

    assert main(["store", "verify", str(store_path), "--repair"]) == 1
    assert "marked the 2 bad tile(s) missing" in capsys.readouterr().out
    assert KernelStore.open(store_path, frames, hypers=H).missing_tiles() == [(0, 1), (2, 2)]
    run = compute_tiles(frames, hypers=H, store=store_path, scheduler=IN_PROCESS, note=None)
    assert run.tiles_computed == 2 and run.repaired == []
    assert main(["store", "verify", str(store_path)]) == 0
    capsys.readouterr()
    assert main(["store", "verify", str(store_path.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a wkviz kernel store" in err and "\n" not in err


def test_a_store_of_the_previous_format_is_recomputed_not_trusted(store_path, frames, local):
    # the previous version wrote format 1: no digests, zstd without checksums, otherwise the same layout
    manifest = json.loads((store_path / "manifest.json").read_text())
    manifest["format"] = manifest["meta"]["format"] = "wkviz-kernel-store/1"
    del manifest["digests"]
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    store = KernelStore.open(store_path, frames, hypers=H)  # same request key as before
    assert store.n_done == 0 and len(store.missing_tiles()) == 6
    with pytest.raises(WkvizError, match="no valid checksum.*older wkviz"):
        store.read([0], [0])
    with pytest.warns(RuntimeWarning, match="has no checksum"):  # no note callback: a warning
        run = compute_tiles(frames, hypers=H, store=store_path, scheduler=IN_PROCESS)
    assert run.tiles_computed == 6 and len(run.repaired) == 6
    np.testing.assert_allclose(run.result.K, local.K, rtol=0, atol=1e-13 * np.abs(local.K).max())
    upgraded = json.loads((store_path / "manifest.json").read_text())
    assert upgraded["format"] == "wkviz-kernel-store/2" and len(upgraded["digests"]) == 6


_RACER = textwrap.dedent("""
    import json, sys, time
    from ase.build import molecule
    from wkviz import Hypers
    from wkviz.scale.store import KernelStore

    root, trials, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    frames = [molecule(n) for n in ("H2O", "CH4", "NH3")]
    hypers = Hypers(nu_max=2, lambda_max=2, cutoff=4.0)
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())  # the start time, sent once every racer has imported
    for k in range(trials):
        time.sleep(max(0.0, t0 + k * gap - time.time()))  # every racer opens trial k at the same instant
        try:
            store = KernelStore.open(f"{root}/store{k}", frames, hypers=hypers, tile_size=2)
            print(json.dumps({"trial": k, "id": store.meta["id"], "tiles": store.n_tiles}), flush=True)
        except BaseException as exc:
            print(json.dumps({"trial": k, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
""")


@pytest.mark.slow  # about 6 s: three interpreters import wkviz and zarr
def test_concurrent_creators_of_one_new_store_all_open_the_same_complete_store(tmp_path):
    # 3 processes open each of 10 new stores at the same instant (the previous version raised in 15 of 20 trials
    # of two processes: FileNotFoundError, FileExistsError, KeyError, once an empty store)
    racers, trials, gap = 3, 10, 0.3
    for k in range(0, trials, 2):
        (tmp_path / f"store{k}").mkdir()  # half the trials race on an existing empty folder
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(trials), str(gap)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(racers)]
    for p in procs:  # the imports take seconds and end at different times: start the trials after all of them
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    t0 = time.time() + 0.3
    for p in procs:
        p.stdin.write(f"{t0}\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(results) == racers * trials
    assert not [r for r in results if "error" in r], [r for r in results if "error" in r]
    for k in range(trials):
        ids = {r["id"] for r in results if r["trial"] == k}
        assert len(ids) == 1, f"trial {k}: the racers opened different stores {ids}"
        assert json.loads((tmp_path / f"store{k}" / "manifest.json").read_text())["meta"]["id"] in ids
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"store{k}" for k in range(trials))  # no leftovers


def test_store_that_is_a_file_and_store_without_scheduler(tmp_path, frames, local, capsys):
    xyz = tmp_path / "a.xyz"
    write(xyz, frames)
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    argv = ["kernels", str(xyz), "--out", str(tmp_path / "K.npz"), *HYPER_FLAGS]
    assert main([*argv, "--store", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --store {afile} is a file, not a directory; give a new or empty directory for the " \
                      "kernel store"

    # --store alone: tiles in this process, into the store; a second run reuses every tile
    assert main([*argv, "--store", str(tmp_path / "st"), "--tile-size", "3"]) == 0
    err = capsys.readouterr().err
    assert "tiles in this process (no --scheduler), store" in err and "6 computed, 0 reused of 6" in err
    with np.load(tmp_path / "K.npz") as npz:
        np.testing.assert_allclose(npz["K"], local.K, rtol=0, atol=1e-13 * np.abs(local.K).max())
    assert main([*argv, "--store", str(tmp_path / "st")]) == 0
    assert "0 computed, 6 reused of 6" in capsys.readouterr().err
    assert main([*argv, "--store", str(tmp_path / "st2"), "--atomic"]) == 2
    assert "drop --atomic or compute without --store" in capsys.readouterr().err


def test_a_store_that_would_not_fit_on_the_disk_is_refused_up_front(tmp_path, frames):
    with pytest.raises(InputError) as info:
        KernelStore.open(tmp_path / "s", frames, hypers=H, tile_size=3, disk_free=lambda path: 500)
    # tiles (0,0) (0,1) (1,1): 9 pairs each, (0,2) (1,2): 3, (2,2): 1 → 34 pairs × 3 body orders × 8 bytes
    assert "needs about 816 B of disk but only 500 B are free" in str(info.value)
    assert not (tmp_path / "s").exists()
    KernelStore.open(tmp_path / "s0", frames, hypers=H, tile_size=3, disk_free=lambda path: 816)  # just fits

    # the 50,000-structure request: refused with the numbers before anything is written
    big = [molecule("H2O")] * 50_000
    with pytest.raises(InputError) as info:
        KernelStore.open(tmp_path / "big", big, hypers=H, tensor_rank=2, tile_size=256,
                         disk_free=lambda path: 100 * 2**30)
    msg = str(info.value)
    need = 8 * 3 * 26 * 50_000 * 50_000 / 2  # K and K_tensor, ν ≤ 2, the upper triangle (and diagonal tiles)
    assert "50,000 × 50,000 structures" in msg and "100 GiB are free" in msg
    number, unit = msg.split("needs about ")[1].split()[:2]
    assert unit == "GiB" and abs(float(number) - need / 2**30) < 0.01 * need / 2**30
    assert not (tmp_path / "big").exists()

    # an existing store whose missing tiles no longer fit is refused before a run starts
    KernelStore.open(tmp_path / "s", frames, hypers=H, tile_size=3)
    with pytest.raises(InputError, match="6 missing tiles"):
        compute_tiles(frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, disk_free=lambda path: 10)


def _interrupt_cli(tmp_path, sig, scheduler):
    """Start `kernels --store` as its own process group, send `sig` to the whole group (as a terminal's Ctrl-C
    does) once a tile is in the store, and return (exit code, stderr, runs, processes it had started)."""
    psutil = require("psutil")  # a dependency of distributed
    if scheduler:
        require("distributed")
    xyz = tmp_path / "mols.xyz"
    # 28 molecules in tiles of one: 406 tiles, so the run is still going when the signal arrives (with 14
    # molecules in tiles of two an unloaded machine finished before the test had seen the first tile)
    write(xyz, [molecule(n) for n in NAMES * 4])
    store = tmp_path / "st"
    cmd = [sys.executable, "-m", "wkviz", "kernels", str(xyz), "--out", str(tmp_path / "K.npz"), "--store",
           str(store), "--tile-size", "1", *HYPER_FLAGS, *(["--scheduler", scheduler] if scheduler else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=ctrl_c_reaches_python)
    children = set()
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            pass
        try:
            runs = json.loads((store / "manifest.json").read_text())["runs"]
            if runs and runs[-1]["tiles_computed"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=90)
    runs = json.loads((store / "manifest.json").read_text())["runs"]
    return proc.returncode, err, runs, children, cmd


@pytest.mark.slow
@pytest.mark.parametrize("sig, scheduler", [(signal.SIGINT, "local"), (signal.SIGTERM, "local"),
                                            (signal.SIGTERM, None)], ids=["SIGINT-local", "SIGTERM-local",
                                                                          "SIGTERM-in-process"])
def test_ctrl_c_and_sigterm_end_a_tiled_run_with_one_line_and_resume(tmp_path, sig, scheduler):
    psutil = require("psutil")
    code, err, runs, children, cmd = _interrupt_cli(tmp_path, sig, scheduler)
    assert code == (130 if sig == signal.SIGINT else 143), err
    errors = [line for line in err.splitlines()
              if line.strip() and not line.startswith(("wkviz kernels:", "tiles", "preset:", "\r"))]
    assert errors == ["error: interrupted" if sig == signal.SIGINT else "error: terminated"], err
    assert "Traceback" not in err
    assert [r["status"] for r in runs] == ["interrupted"] and runs[0]["tiles_computed"] >= 1
    time.sleep(1.0)
    alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, "worker processes outlived the interrupted run"

    # the same command resumes: nothing lost, nothing computed twice, the kernel equals the engine's
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    frames = [molecule(n) for n in NAMES * 4]
    store = KernelStore.open(tmp_path / "st", frames, hypers=H)
    assert store.complete and store.write_counts().max() == 1
    assert [r["status"] for r in store.runs] == ["interrupted", "finished"]
    ref = WignerKernel(H).compute(frames).K
    with np.load(tmp_path / "K.npz") as npz:
        np.testing.assert_array_equal(npz["K"], store.to_result().K)
        np.testing.assert_allclose(npz["K"], ref, rtol=0, atol=1e-13 * np.abs(ref).max())
