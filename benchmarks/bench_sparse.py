"""Sparse (projected-process) models vs the exact model on QM9 (qm9pack), accuracy against the number M of active
structures.

One exact kernel over N_train + N_test random QM9 molecules is computed as tiles on a 2-worker dask LocalCluster
into an on-disk kernel store (``--store``; a rerun or an interrupted run reuses the finished tiles). Every sparse
kernel is a column block of it (K_NM = K[train, active], K_MM = K[active, active], K_TM = K[test, active]), so
the sparse numbers below are exactly what a sparse run computing only those blocks would produce, and the kernel
cost a sparse run *would* pay (N·M instead of N²/2 structure pairs) is reported from measured pair counts.

Models: ``wkviz.models.ScalarRegressor`` (exact) and ``wkviz.models.sparse.SparseScalarRegressor`` (projected process)
on the same target, same per-element baseline, same exponential body-order mixing, same 5-fold CV on the training
set only; active structures by FPS (ν=2 power-spectrum features per atom) and, as a control, at random.

Active environments (``--env-active``) are chosen by FPS per element on ν=2 atom features; their kernels
(structure-to-environment sums and the atom kernel among them) come from the local engine restricted to the
active centres (``sparse_kernels(kind="environments")`` → ``WignerKernel.compute(..., centers_B=active)``: atoms ×
M centre pairs, nothing for the other atoms of the structures holding them), computed once for the largest set
(smaller FPS sets are its column subsets).

Run (first run a few minutes on 2 cores; a rerun reuses the exact kernel from the store)::

    .venv/bin/python benchmarks/bench_sparse.py --n-train 400 --n-test 100 --active 25,50,100,200,300 \
        --env-active 100,300,1000,1500

The 2,000-molecule comparison of the issue (2,500² · 129 ≈ 8·10⁸ ordered centre pairs for train+test; measured
2026-11-22: exact kernel 648 s on 2 workers, environment kernels 112 s, fits ≈ 70 min of which 31 min for the
M = 3,000 environment model — BENCHMARKS.md §4) is::

    .venv/bin/python benchmarks/bench_sparse.py --n-train 2000 --n-test 500 --active 50,100,200,500,1000 \
        --env-active 300,1000,3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _uptime() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return "load average " + " ".join(fh.read().split()[:3])
    except OSError:
        return "load average unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--active", default="25,50,100,200,300")
    ap.add_argument("--env-active", default="100,300,1000,1500",
                    help="numbers of active environments (FPS per element); empty to skip")
    ap.add_argument("--target", default="U0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=None,
                    help="kernel store directory (default artifacts/bench_sparse_store_<n_train>_<n_test>_<seed>)")
    ap.add_argument("--out", default="artifacts/bench_sparse.json")
    args = ap.parse_args(argv)
    if args.store is None:
        args.store = f"artifacts/bench_sparse_store_{args.n_train}_{args.n_test}_{args.seed}"

    from wkviz import Hypers
    from wkviz.data import composition_counts, get_target, load_qm9
    from wkviz.scale.distributed import compute_tiles
    from wkviz.models import ScalarRegressor
    from wkviz.models.sparse import SparseScalarRegressor, select_active

    hypers = Hypers()
    n = args.n_train + args.n_test
    t0 = time.perf_counter()
    frames = load_qm9(n, args.seed)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n)
    tr, te = np.sort(perm[: args.n_train]), np.sort(perm[args.n_train:])
    print(f"# sparse vs exact on QM9: {args.n_train} train + {args.n_test} test, target {args.target}, {hypers}",
          file=sys.stderr)
    print(f"# machine: {platform.node()}, {os.cpu_count()} cores, {_uptime()} at start", file=sys.stderr)

    def progress(frac, eta):
        sys.stderr.write(f"\rkernel tiles {100 * frac:5.1f}%" + ("" if eta is None else f" ETA {eta:6.0f} s"))
        sys.stderr.flush()

    run = compute_tiles(frames, hypers=hypers, store=args.store, n_workers=args.workers, progress=progress,
                        memory_budget=4 * 2**30)
    sys.stderr.write("\n")
    K = run.result.K
    load_s = time.perf_counter() - t0 - run.seconds
    # ordered same-species centre pairs per structure pair, from compositions (exact, no kernel needed)
    counts, species = composition_counts(frames)
    pair_matrix = counts @ counts.T
    pairs_per_struct_pair = float(pair_matrix.mean())
    print(f"exact kernel: {run.tiles_computed} tiles computed, {run.tiles_reused} reused, {run.seconds:.0f} s "
          f"on {run.workers} workers ({run.n_pairs:,} ordered centre pairs computed this run)", file=sys.stderr)

    y = get_target(frames, args.target)
    c, sp = counts, species

    def block(rows, cols):
        return K[:, rows][:, :, cols]

    rows = []
    t = time.perf_counter()
    exact = ScalarRegressor().fit(block(tr, tr), y[tr], counts=c[tr], species=sp)
    pred = exact.predict(block(te, tr), counts=c[te], species=sp)
    fit_s = time.perf_counter() - t
    mae_exact = float(np.abs(pred - y[te]).mean())
    kernel_pairs_exact = float(pair_matrix[np.ix_(tr, tr)].sum() / 2 + pair_matrix[np.ix_(te, tr)].sum())
    rows.append({"model": "exact", "M": args.n_train, "selection": "-", "mae": mae_exact,
                 "rmse": float(np.sqrt(((pred - y[te]) ** 2).mean())), "cv_mae": float(exact.cv_mae_),
                 "fit_seconds": fit_s, "kernel_pairs": kernel_pairs_exact,
                 "weights": {int(k): float(v) for k, v in enumerate(exact.weights_) if v > 0}})
    comp = ScalarRegressor(nus=(0,)).fit(block(tr, tr), y[tr], counts=c[tr], species=sp)
    mae_comp = float(np.abs(comp.predict(block(te, tr), counts=c[te], species=sp) - y[te]).mean())
    rows.append({"model": "composition only", "M": 0, "selection": "-", "mae": mae_comp, "rmse": float("nan"),
                 "cv_mae": float(comp.cv_mae_), "fit_seconds": 0.0, "kernel_pairs": 0.0, "weights": {}})

    train_frames = [frames[i] for i in tr]
    t = time.perf_counter()
    from wkviz.models.sparse import fps, selection_features

    X = selection_features(train_frames, hypers)
    sel_s = time.perf_counter() - t
    order, _ = fps(X, max(int(m) for m in args.active.split(",")), seed=args.seed)
    for m in [int(v) for v in args.active.split(",")]:
        for how in ("fps", "random"):
            act_local = order[:m] if how == "fps" else select_active(train_frames, m, hypers, method="random",
                                                                     seed=args.seed)
            act = tr[act_local]
            t = time.perf_counter()
            model = SparseScalarRegressor().fit(block(tr, act), block(act, act), y[tr], counts=c[tr], species=sp)
            pred = model.predict(block(te, act), counts=c[te], species=sp)
            fit_s = time.perf_counter() - t
            kernel_pairs = float(pair_matrix[np.ix_(tr, act)].sum() + pair_matrix[np.ix_(te, act)].sum())
            rows.append({"model": "sparse", "M": m, "selection": how, "mae": float(np.abs(pred - y[te]).mean()),
                         "rmse": float(np.sqrt(((pred - y[te]) ** 2).mean())), "cv_mae": float(model.cv_mae_),
                         "fit_seconds": fit_s, "kernel_pairs": kernel_pairs,
                         "weights": {int(k): float(v) for k, v in enumerate(model.weights_) if v > 0}})
            print(f"M={m:5d} {how:6s} MAE {rows[-1]['mae']:.4f} eV (exact {mae_exact:.4f})", file=sys.stderr)

    env_ms = [int(v) for v in args.env_active.split(",") if v.strip()]
    env_info = {}
    if env_ms:
        from wkviz.engine.kernels import WignerKernel
        from wkviz.models.sparse import select_active_environments, sparse_kernels

        numbers_tr = np.concatenate([a.numbers for a in train_frames])
        numbers_te = np.concatenate([frames[i].numbers for i in te])
        t = time.perf_counter()
        sets = {m: select_active_environments(train_frames, m, hypers, seed=args.seed) for m in env_ms}
        sel_env_s = time.perf_counter() - t
        big = sets[max(env_ms)]
        t = time.perf_counter()
        kern = sparse_kernels(train_frames, big, hypers, kind="environments",
                              frames_test=[frames[i] for i in te],
                              engine=WignerKernel(hypers, memory_budget=4 * 2**30))
        env_kernel_s = time.perf_counter() - t
        za_big = numbers_tr[big]
        env_pairs = float(sum(np.sum(numbers_tr == z) + np.sum(numbers_te == z) for z in za_big))
        env_info = {"selection_seconds": sel_env_s, "kernel_seconds": env_kernel_s, "active": int(len(big)),
                    "kernel_pairs": env_pairs}
        print(f"environment kernels for M={len(big)}: {env_kernel_s:.0f} s ({env_pairs:.3g} centre pairs, "
              f"{env_pairs / env_kernel_s:.3g} pairs/s)", file=sys.stderr)
        pos = {int(g): k for k, g in enumerate(big)}
        for m in env_ms:
            act = sets[m]
            if not all(int(g) in pos for g in act):
                print(f"M={m}: FPS set is not a subset of the largest one; skipped", file=sys.stderr)
                continue
            cols = np.array([pos[int(g)] for g in act])
            K_NM, K_MM, K_TM = (kern["K_NM"][:, :, cols], kern["K_MM"][:, cols][:, :, cols], kern["K_TM"][:, :, cols])
            t = time.perf_counter()
            model = SparseScalarRegressor().fit(K_NM, K_MM, y[tr], counts=c[tr], species=sp)
            pred = model.predict(K_TM, counts=c[te], species=sp)
            fit_s = time.perf_counter() - t
            za = numbers_tr[act]
            kernel_pairs = float(sum(np.sum(numbers_tr == z) + np.sum(numbers_te == z) for z in za))
            rows.append({"model": "sparse", "M": m, "selection": "fps environments",
                         "mae": float(np.abs(pred - y[te]).mean()),
                         "rmse": float(np.sqrt(((pred - y[te]) ** 2).mean())),
                         "cv_mae": float(model.cv_mae_), "fit_seconds": fit_s, "kernel_pairs": kernel_pairs,
                         "weights": {int(k): float(v) for k, v in enumerate(model.weights_) if v > 0}})
            print(f"M={m:5d} env    MAE {rows[-1]['mae']:.4f} eV (exact {mae_exact:.4f})", file=sys.stderr)

    pair_rate = run.n_pairs / run.task_seconds * run.workers if run.tiles_computed else float("nan")
    report = {"n_train": args.n_train, "n_test": args.n_test, "target": args.target, "seed": args.seed,
              "hypers": hypers.to_dict(), "load_seconds": load_s, "kernel_seconds": run.seconds,
              "tiles_computed": run.tiles_computed, "tiles_reused": run.tiles_reused,
              "pairs_per_second_all_workers": pair_rate, "pairs_per_structure_pair": pairs_per_struct_pair,
              "selection_feature_seconds": sel_s, "environments": env_info, "rows": rows, "load_end": _uptime()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))

    print(f"\n### Sparse vs exact, QM9 {args.target} (eV), {args.n_train} train / {args.n_test} test molecules\n")
    print(f"Exact kernel: {run.seconds:.0f} s as tiles on {run.workers} workers ({run.tiles_computed} tiles "
          f"computed, {run.tiles_reused} reused); FPS features for {args.n_train} molecules: {sel_s:.1f} s; "
          f"{pairs_per_struct_pair:.0f} centre pairs per molecule pair on average.")
    if env_info:
        print(f"Environment kernels (all M at once, as column blocks of the largest FPS set, M = "
              f"{env_info['active']}): {env_info['kernel_seconds']:.0f} s with the local engine restricted to the "
              f"active centres ({env_info['kernel_pairs']:.3g} centre pairs); per-element FPS on ν=2 atom "
              f"features {env_info['selection_seconds']:.1f} s.")
    print("Kernel pairs = ordered same-species centre pairs a run needs for train+test rows (structures: N·M "
          "structure pairs × their centre pairs; environments: atoms × same-element active environments).\n")
    print("| model | M | active set | test MAE (eV) | test RMSE (eV) | CV MAE (eV) | MAE / exact | kernel pairs "
          "(train+test) | fit (s) | body-order weights |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        w = ", ".join(f"{k}:{v:.2g}" for k, v in r["weights"].items() if v >= 1e-4)
        print(f"| {r['model']} | {r['M']} | {r['selection']} | {r['mae']:.4f} | {r['rmse']:.4f} | "
              f"{r['cv_mae']:.4f} | {r['mae'] / mae_exact:.2f} | {r['kernel_pairs']:.3g} | {r['fit_seconds']:.1f} | "
              f"{w} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
