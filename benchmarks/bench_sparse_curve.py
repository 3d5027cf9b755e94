"""QM9 U0 learning curve of the sparse (projected-process) model on FPS active environments, with time and peak
memory per phase — the measured part of issue 17 (BENCHMARKS.md §13).

One held-out test set of random QM9 molecules (``load_qm9_split``: a random draw, randomly partitioned) and the
largest training set, in a random order whose prefixes are the smaller training sets. The active environments
are chosen ONCE, by per-element FPS on the largest training set (``select_active_environments``, in FPS order),
and the kernels of every training and test molecule against them are computed once (``sparse_kernels``, the
engine restricted to the active centres) and cached in ``--kernels`` (npz). A point (N, M) of the curve uses the
first N training molecules and, per element, the first M·(element share) active environments of the FPS order —
exactly the FPS set of size M on the largest training set (``_allocate`` splits M over the elements as the
selection does). Each fit is the library's default sparse model: free positive body-order weights, per-element
baseline, weights and regularisation by the GP evidence (``SparseScalarRegressor``).

Run (2-core machine: selection ~4 min, kernels ~25 min for 5,000 + 1,000 molecules × 4,000 environments)::

    .venv/bin/python benchmarks/bench_sparse_curve.py --sizes 1000,2000,5000 --active 1500,3000,4000 \
        --n-test 1000 --kernels benchmarks/results/sparse_curve_kernels.npz \
        --out benchmarks/results/sparse_curve_qm9_u0.csv

The app's Learning curves page draws this CSV as the stored QM9 curve: copy it, unchanged, to
``wkviz/evaluation/stored_results/qm9_u0_sparse_curve.csv`` (``tests/test_stored_curve.py`` checks that the two are
the same file; the JSON beside the copy describes it, and its sizes, M, test-set size, command and date are read
from the CSV).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _load() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000")
    ap.add_argument("--active", default="1500,3000,4000", help="M per size (one number: the same M for all)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="U0")
    ap.add_argument("--kernels", required=True, help="npz cache of the selection and kernels")
    ap.add_argument("--out", required=True, help="CSV of the curve")
    ap.add_argument("--pool", type=int, default=None,
                    help="FPS among the environments of random structures holding about this many (default: all)")
    args = ap.parse_args(argv)
    sizes = _ints(args.sizes)
    ms = _ints(args.active)
    ms = ms * len(sizes) if len(ms) == 1 else ms
    if len(ms) != len(sizes):
        ap.error("--active needs one M or one per size")

    from wkviz import Hypers
    from wkviz.data import composition_counts, get_target, load_qm9_split
    from wkviz.engine.kernels import WignerKernel
    from wkviz.models.active import _allocate
    from wkviz.models.sparse import SparseScalarRegressor, select_active_environments, sparse_kernels

    hypers = Hypers()
    n_max, m_max = max(sizes), max(ms)
    print(f"# sparse learning curve, QM9 {args.target}: sizes {sizes}, M {ms}, {args.n_test} test molecules, "
          f"{os.cpu_count()} cores on {platform.node()}, load {_load()}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    train, test = load_qm9_split(n_max, args.n_test, args.seed)
    order = np.random.default_rng(args.seed).permutation(n_max)
    train = [train[i] for i in order]  # prefixes are random subsets
    load_s = time.perf_counter() - t
    path = Path(args.kernels)
    if path.exists():
        z = np.load(path)
        if int(z["n_train"]) != n_max or int(z["n_test"]) != args.n_test or z["K_NM"].shape[2] < m_max:
            raise SystemExit(f"{path} holds other sizes; remove it or pass another --kernels")
        act, K_NM, K_MM, K_TM = z["active"], z["K_NM"], z["K_MM"], z["K_TM"]
        sel_s, ker_s = float(z["selection_seconds"]), float(z["kernel_seconds"])
        print(f"kernels from {path}", file=sys.stderr, flush=True)
    else:
        t = time.perf_counter()
        act = select_active_environments(train, m_max, hypers, seed=args.seed, pool=args.pool)
        sel_s = time.perf_counter() - t
        print(f"FPS selection of {m_max} environments: {sel_s:.0f} s", file=sys.stderr, flush=True)
        t = time.perf_counter()

        def progress(frac, eta):
            el = time.perf_counter() - t
            eta = el * (1 - frac) / frac if frac > 0.01 else float("nan")
            sys.stderr.write(f"\rkernels {100 * frac:5.1f}%  ETA {eta:6.0f} s")
            sys.stderr.flush()

        kern = sparse_kernels(train, act, hypers, kind="environments", frames_test=test,
                              engine=WignerKernel(hypers, memory_budget=4 * 2**30), progress=progress)
        ker_s = time.perf_counter() - t
        sys.stderr.write("\n")
        K_NM, K_MM, K_TM = kern["K_NM"], kern["K_MM"], kern["K_TM"]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, K_NM=K_NM, K_MM=K_MM, K_TM=K_TM, active=act, n_train=n_max, n_test=args.n_test,
                 selection_seconds=sel_s, kernel_seconds=ker_s)
    rss_kernels = _rss_mib()
    n_atoms = sum(len(a) for a in train) + sum(len(a) for a in test)
    print(f"kernels: {ker_s:.0f} s for {n_atoms} atoms × {m_max} environments; peak RSS {rss_kernels:.0f} MiB",
          file=sys.stderr, flush=True)

    y_tr = get_target(train, args.target)
    y_te = get_target(test, args.target)
    counts, species = composition_counts(train + test)
    c_tr, c_te = counts[:n_max], counts[n_max:]
    numbers = np.concatenate([a.numbers for a in train])
    za = numbers[act]
    elements, sizes_el = np.unique(numbers, return_counts=True)
    rows = []
    for n, m in zip(sizes, ms):
        t = time.perf_counter()
        cols = np.concatenate([np.flatnonzero(za == e)[:k] for e, k in zip(elements, _allocate(m, sizes_el))])
        cpu = time.process_time()
        whole = m == K_NM.shape[2]  # all columns: views, not 4 GB copies at 20,000 × 5,000
        k_nm = K_NM[:, :n] if whole else K_NM[:, :n][:, :, cols]
        k_mm = K_MM if whole else K_MM[:, cols][:, :, cols]
        est = SparseScalarRegressor(weights="free")
        est.fit(k_nm, k_mm, y_tr[:n], counts=c_tr[:n], species=species)
        fit_s = time.perf_counter() - t
        fit_cpu = time.process_time() - cpu
        pred = est.predict(K_TM if whole else K_TM[:, :, cols], counts=c_te, species=species)
        err = pred - y_te
        core = est.model_
        row = {"model": "sparse-mixed", "n_train": n, "repeat": 0, "mae": float(np.abs(err).mean()),
               "rmse": float(np.sqrt((err**2).mean())), "n_active": m, "n_test": len(y_te),
               "fit_seconds": round(fit_s, 1), "fit_cpu_seconds": round(fit_cpu, 1),
               "products_seconds": round(core.products_seconds_, 1),
               "search_seconds": round(core.search_seconds_, 1), "evaluations": int(core.cv_n_evals_),
               "kernel_seconds_all_sizes": round(ker_s, 1), "selection_seconds": round(sel_s, 1),
               "pool": args.pool or "all",
               "peak_rss_mib": round(_rss_mib()), "cv_mae": float(core.cv_mae_),
               "relative_regularization": float(core.relative_regularization_), "load": _load(),
               "date": time.strftime("%Y-%m-%d", time.gmtime())}
        rows.append(row)
        print(f"N={n} M={m}: test MAE {1000 * row['mae']:.1f} meV, fit {fit_s:.0f} s (products "
              f"{row['products_seconds']} s, search {row['search_seconds']} s, {row['evaluations']} evaluations), "
              f"peak RSS {row['peak_rss_mib']} MiB, load {row['load']}", file=sys.stderr, flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"data {load_s:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
