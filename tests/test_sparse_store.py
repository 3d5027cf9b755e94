"""The sparse model's N × M environment kernel as tiles in the resumable kernel store (``centers_B``), streamed
into the evidence fit; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

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
                        centers_B=act)
    assert run.tiles_total == 4 * 5 and run.tiles_computed == 20
    K = run.store.read()
    np.testing.assert_allclose(K, ref["K_NM"], rtol=0, atol=1e-12 * np.abs(ref["K_NM"]).max())
    again = compute_tiles(frames, frames, hypers=H, store=tmp_path / "s", scheduler=IN_PROCESS, centers_B=act)
    assert again.tiles_computed == 0 and again.tiles_reused == 20  # a finished request is reused
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
run = compute_tiles(frames, frames, hypers=H, store={store!r}, scheduler=IN_PROCESS, tile_size=12, centers_B=act)
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
