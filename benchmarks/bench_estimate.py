"""Estimate against measurement: ``WignerKernel.estimate`` (neighbour pre-scan + timed micro-run) vs the wall time of
``WignerKernel.compute`` right after it, each repeat in a fresh process, at the default hyperparameters.

    python benchmarks/bench_estimate.py [--repeats 3] [--cases qm9-300,gold-clusters,gold-cells,qm9-1000]

Prints one line per run and a table of measured/estimated (mean ± sd over repeats), the estimate's own wall time
and the load average (1 min) before and after each run; ``--json`` writes the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CASES = {
    "qm9-300": ("qm9", None, 300),  # the app's default session
    "gold-clusters": ("gold", "cluster", 200),
    "gold-cells": ("gold", "bulk", 200),
    "qm9-1000": ("qm9", None, 1000),
}

_RUN = """
import json, os, sys, time
from wkviz import Hypers
from wkviz.data import load_sample
from wkviz.engine.kernels import WignerKernel
name, kind, n = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
frames = load_sample(name)
if kind:
    frames = [a for a in frames if a.info.get("config_type") == kind]
frames = frames[:n]
engine = WignerKernel(Hypers())
load0 = os.getloadavg()[0]
t0 = time.perf_counter()
est = engine.estimate(frames)
t_est = time.perf_counter() - t0
res = engine.compute(frames)
print(json.dumps({"estimate": est["seconds"], "measured": res.seconds, "estimate_wall": t_est,
                  "micro": est["rates"]["micro_seconds"], "compile": est["compile_seconds"],
                  "memory_bytes": est["memory_bytes"], "atoms": int(sum(len(a) for a in frames)),
                  "load_before": load0, "load_after": os.getloadavg()[0]}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--json", default=None, help="write every run here")
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = {}
    for case in args.cases.split(","):
        name, kind, n = CASES[case]
        for r in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", _RUN, name, kind or "", str(n)], capture_output=True,
                                 text=True, check=True, env=env, cwd=root)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault(case, []).append(row)
            print(f"{case} #{r}: estimate {row['estimate']:.1f} s, measured {row['measured']:.1f} s, "
                  f"ratio {row['measured'] / row['estimate']:.2f}; estimate took {row['estimate_wall']:.1f} s "
                  f"(micro-run {row['micro']:.2f} s, first calls {row['compile']:.2f} s); load "
                  f"{row['load_before']:.1f} → {row['load_after']:.1f}", flush=True)
    print("\n| case | atoms | runs | estimate (s) | measured (s) | measured / estimate (mean ± sd) | estimate took (s) "
          "| load (1 min) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, rows in runs.items():
        ratio = np.array([r["measured"] / r["estimate"] for r in rows])
        est = np.array([r["estimate"] for r in rows])
        meas = np.array([r["measured"] for r in rows])
        took = np.array([r["estimate_wall"] for r in rows])
        loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
        sd = ratio.std(ddof=1) if len(ratio) > 1 else float("nan")
        print(f"| {case} | {rows[0]['atoms']:,} | {len(rows)} | {est.mean():.1f} | {meas.mean():.1f} | "
              f"{ratio.mean():.2f} ± {sd:.2f} | {took.mean():.1f} | {min(loads):.1f}–{max(loads):.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
