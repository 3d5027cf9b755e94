"""Load cost of the Map page's chemiscope dataset: 2,000 structures and 20,000 atomic environments of the bundled
QM9 subset.

What the Map page does on every rerun once its kernels and projections are cached: build the dataset
(``wkviz.views.explorer``: structures, every ν's and the mixed kernel's first two kernel-PCA components, the
target and its value per atom, five models' prediction / |error| / σ, composition), hash it (the component key)
and hand it to Streamlit, which serialises it to JSON for the browser. The kernel PCA itself is not timed here
(its coordinates are random numbers of the same shape: the cost measured is the dataset's, not the kernel's).

``--browser`` also measures the render: a minimal Streamlit app (this file, run by ``streamlit run``) shows the
dataset with the app's component (``pages.support.explorer.viewer``), and headless Chromium (Playwright, every
non-local request blocked) times from navigation until chemiscope has drawn the structure viewer and the map.

Run::

    .venv/bin/python benchmarks/bench_chemiscope.py --repeats 5 [--browser]

Prints one JSON line per case: build / hash / json.dumps seconds (mean ± standard error over the repeats), the
JSON size in MB and, with ``--browser``, the render time (mean ± standard error over the browser repeats).
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


def _serve_dataset():
    """Body of the minimal app: ``streamlit run bench_chemiscope.py -- --serve FILE``."""
    import streamlit as st

    from pages.support import explorer as explorer_widget

    st.set_page_config(layout="wide")
    with open(os.environ["WKVIZ_BENCH_DATASET"]) as fh:
        data = json.load(fh)
    settings = data.pop("settings")
    explorer_widget.viewer(data, settings=settings, key="bench", height=640)


def _browser_times(data: dict, repeats: int) -> list[float]:
    import socket
    import subprocess
    import sys
    import tempfile
    import urllib.parse
    import urllib.request

    from playwright.sync_api import sync_playwright

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(data, fh)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, WKVIZ_BENCH_DATASET=fh.name, PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", os.path.abspath(__file__), "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    times = []
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            for _ in range(repeats + 1):  # the first run warms Streamlit and the browser cache; not counted
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.route("**/*", lambda route: route.continue_() if urllib.parse.urlsplit(route.request.url)
                           .hostname in ("127.0.0.1", "localhost") else route.abort())
                t0 = time.perf_counter()
                page.goto(url)
                deadline = time.time() + 180
                done = False
                while not done and time.time() < deadline:
                    for frame in page.frames:
                        if "chemiscope_viewer" in frame.url:
                            try:  # locators pierce chemiscope's shadow roots (document.querySelector does not)
                                done = (frame.locator("#chemiscope-map .main-svg").count() > 0
                                        and frame.locator("input.chsp-info-number").count() > 0
                                        and frame.locator("canvas").count() > 0)
                            except Exception:
                                done = False
                    if not done:
                        page.wait_for_timeout(100)
                times.append(time.perf_counter() - t0 if done else float("nan"))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
        os.unlink(fh.name)
    return times[1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--structures", type=int, default=2000)
    ap.add_argument("--environments", type=int, default=20000)
    ap.add_argument("--browser", action="store_true", help="also time the render in headless Chromium")
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
        row = {"case": label, "properties": len(ds["properties"]), "build": _stats(t_build),
               "hash": _stats(t_hash), "json": _stats(t_json), "json_MB": round(size / 1e6, 2),
               "load": os.getloadavg()[0]}
        if args.browser:
            row["browser_render"] = _stats(_browser_times(ds, args.repeats))
            row["load_after"] = os.getloadavg()[0]
        print(json.dumps(row))


if __name__ == "__main__":
    if os.environ.get("WKVIZ_BENCH_DATASET"):
        _serve_dataset()
    else:
        main()
