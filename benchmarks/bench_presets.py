"""The "metals and bulk" preset, chosen on the bundled EMT gold data (issue 15, part 5).

Protocol (``wkviz.data.load_sample("gold")``: 300 Au clusters of 10–40 atoms, 200 periodic fcc cells of 4–32 atoms,
EMT energies in eV):

1. *Sets.* One draw (seed ``--seed``, default 0) takes, separately from the clusters and the cells, a selection set
   of 120 structures (72 clusters, 48 cells: 60 % / 40 %) and a held-out set of 200 others (120 clusters,
   80 cells). The two never overlap (asserted).
2. *Selection* (``--part select``). For every candidate of :data:`CANDIDATES` (the QM9 and paper presets and a
   grid around r₀ ≈ 3.5 Å, cutoff 4.5 Å, σ(r) = 0.03 Å·e^{r/1 Å}), the kernel of the 120 selection structures and
   the 5-fold CV MAE of the mixed model (free weights per ν chosen by the GP evidence, as ``python -m wkviz fit``).
   The candidate with the lowest CV MAE wins. The held-out set is not looked at.
3. *Held-out comparison* (``--part heldout``). The winner, the QM9 and paper presets and the winner's neighbours
   (:func:`neighbours`) on the 200 held-out structures: one kernel each, ``--splits`` (default 8) random 130/70
   partitions (the same for every candidate, 78 / 52 clusters / cells in training), the mixed model fitted on 130
   and scored on 70: test MAE overall, on clusters and on cells, and the paired difference to the winner (mean ±
   standard error over splits, and on how many splits the winner is better).

Kernels are cached in ``--out`` (``.npy`` by hyperparameter digest and set), so a rerun only fits.

Usage::

    python benchmarks/bench_presets.py [--part select|heldout|all] [--out artifacts/bench_presets]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from wkviz import Hypers
from wkviz.data import load_sample
from wkviz.engine.kernels import WignerKernel
from wkviz.evaluation import compare_models
from wkviz.models import KernelSet, TargetData
from wkviz.presets import PRESETS

MEV = 1000.0
FIT = {"weights": "free", "selection": "evidence", "n_folds": 5}
N_SELECT = {"cluster": 72, "bulk": 48}
N_HELDOUT = {"cluster": 120, "bulk": 80}
N_TRAIN_HELDOUT = 130

#: The starting point of the grid: the paper's plain density (no coupling, hydrogens equal: gold has neither
#: question) with a radial weight that keeps the first shell and a cutoff just past the second.
BASE = {**PRESETS["paper"].values, "cutoff": 4.5, "radial_scale": 3.5, "radial_exponent": 6.0}


def _cand(label, **changes):
    return {"label": label, "values": {**BASE, **changes}}


CANDIDATES = [
    {"label": "preset qm9", "values": dict(PRESETS["qm9"].values)},
    {"label": "preset paper", "values": dict(PRESETS["paper"].values)},
    _cand("base: rc 4.5, σ 0.03·e^(r/1), r0 3.5, m 6"),
    # cutoff
    _cand("rc 4.0", cutoff=4.0),
    _cand("rc 5.0", cutoff=5.0),
    _cand("rc 5.5", cutoff=5.5),
    # radial weight
    _cand("r0 2.5", radial_scale=2.5),
    _cand("r0 3.0", radial_scale=3.0),
    _cand("r0 4.0", radial_scale=4.0),
    _cand("no radial weight", radial_scale=None),
    _cand("m 4", radial_exponent=4.0),
    _cand("m 10", radial_exponent=10.0),
    _cand("rc 5.0, r0 4.0", cutoff=5.0, radial_scale=4.0),
    _cand("rc 5.0, r0 3.0", cutoff=5.0, radial_scale=3.0),
    # width law
    _cand("σ0 0.02", density_width=0.02),
    _cand("σ0 0.05", density_width=0.05),
    _cand("σ0 0.1", density_width=0.1),
    _cand("r_s 0.8", density_scaling=0.8),
    _cand("r_s 1.5", density_scaling=1.5),
    _cand("σ 0.1 constant", density_width=0.1, density_scaling=None),
    _cand("σ 0.2 constant", density_width=0.2, density_scaling=None),
    _cand("σ 0.3 constant", density_width=0.3, density_scaling=None),
    _cand("σ 0.5 constant", density_width=0.5, density_scaling=None),
    # the QM9 preset with only the radial weight moved out to the gold first shell
    {"label": "qm9 preset, r0 3.5", "values": {**PRESETS["qm9"].values, "radial_scale": 3.5}},
    {"label": "qm9 preset, rc 4.5, r0 3.5", "values": {**PRESETS["qm9"].values, "cutoff": 4.5,
                                                         "radial_scale": 3.5}},
    # the paper's density with the cutoff only
    {"label": "paper preset, rc 4.5", "values": {**PRESETS["paper"].values, "cutoff": 4.5}},
]

#: Round 2: round 1's winner (σ₀ 0.1 Å) lay on the edge of its grid, so the width law is searched around it,
#: with the radial weight and cutoff moved once more around the new centre.
ROUND2 = [
    _cand("σ0 0.15", density_width=0.15),
    _cand("σ0 0.2", density_width=0.2),
    _cand("σ0 0.3", density_width=0.3),
    _cand("σ0 0.1, r_s 0.8", density_width=0.1, density_scaling=0.8),
    _cand("σ0 0.1, r_s 1.2", density_width=0.1, density_scaling=1.2),
    _cand("σ0 0.05, r_s 0.8", density_width=0.05, density_scaling=0.8),
    _cand("σ0 0.15, r_s 0.8", density_width=0.15, density_scaling=0.8),
    _cand("σ0 0.1, r0 3.0", density_width=0.1, radial_scale=3.0),
    _cand("σ0 0.1, r0 4.0", density_width=0.1, radial_scale=4.0),
    _cand("σ0 0.1, no radial weight", density_width=0.1, radial_scale=None),
    _cand("σ0 0.1, m 10", density_width=0.1, radial_exponent=10.0),
    _cand("σ0 0.1, rc 4.0", density_width=0.1, cutoff=4.0),
    _cand("σ0 0.1, rc 5.0", density_width=0.1, cutoff=5.0),
]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sets(frames, seed=0):
    """Indices of the selection and held-out sets (disjoint), each drawn per config type."""
    rng = np.random.default_rng(seed)
    kinds = np.array([a.info["config_type"] for a in frames])
    select, heldout = [], []
    for kind in ("cluster", "bulk"):
        idx = rng.permutation(np.flatnonzero(kinds == kind))
        a, b = N_SELECT[kind], N_HELDOUT[kind]
        if a + b > idx.size:
            raise SystemExit(f"only {idx.size} {kind} structures, need {a + b}")
        select.append(idx[:a])
        heldout.append(idx[a:a + b])
    select, heldout = np.sort(np.concatenate(select)), np.sort(np.concatenate(heldout))
    assert not set(select.tolist()) & set(heldout.tolist()), "selection and held-out sets overlap"
    return select, heldout


def kernel(hypers: Hypers, frames, tag, cache: Path):
    """K of ``frames`` with ``hypers``, cached by the hypers' digest and the structures' content hash."""
    content = hashlib.sha256(b"".join(a.positions.tobytes() + a.numbers.tobytes() for a in frames)).hexdigest()
    path = cache / f"{tag}_{hypers.digest()}_{content[:12]}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    res = WignerKernel(hypers).compute(frames)
    log(f"kernel {tag} {len(frames)}×{len(frames)}: {time.perf_counter() - t:.1f} s "
        f"({res.n_pairs / max(res.seconds, 1e-9):,.0f} pairs/s)")
    np.save(path, res.K)
    return res.K


def kernel_set(K, frames):
    n_atoms = np.array([len(a) for a in frames])
    return KernelSet(K=K, n_atoms_A=n_atoms, n_atoms_B=n_atoms)


def select(frames, idx, cache, candidates=CANDIDATES + ROUND2):
    sub = [frames[i] for i in idx]
    target = TargetData.from_frames(sub, "energy")
    rows = []
    for cand in candidates:
        h = Hypers(**cand["values"])
        ks = kernel_set(kernel(h, sub, "select", cache), sub)
        res = compare_models(ks, target, ks, target, models=["mixed"], **FIT)[0]
        rows.append({**cand, "cv_mae_meV": res["cv_mae"] * MEV, "weights": res["weights"]})
        log(f"{cand['label']}: CV MAE {res['cv_mae'] * MEV:.1f} meV")
    return rows


def neighbours(winner, rows, k=4):
    """Up to ``k`` grid candidates next to the winner: the best-ranked others that differ from it in one field."""
    wv = winner["values"]
    out = []
    for r in sorted(rows, key=lambda r: r["cv_mae_meV"]):
        if r is winner or r["label"].startswith("preset"):
            continue
        diff = [name for name in set(wv) | set(r["values"]) if wv.get(name) != r["values"].get(name)]
        if len(diff) == 1:
            out.append(r)
        if len(out) == k:
            break
    return out


def heldout(frames, idx, cache, entries, splits=8):
    """Paired comparison of ``entries`` (dicts with ``label`` and ``values``; the first is the reference)."""
    sub = [frames[i] for i in idx]
    target = TargetData.from_frames(sub, "energy")
    is_cluster = np.array([a.info["config_type"] == "cluster" for a in sub])
    parts = []
    for s in range(splits):  # stratified, so every split has the same 78 / 52 clusters / cells in training
        rng = np.random.default_rng(500 + s)
        tr = []
        for mask in (is_cluster, ~is_cluster):
            i = rng.permutation(np.flatnonzero(mask))
            tr.append(i[: round(N_TRAIN_HELDOUT / 200 * mask.sum())])  # 78 / 52 of 120 / 80
        tr = np.sort(np.concatenate(tr))
        te = np.setdiff1d(np.arange(len(sub)), tr)
        parts.append((tr, te))
    mae = np.zeros((len(entries), splits, 3))  # all, clusters, cells
    for c, entry in enumerate(entries):
        ks = kernel_set(kernel(Hypers(**entry["values"]), sub, "heldout", cache), sub)
        for s, (tr, te) in enumerate(parts):
            pred, _ = _fit(ks, target, tr, te)
            err = np.abs(pred - target.values[te]) * MEV
            cl = is_cluster[te]
            mae[c, s] = err.mean(), err[cl].mean(), err[~cl].mean()
        log(f"{entry['label']}: held-out MAE {mae[c, :, 0].mean():.1f} ± "
            f"{mae[c, :, 0].std(ddof=1) / np.sqrt(splits):.1f} meV")
    rows = []
    se = lambda x: float(x.std(ddof=1) / np.sqrt(x.size))  # noqa: E731
    for c, entry in enumerate(entries):
        d = mae[c, :, 0] - mae[0, :, 0]
        rows.append({"label": entry["label"], "values": entry["values"],
                     "mae_meV": mae[c, :, 0].tolist(),
                     "mean_meV": float(mae[c, :, 0].mean()), "se_meV": se(mae[c, :, 0]),
                     "clusters_meV": float(mae[c, :, 1].mean()), "clusters_se_meV": se(mae[c, :, 1]),
                     "cells_meV": float(mae[c, :, 2].mean()), "cells_se_meV": se(mae[c, :, 2]),
                     "paired_diff_meV": float(d.mean()), "paired_se_meV": se(d) if c else 0.0,
                     "winner_better": int((d > 0).sum())})
    return rows


def _fit(ks, target, tr, te):
    from wkviz.models import fit_predict

    return fit_predict(ks.subset(tr, tr), target.subset(tr), ks.subset(te, tr), target.subset(te), model="mixed",
                       **{k: v for k, v in FIT.items()})


def _fmt(values):
    return ", ".join(f"{k}={v}" for k, v in values.items() if Hypers.spec(k).default != v) or "Hypers defaults"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("select", "heldout", "all"), default="all")
    ap.add_argument("--out", default="artifacts/bench_presets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", type=int, default=8)
    ap.add_argument("--neighbours", type=int, default=4)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_sample("gold")
    sel, held = sets(frames, args.seed)
    log(f"{len(frames)} gold structures: selection {sel.size}, held-out {held.size}, disjoint; "
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    start = time.perf_counter()
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "load_start": os.getloadavg(),
              "selection": sel.tolist(), "heldout": held.tolist()}
    sel_path = out / "select.json"
    if args.part in ("select", "all"):
        rows = select(frames, sel, out)
        sel_path.write_text(json.dumps(rows, indent=1))
    else:
        rows = json.loads(sel_path.read_text())
    rows_sorted = sorted(rows, key=lambda r: r["cv_mae_meV"])
    winner = rows_sorted[0]
    print("\n## selection: 5-fold CV MAE of the mixed model on 120 gold structures\n")
    print("| candidate | changes to the Hypers defaults | CV MAE (meV) |\n| --- | --- | --- |")
    for r in rows_sorted:
        print(f"| {r['label']} | {_fmt(r['values'])} | {r['cv_mae_meV']:.1f} |")
    if args.part in ("heldout", "all"):
        by_label = {r["label"]: r for r in rows}
        entries = [{"label": "winner: " + winner["label"], "values": winner["values"]}]
        entries += [{"label": p, "values": by_label[p]["values"]} for p in ("preset qm9", "preset paper")
                    if by_label[p] is not winner]
        entries += [{"label": r["label"], "values": r["values"]}
                    for r in neighbours(winner, rows, args.neighbours)]
        held_rows = heldout(frames, held, out, entries, args.splits)
        (out / "heldout.json").write_text(json.dumps(held_rows, indent=1))
        print(f"\n## held-out: 200 other structures, {args.splits} paired {N_TRAIN_HELDOUT}/"
              f"{200 - N_TRAIN_HELDOUT} splits (mean ± se over splits)\n")
        print("| candidate | MAE (meV) | paired difference to the winner (meV) | splits the winner is better | "
              "clusters (meV) | cells (meV) |\n| --- | --- | --- | --- | --- | --- |")
        for r in held_rows:
            diff = "–" if r is held_rows[0] else f"{r['paired_diff_meV']:+.1f} ± {r['paired_se_meV']:.1f}"
            wins = "–" if r is held_rows[0] else f"{r['winner_better']}/{args.splits}"
            print(f"| {r['label']} | {r['mean_meV']:.1f} ± {r['se_meV']:.1f} | {diff} | {wins} | "
                  f"{r['clusters_meV']:.1f} ± {r['clusters_se_meV']:.1f} | {r['cells_meV']:.1f} ± "
                  f"{r['cells_se_meV']:.1f} |")
    result["seconds"] = time.perf_counter() - start
    result["load_end"] = os.getloadavg()
    (out / "run.json").write_text(json.dumps(result, indent=1))
    print(f"\nwall time {result['seconds'] / 60:.1f} min; load {result['load_start'][0]:.1f} → "
          f"{result['load_end'][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
