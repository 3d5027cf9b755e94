"""Engine throughput, measured: centre pairs per second of ``python -m wkviz kernels`` and where the time goes.

Measures, on the first ``--n`` molecules of the bundled QM9 subset (default 300, L = 3, ν_max = 4, cutoff 5 Å:
the issue's reference case):

1. end to end: ``python -m wkviz kernels FILE --out K.npz`` in a fresh process, after one warm-up run so the
   Numba cache is warm; ordered same-species centre pairs (``KernelResult.n_pairs``) per wall-clock second,
   both as the CLI reports it (``n_pairs / res.seconds``) and for the whole process (start-up, reading and
   writing included);
2. the breakdown of one in-process ``WignerKernel.compute`` (``KernelResult.timings``) and the achieved
   GFLOP/s of its two heavy phases against the CPU's FP64 peak;
3. cost against ν_max = 2…6 (it must grow linearly with the number of Clebsch–Gordan steps);
4. cost against the size of the radial basis (the iteration must not depend on it; only the ν=1 seed does).

Every number is the median (and best) of ``--repeats`` runs. Other jobs on the machine slow everything down:
the load average is printed with every table; compare runs taken at similar load.

Run (≈ 3–4 minutes on 2 idle cores)::

    .venv/bin/python benchmarks/bench_kernels.py

Flop counts
-----------
One CG term (coef·a·b accumulated) is counted as 2 flops (it executes as a multiply and a fused multiply-add,
so the FP units do 3); the seed counts 2 flops per multiply-add of its matrix products,
Σ_l (2l+1)² · n_channels · n_radial per computed pair: the nominal count, with every channel (the products
actually skip the channels a tile does not use and compute part of the diagonal tiles' lower triangles). The peak is
``--cores`` × ``--ghz`` × ``--flop-per-cycle`` (default 2 × 2.0 × 32 = 128 GFLOP/s: two AVX-512 FMA units).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wkviz.engine import density  # noqa: E402
from wkviz.data import read_structures  # noqa: E402
from wkviz.hypers import Hypers  # noqa: E402
from wkviz.engine.kernels import WignerKernel  # noqa: E402
from wkviz.engine.neighbors import environments_for  # noqa: E402

QM9 = ROOT / "sample_data" / "qm9_subset.extxyz.gz"


def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def median_best(values):
    return statistics.median(values), min(values)


def machine_info() -> list[str]:
    import llvmlite
    import numba

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version', '')} ({i.get('architecture', '?')}, "
                         f"{i['num_threads']} threads)" for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = "?"
    return [
        f"- CPU: {model}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Numba {numba.__version__} (llvmlite {llvmlite.__version__}), BLAS: {blas}",
        f"- Numba threads: {numba.get_num_threads()}, threading layer: {_threading_layer()}",
    ]


def _threading_layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return "(not started)"


# ------------------------------------------------------------------------------------------------------------
# measurements


def run_cli(path, repeats):
    """(process wall s, CLI-reported compute s, n_pairs) of each timed run, after one warm-up run."""
    out = Path(tempfile.mkdtemp()) / "K.npz"
    cmd = [sys.executable, "-m", "wkviz", "kernels", str(path), "--out", str(out)]
    runs = []
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        m = re.search(r"in ([0-9.]+) s", proc.stderr)
        n = re.search(r"([0-9,]+) centre pairs", proc.stderr)
        if k > 0:  # run 0 warms the Numba cache
            runs.append((wall, float(m.group(1)), int(n.group(1).replace(",", ""))))
    return runs, " ".join(cmd[1:])


def run_api(frames, hypers, repeats, radial_basis=None):
    """KernelResults of ``repeats`` in-process computations (after a warm-up on a few structures)."""
    engine = WignerKernel(hypers, radial_basis=radial_basis)
    engine.compute(frames[:4])
    return [engine.compute(frames) for _ in range(repeats)]


def flops(frames, hypers, engine_result):
    """Useful flops of the iteration and of the seed for one computation."""
    engine = WignerKernel(hypers)
    plan = engine._plan(())
    est = engine.estimate(frames)
    computed = est["computed_pairs"]
    env = environments_for(frames, hypers)
    n_channels = len(np.unique(env.neighbor_numbers))
    n_radial = density.radial_basis(hypers).n_max
    iteration = 2.0 * (plan.n_terms_step + plan.n_terms_out) * computed
    seed = 2.0 * plan.n_seed * n_channels * n_radial * computed
    return iteration, seed, computed, plan


# ------------------------------------------------------------------------------------------------------------
# report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="QM9 molecules for the end-to-end run (default 300)")
    parser.add_argument("--scan-n", type=int, default=150, help="molecules for the ν_max and radial scans")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median, best)")
    parser.add_argument("--structures", help="use this file instead of the first --n QM9 molecules")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--ghz", type=float, default=2.0)
    parser.add_argument("--flop-per-cycle", type=int, default=32, help="FP64 flops per cycle and core")
    parser.add_argument("--skip-cli", action="store_true", help="skip the end-to-end CLI runs")
    args = parser.parse_args(argv)
    peak = args.cores * args.ghz * args.flop_per_cycle

    if args.structures:
        path = Path(args.structures)
        frames = read_structures(path)
    else:
        frames = read_structures(QM9)[: args.n]
        path = Path(tempfile.mkdtemp()) / f"qm9_{args.n}.xyz"
        import ase.io

        ase.io.write(path, frames, format="extxyz")
    h = Hypers()
    print(f"# wkviz engine benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"Command: `{' '.join([Path(sys.executable).name] + sys.argv)}`\n")
    print("\n".join(machine_info()))
    print(f"- hypers: {h.to_json()}")
    print(f"- structures: {len(frames)} from {path.name}; repeats: {args.repeats} (median, best); "
          f"FP64 peak assumed {peak:.0f} GFLOP/s\n")

    # 1. end to end
    if not args.skip_cli:
        la = load()
        runs, cmd = run_cli(path, args.repeats)
        walls = [r[0] for r in runs]
        computes = [r[1] for r in runs]
        n_pairs = runs[0][2]
        print("## End to end (`python " + cmd.replace(str(path), path.name) + "`, warm Numba cache)\n")
        print(f"load average before / after: {la} / {load()}\n")
        print("| measure | median | best |")
        print("|---|---|---|")
        m, b = median_best(computes)
        print(f"| CLI compute time (res.seconds) | {m:.2f} s | {b:.2f} s |")
        print(f"| ordered pairs / s (as the CLI reports it) | {n_pairs / m:,.0f} | {n_pairs / b:,.0f} |")
        m, b = median_best(walls)
        print(f"| whole process wall time | {m:.2f} s | {b:.2f} s |")
        print(f"| ordered pairs / s, whole process | {n_pairs / m:,.0f} | {n_pairs / b:,.0f} |")
        print(f"\n{n_pairs:,} ordered same-species centre pairs.\n")

    # 2. breakdown and GFLOP/s
    la = load()
    results = run_api(frames, h, args.repeats)
    it_flops, seed_flops, computed, plan = flops(frames, h, results[0])
    print(f"## Breakdown of `WignerKernel.compute` (in process; load {la} / {load()})\n")
    phases = ["neighbours", "radial_basis", "seed", "iteration", "accumulate"]
    print("| phase | median s | best s | GFLOP/s (median) | % of peak |")
    print("|---|---|---|---|---|")
    for name in phases:
        vals = [r.timings.get(name, 0.0) for r in results]
        m, b = median_best(vals)
        fl = {"seed": seed_flops, "iteration": it_flops}.get(name)
        gf = f"{fl / m / 1e9:.1f}" if fl and m > 0 else ""
        pct = f"{100 * fl / m / 1e9 / peak:.0f} %" if fl and m > 0 else ""
        print(f"| {name} | {m:.2f} | {b:.2f} | {gf} | {pct} |")
    m, b = median_best([r.seconds for r in results])
    total = it_flops + seed_flops
    print(f"| **total** | {m:.2f} | {b:.2f} | {total / m / 1e9:.1f} | {100 * total / m / 1e9 / peak:.0f} % |")
    n_pairs = results[0].n_pairs
    print(f"\n{n_pairs:,} ordered pairs ({computed:,} computed: each unordered pair once) → "
          f"{n_pairs / m:,.0f} ordered pairs/s (median). Iteration: {plan.n_terms:,} CG terms per pair.\n")

    # 3. ν_max scan
    scan = frames[: args.scan_n]
    print(f"## Cost against ν_max (L = 3, reduced schedule, {len(scan)} molecules; load {load()})\n")
    print("| ν_max | CG steps | terms / pair | compute s (median / best) | seed s | iteration s (median / best) "
          "| ordered pairs / s (median) | full schedule: terms / pair |")
    print("|---|---|---|---|---|---|---|---|")
    for nu in range(2, 7):
        hh = h.replace(nu_max=nu)
        rs = run_api(scan, hh, args.repeats)
        p = WignerKernel(hh)._plan(())
        m, b = median_best([r.seconds for r in rs])
        seed = statistics.median(r.timings["seed"] for r in rs)
        it, itb = median_best([r.timings["iteration"] for r in rs])
        steps = (nu - nu // 2) - 1
        full = WignerKernel(hh.replace(schedule="full"))._plan(())
        print(f"| {nu} | {steps} | {p.n_terms:,} | {m:.2f} / {b:.2f} | {seed:.2f} | {it:.2f} / {itb:.2f} | "
              f"{rs[0].n_pairs / m:,.0f} | {full.n_terms:,} |")
    print("\nThe reduced schedule (default) runs ⌈ν_max/2⌉ − 1 equivariant CG steps and gets the higher orders by "
          "contractions, so its cost rises by one step every second order; the full schedule adds one step per "
          "order (last column). Time is proportional to the terms.\n")

    # 4. radial basis size scan
    print(f"## Cost against the radial basis size (ν_max = 4, L = 3, {len(scan)} molecules; load {load()})\n")
    print("| basis tolerance | radial functions per l | seed s | iteration s | compute s |")
    print("|---|---|---|---|---|")
    for tol in (1e-6, 1e-8, 1e-11, 1e-14):
        basis = density.RadialBasis(h, tolerance=tol)
        rs = run_api(scan, h, args.repeats, radial_basis=basis)
        nr = basis.n_radial.tolist()
        seed = statistics.median(r.timings["seed"] for r in rs)
        it = statistics.median(r.timings["iteration"] for r in rs)
        m = statistics.median(r.seconds for r in rs)
        print(f"| {tol:.0e} | {nr} | {seed:.2f} | {it:.2f} | {m:.2f} |")
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
