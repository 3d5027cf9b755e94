"""Load cost of the Map page's chemiscope dataset: 2,000 structures and 20,000 atomic environments of the bundled
QM9 subset.

What the Map page does on every rerun once its kernels and projections are cached: build the dataset
(``wkviz.views.explorer``: structures, every ν's and the mixed kernel's first two kernel-PCA components, the
target and its value per atom, five models' prediction / |error| / σ, composition), hash it (the component key)
and hand it to Streamlit, which serialises it to JSON for the browser. The kernel PCA itself is not timed here
(its coordinates are random numbers of the same shape: the cost measured is the dataset's, not the kernel's).

Run::

    .venv/bin/python benchmarks/bench_chemiscope.py --repeats 5

Prints one JSON line per case: build / hash / json.dumps seconds (mean ± standard error over the repeats) and the
JSON size in MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np


def _stats(xs):
    xs = np.asarray(xs, dtype=float)
    se = xs.std(ddof=1) / np.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return {"mean_s": round(float(xs.mean()), 4), "se_s": round(float(se), 4), "n": len(xs)}


class _P:  # the shape of wkviz.evaluation.projection.Projection that kpca_properties reads
    def __init__(self, coords):
        self.coords = coords
        self.explained_variance_ratio = np.array([0.3, 0.1])


def build(frames, *, environments: bool, rng):
    from wkviz.views import explorer

    n_atoms = np.array([len(a) for a in frames])
    if environments:
        struct_of = np.repeat(np.arange(len(frames)), n_atoms)
        atom_of = np.concatenate([np.arange(n) for n in n_atoms])
        envs = list(zip(struct_of.tolist(), atom_of.tolist()))
        n = len(envs)
    else:
        envs, n = None, len(frames)
    target = "atom" if environments else "structure"
    projections = {label: _P(rng.normal(size=(n, 2))) for label in ("nu=0", "nu=1", "nu=2", "nu=3", "nu=4", "mixed")}
    props = explorer.kpca_properties(projections, target)
    props.update(explorer.composition_properties(frames, envs))
    y = np.array([a.info["U0"] for a in frames])
    if environments:
        per = explorer.target_properties("U0", y, unit="eV", n_atoms=n_atoms, extensive=True)
        for name, p in per.items():
            props[f"structure's {name}"] = explorer.prop(np.asarray(p["values"], dtype=float)[struct_of], "atom")
        view = explorer.settings(x="mixed PC1", y="mixed PC2", color="structure's U0 per atom", target="atom",
                                 cutoff=5.0)
    else:
        props.update(explorer.target_properties("U0", y, unit="eV", n_atoms=n_atoms, extensive=True))
        test = np.arange(n)  # a map of the test structures: every row has a prediction
        models = {m: {"pred": y + rng.normal(scale=0.05, size=n), "std": np.full(n, 0.05)}
                  for m in ("mixed", "ν=0", "ν=1", "ν=2", "ν=3")}
        props.update(explorer.model_properties(n, test, y, models, unit="eV"))
        view = explorer.settings(x="mixed PC1", y="mixed PC2", color="|error| (mixed)")
    return explorer.dataset(frames, props, name="bench", environments=envs, cutoff=5.0, settings=view)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--structures", type=int, default=2000)
    ap.add_argument("--environments", type=int, default=20000)
    args = ap.parse_args()
    from wkviz import data

    frames = data.load_sample("qm9")
    cum = np.cumsum([len(a) for a in frames])
    env_frames = frames[:int(np.searchsorted(cum, args.environments)) + 1]
    cases = {f"{args.structures} structures": (frames[:args.structures], False),
             f"{int(cum[len(env_frames) - 1])} environments ({len(env_frames)} structures)": (env_frames, True)}
    rng = np.random.default_rng(0)
    for label, (fr, envs) in cases.items():
        t_build, t_hash, t_json, size = [], [], [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ds = build(fr, environments=envs, rng=rng)
            t1 = time.perf_counter()
            hashlib.sha1(json.dumps(ds, sort_keys=True).encode()).hexdigest()
            t2 = time.perf_counter()
            text = json.dumps(ds)
            t3 = time.perf_counter()
            t_build.append(t1 - t0)
            t_hash.append(t2 - t1)
            t_json.append(t3 - t2)
            size = len(text.encode())
        print(json.dumps({"case": label, "properties": len(ds["properties"]), "build": _stats(t_build),
                          "hash": _stats(t_hash), "json": _stats(t_json), "json_MB": round(size / 1e6, 2),
                          "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
