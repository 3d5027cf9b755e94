"""Fit time and test MAE of the sparse model on FPS active environments (issue 17's speed acceptance): QM9 U0,
the 2,000 / 500 split of BENCHMARKS.md §4 (``load_qm9(2500, seed)``, a random partition with the same seed).

The environment kernels (``sparse_kernels(kind="environments")`` for the largest M; per-element FPS, so a smaller
M is a per-element prefix of the FPS order) are computed once and cached in ``--kernels`` (npz, ~0.7 GB at
M = 3,000; a few minutes on 2 cores); every fit reads them. Each fit reports wall and CPU time (the machine is
shared: CPU time is the comparable figure), the time of the evidence's M × M products and of its search, and
the test MAE.

    .venv/bin/python benchmarks/bench_sparse_fit.py --active 1000,3000 \
        --kernels benchmarks/results/sparse_env_2000_500_s0_M3000.npz [--selection cv]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--active", default="1000,3000")
    ap.add_argument("--weights", default="free", choices=("free", "exponential"))
    ap.add_argument("--selection", default="evidence", choices=("evidence", "cv"))
    ap.add_argument("--kernels", required=True, help="npz cache of the environment kernels")
    args = ap.parse_args(argv)
    ms = [int(v) for v in args.active.split(",")]

    from wkviz import Hypers
    from wkviz.data import composition_counts, get_target, load_qm9
    from wkviz.engine.kernels import WignerKernel
    from wkviz.models.active import _allocate
    from wkviz.models.sparse import SparseScalarRegressor, select_active_environments, sparse_kernels

    n = args.n_train + args.n_test
    frames = load_qm9(n, args.seed)
    perm = np.random.default_rng(args.seed).permutation(n)
    tr, te = np.sort(perm[: args.n_train]), np.sort(perm[args.n_train:])
    path = Path(args.kernels)
    if not path.exists():
        hypers = Hypers()
        trf = [frames[i] for i in tr]
        t = time.perf_counter()
        act = select_active_environments(trf, max(ms), hypers, seed=args.seed)
        sel = time.perf_counter() - t
        kern = sparse_kernels(trf, act, hypers, kind="environments", frames_test=[frames[i] for i in te],
                              engine=WignerKernel(hypers, memory_budget=4 * 2**30))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, K_NM=kern["K_NM"], K_MM=kern["K_MM"], K_TM=kern["K_TM"], active=act, train=tr, test=te,
                 kernel_seconds=kern["seconds"], selection_seconds=sel, hypers=json.dumps(hypers.to_dict()))
    z = np.load(path)
    if not (np.array_equal(z["train"], tr) and np.array_equal(z["test"], te)) or z["K_NM"].shape[2] < max(ms):
        raise SystemExit(f"{path} holds another split or fewer active environments; remove it or pass another")
    y = get_target(frames, "U0")
    counts, species = composition_counts(frames)
    act, K_NM, K_MM, K_TM = z["active"], z["K_NM"], z["K_MM"], z["K_TM"]
    numbers = np.concatenate([frames[i].numbers for i in tr])
    za = numbers[act]
    elements, sizes = np.unique(numbers, return_counts=True)
    for m in ms:
        cols = np.concatenate([np.flatnonzero(za == e)[:k] for e, k in zip(elements, _allocate(m, sizes))])
        nm, mm, tm = K_NM[:, :, cols], K_MM[:, cols][:, :, cols], K_TM[:, :, cols]
        t, c0 = time.perf_counter(), time.process_time()
        est = SparseScalarRegressor(weights=args.weights, selection=args.selection)
        est.fit(nm, mm, y[tr], counts=counts[tr], species=species)
        wall, cpu = time.perf_counter() - t, time.process_time() - c0
        err = est.predict(tm, counts=counts[te], species=species) - y[te]
        core = est.model_
        print(json.dumps({
            "M": m, "selection": args.selection, "weights": args.weights, "fit_wall_s": round(wall, 1),
            "fit_cpu_s": round(cpu, 1), "products_wall_s": round(getattr(core, "products_seconds_", float("nan")), 1),
            "search_wall_s": round(getattr(core, "search_seconds_", float("nan")), 1),
            "evaluations": int(core.cv_n_evals_), "coarse_evaluations": getattr(core, "coarse_n_evals_", None),
            "test_mae_meV": round(1000 * float(np.abs(err).mean()), 2),
            "test_rmse_meV": round(1000 * float(np.sqrt((err**2).mean())), 2),
            "cv_mae_meV": round(1000 * float(core.cv_mae_), 2),
            "weights_": [round(float(v), 5) for v in core.weights_],
            "relative_regularization": float(core.relative_regularization_),
            "load": open("/proc/loadavg").read().split()[:3]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
