"""The sparse model's N × M environment kernel as tiles in the resumable kernel store (``centers_B``), streamed
into the evidence fit; a killed run resumes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ctrl_c_reaches_python, require

from wkviz import Hypers
from wkviz.errors import WkvizError

H = Hypers(nu_max=3, lambda_max=2)
ROOT = Path(__file__).resolve().parent.parent


def _frames(n, seed=0):
    from wkviz.data import load_sample

    frames = load_sample("qm9")
    idx = np.random.default_rng(seed).choice(len(frames), n, replace=False)
    return [frames[i] for i in sorted(idx)]


def test_environment_tiles_are_the_sparse_kernels_and_stream_into_the_fit(tmp_path):
    require("zarr")
    from wkviz.data import composition_counts, get_target
    from wkviz.models.sparse import SparseKernelRidge, select_active_environments, sparse_kernels
    from wkviz.scale.distributed import IN_PROCESS, compute_tiles
    from wkviz.scale.store import KernelStore

    frames = _frames(24)
    act = select_active_environments(frames, 30, H, seed=1)
    ref = sparse_kernels(frames, act, H, kind="environments")
    run = compute_tiles(frames, frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, tile_size=7,
                        centers_B=act, tile_size_B=7)
    assert run.tiles_total == 4 * 5 and run.tiles_computed == 20
    K = run.store.read()
    np.testing.assert_allclose(K, ref["K_NM"], rtol=0, atol=1e-12 * np.abs(ref["K_NM"]).max())
    again = compute_tiles(frames, frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, centers_B=act)
    assert again.tiles_computed == 0 and again.tiles_reused == 20  # a finished request is reused
    # by default a tile holds as many centres as its structures hold atoms: 1 structure × 18 centres here
    wide = compute_tiles(frames, frames, hypers=H, store=tmp_path / "w", scheduler=IN_PROCESS, tile_size=1,
                         centers_B=act)
    assert sum(map(len, frames)) == 429 and wide.store.tile_size_B == 18 and wide.store.grid == (24, 2)
    np.testing.assert_allclose(wide.store.read(), ref["K_NM"], rtol=0, atol=1e-12 * np.abs(ref["K_NM"]).max())
    with pytest.raises(WkvizError, match="hash"):  # other active environments: another request
        KernelStore.open(tmp_path / "s", frames, frames, hypers=H, centers_B=act[::-1])
    # the evidence fit from the store's row blocks is the fit on the whole array
    y = get_target(frames, "U0")
    counts, _ = composition_counts(frames)
    whole = SparseKernelRidge(weights="free").fit(ref["K_NM"], ref["K_MM"], y, features=counts.astype(float))
    streamed = SparseKernelRidge(weights="free").fit_blocks(lambda: run.store.row_blocks(), ref["K_MM"], y,
                                                            features=counts.astype(float))
    np.testing.assert_allclose(streamed.dual_coef_, whole.dual_coef_, rtol=1e-6,
                               atol=1e-9 * np.abs(whole.dual_coef_).max())


_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_sparse_store import _frames, H
from wkviz.models.sparse import select_active_environments
from wkviz.scale.distributed import IN_PROCESS, compute_tiles
frames = _frames(120)
act = select_active_environments(frames, 160, H, seed=0)
run = compute_tiles(frames, frames, hypers=H, store={store!r}, scheduler=IN_PROCESS, tile_size=12, centers_B=act,
                    tile_size_B=12)
np.save({out!r}, run.store.read())
print(run.tiles_computed, run.tiles_reused)
"""


@pytest.mark.slow
def test_a_killed_environment_tile_run_resumes(tmp_path):
    require("zarr")
    store, out = tmp_path / "store", tmp_path / "K.npy"
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(ROOT / "tests"), store=str(store), out=str(out)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    manifest = store / "manifest.json"
    done = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            try:
                m = json.loads(manifest.read_text())
            except ValueError:
                m = None
            if m is not None:
                import base64

                done = int(np.count_nonzero(np.frombuffer(base64.b64decode(m["writes"]), dtype=np.uint8)))
                if done >= 3:
                    break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    computed, reused = map(int, res.stdout.split()[-2:])
    assert reused >= done and computed + reused == 10 * 14  # 120 structures × 160 centres in tiles of 12
    from wkviz.models.sparse import select_active_environments, sparse_kernels

    frames = _frames(120)
    act = select_active_environments(frames, 160, H, seed=0)
    ref = sparse_kernels(frames, act, H, kind="environments")["K_NM"]
    np.testing.assert_allclose(np.load(out), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


# ---------------------------------------------------------------------------------------------------------------
# fit / learning-curve --active-environments M --store PATH: the same numbers as the in-memory route, resumable

_MAE = re.compile(r"^MAE=(\S+) RMSE=(\S+)$")
_SMALL = ["--nu-max", "3", "--lambda-max", "2"]


@pytest.fixture(scope="module")
def fit_files(tmp_path_factory):
    require("zarr")
    import ase.io

    frames = ase.io.read(ROOT / "sample_data" / "qm9_subset.extxyz.gz", index=":60")  # not all 2,000
    d = tmp_path_factory.mktemp("sparse-store")
    ase.io.write(d / "train.extxyz", frames[:48])
    ase.io.write(d / "test.extxyz", frames[48:60])
    return d


def _fit_argv(d, *extra):
    return ["fit", "--train", str(d / "train.extxyz"), "--test", str(d / "test.extxyz"), "--target", "U0",
            "--active-environments", "60", *_SMALL, *map(str, extra)]


def _main(argv, capsys):
    from wkviz.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def _predictions(path):
    with open(path, newline="") as fh:
        return np.array([float(r["predicted"]) for r in csv.DictReader(fh)])


def _tile_counts(err):
    """(computed, reused, total) from the '  tiles: …' line of a store run."""
    m = re.search(r"tiles: (\d+) computed, (\d+) reused of (\d+)", err)
    assert m, err
    return tuple(int(g) for g in m.groups())


@pytest.fixture(scope="module")
def in_memory(fit_files):
    """The in-memory route's predictions and last stdout line (what every store run must reproduce)."""
    import contextlib
    import io

    from wkviz.cli import main

    out, stdout = fit_files / "pred-memory.csv", io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main(_fit_argv(fit_files, "--out", out)) == 0
    return _predictions(out), stdout.getvalue().strip().splitlines()[-1]


def _same_as_in_memory(stdout, pred_csv, in_memory):
    pred, last = in_memory
    np.testing.assert_allclose(_predictions(pred_csv), pred, rtol=1e-12)  # −8,000 eV: 2e-14 relative seen
    mae, rmse = map(float, _MAE.match(stdout.strip().splitlines()[-1]).groups())
    np.testing.assert_allclose([mae, rmse], list(map(float, _MAE.match(last).groups())), rtol=1e-10)


def test_fit_through_the_store_is_the_in_memory_fit_and_a_rerun_reuses_it(fit_files, in_memory, tmp_path, capsys):
    from wkviz.cli import main

    store = tmp_path / "store"
    out, err = _main(_fit_argv(fit_files, "--store", store, "--tile-size", 8, "--out", tmp_path / "p.csv"), capsys)
    # 60 structures × 60 environments in tiles of 8 structures × all 60 environments (8 × 14 atoms and more)
    assert _tile_counts(err) == (8, 0, 8) and "8 structures × 60 environments per tile" in err
    assert "as tiles in this process" in err and "active × active kernel (60 × 60)" in err
    _same_as_in_memory(out, tmp_path / "p.csv", in_memory)

    # a second fit with other model options asks for the same kernels: every tile is reused
    out, err = _main(_fit_argv(fit_files, "--store", store, "--weights", "exponential"), capsys)
    assert _tile_counts(err) == (0, 8, 8) and "8 of 8 tiles are finished" in err
    assert _MAE.match(out.strip().splitlines()[-1])

    # a damaged tile is found before it is reused and recomputed, alone
    chunk = store / "kernels.zarr" / "K" / "c" / "0" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    assert main(["store", "verify", str(store)]) == 1
    report = capsys.readouterr().out
    assert report.startswith("tile (1, 0):") and "8 tiles of 8 structures × 60 environments (K), 7 good, 1 bad" \
        in report
    out, err = _main(_fit_argv(fit_files, "--store", store, "--out", tmp_path / "p2.csv"), capsys)
    assert "tile (1, 0)" in err and "recomputing it" in err
    assert _tile_counts(err) == (1, 7, 8)
    _same_as_in_memory(out, tmp_path / "p2.csv", in_memory)


def test_learning_curve_through_stores_is_the_in_memory_curve(fit_files, tmp_path, capsys):
    argv = ["learning-curve", "--data", str(fit_files / "train.extxyz"), "--target", "U0", "--sizes", "6,12",
            "--repeats", "2", "--test-size", "6", "--active-environments", "24", *_SMALL]
    _main([*argv, "--out", str(tmp_path / "memory.csv")], capsys)
    _, err = _main([*argv, "--out", str(tmp_path / "store.csv"), "--store", str(tmp_path / "s"), "--tile-size", "8"],
                   capsys)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["repeat-1", "repeat-2"]  # a store per repeat
    assert err.count("0 reused of") == 2
    with open(tmp_path / "memory.csv") as a, open(tmp_path / "store.csv") as b:
        mem, sto = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [(r["model"], r["n_train"], r["repeat"]) for r in sto] == [(r["model"], r["n_train"], r["repeat"])
                                                                         for r in mem]
    for key in ("mae", "rmse"):
        np.testing.assert_allclose([float(r[key]) for r in sto], [float(r[key]) for r in mem], rtol=1e-10)
    _, err = _main([*argv, "--out", str(tmp_path / "again.csv"), "--store", str(tmp_path / "s")], capsys)
    assert [c for c, _, _ in re.findall(r"tiles: (\d+) computed, (\d+) reused of (\d+)", err)] == ["0", "0"]


def test_store_flags_are_refused_where_they_do_not_apply(fit_files, tmp_path, capsys):
    require("zarr")
    from wkviz.cli import main

    plain = [a for a in _fit_argv(fit_files) if a not in ("--active-environments", "60")]
    store = ["--store", str(tmp_path / "s")]
    for argv, words in ((plain + store, "--store computes kernel tiles for --active-environments M only"),
                        (plain + ["--scheduler", "local"], "add --active-environments M or drop --scheduler"),
                        (_fit_argv(fit_files, "--tile-size", 4), "--tile-size sets the tiles of a --store"),
                        (_fit_argv(fit_files, *store, "--tile-size", 0), "--tile-size must be a positive"),
                        (_fit_argv(fit_files, *store, "--workers", 0), "--workers must be at least 1"),
                        (_fit_argv(fit_files, *store, "--forces", "forces"), "drop --store/--scheduler")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not (tmp_path / "s").exists()
    # a single request's store is no folder of per-repeat stores
    _main(_fit_argv(fit_files, *store, "--tile-size", 16), capsys)
    lc = ["learning-curve", "--data", str(fit_files / "train.extxyz"), "--target", "U0", "--sizes", "10",
          "--repeats", "1", "--active-environments", "20", "--out", str(tmp_path / "lc.csv"), *store, *_SMALL]
    assert main(lc) == 2
    assert "learning-curve keeps one store per repeat" in capsys.readouterr().err


def _run_until(cmd, env, store, enough, sig):
    """Start ``cmd``, send ``sig`` once ``enough(manifest)`` holds (polling the store's manifest), return
    (exit code, stderr, finished tiles the manifest listed when the signal was sent)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_python)
    seen = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            m = json.loads((store / "manifest.json").read_text())
        except (OSError, ValueError):
            m = None
        if m is not None and enough(m):
            seen = len(m["digests"])
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal: " + proc.communicate()[1]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, seen


@pytest.mark.slow
def test_a_killed_sparse_fit_resumes_where_it_stopped(fit_files, in_memory, tmp_path, capsys):
    """SIGKILL mid-tiles, then Ctrl-C during the resumed run (exit 130), then the same command finishes: no
    finished tile is computed again and the result is the uninterrupted one."""
    store = tmp_path / "store"
    argv = _fit_argv(fit_files, "--store", store, "--tile-size", 1, "--out", tmp_path / "p.csv")
    cmd = [sys.executable, "-m", "wkviz", *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    total = 60 * 5  # 60 structures × 60 environments in tiles of 1 structure × 14 environments (its atoms)
    code, err, killed_at = _run_until(cmd, env, store, lambda m: len(m["digests"]) >= 30, signal.SIGKILL)
    assert code == -signal.SIGKILL and 30 <= killed_at < total, err
    assert not (tmp_path / "p.csv").exists()

    code, err, _ = _run_until(cmd, env, store, lambda m: len(m["runs"]) == 2 and m["runs"][-1]["tiles_computed"],
                              signal.SIGINT)
    assert code == 130 and err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err, err
    resumed = int(re.search(r"(\d+) of 300 tiles are finished", err).group(1))
    assert resumed >= killed_at
    runs = json.loads((store / "manifest.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["running", "interrupted"]  # the killed run never closed its record

    from wkviz.cli import main

    assert main(argv) == 0
    out, err = capsys.readouterr()
    computed, reused, n = _tile_counts(err)
    assert n == total and reused >= resumed and computed == total - reused and computed > 0
    assert f"{reused} of 300 tiles are finished" in err
    _same_as_in_memory(out, tmp_path / "p.csv", in_memory)
    from wkviz.scale.store import KernelStore

    assert KernelStore.load(store).write_counts().max() == 1  # nothing was computed twice
