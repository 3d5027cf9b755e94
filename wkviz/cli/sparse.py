"""Sparse runs of ``fit`` and ``learning-curve`` (``--active-environments M``, DESIGN.md §3b).

The model is the projected-process model of :mod:`wkviz.models.sparse` on M active environments chosen by
per-element farthest-point sampling on the training structures (``--active-seed``): kernels cost (training + test
atoms) × M instead of N², and the fit O(N M² + M³) (GP evidence from precomputed M × M products). Both
sub-commands keep their output contracts; the extra lines (phases, ETA, memory) go to stderr.

With ``--store PATH`` (and/or ``--scheduler``, the flags of :func:`wkviz.cli.distributed.add_distributed_flags`)
the (training + test structures) × M kernel is computed as tiles into the resumable kernel store
(:func:`wkviz.scale.distributed.compute_tiles` with ``centers_B``), in this process or on Dask: a killed run
resumes where it stopped and a finished store is reused by the next run of the same request (the FPS active set
is deterministic, so the request is the same). K_MM, the atom kernel among the M active environments, is
computed apart with centres restricted on both sides (M × M pairs, ``WignerKernel.compute(centers_A=)``).
``learning-curve`` keeps one store per repeat, ``PATH/repeat-<r>``.
"""

from __future__ import annotations

import csv
import resource
import time

import numpy as np

from ..errors import InputError
from ..files import atomic_write
from .common import FitProgress, format_seconds, note
from .distributed import tiles_where

__all__ = ["add_sparse_flags", "sparse_memory_bytes", "check_memory", "peak_rss_mib", "sparse_fit_predict",
           "repeat_store", "run_sparse_learning_curve"]


def add_sparse_flags(parser) -> None:
    """``--active-environments M`` and ``--active-seed S`` (sparse model on FPS environments)."""
    from ..models.forces import DEFAULT_ACTIVE

    g = parser.add_argument_group("sparse model (large training sets)")
    g.add_argument("--active-environments", type=int, default=None, metavar="M",
                   help="fit the sparse (projected-process) model on M active atomic environments chosen by "
                        "farthest-point sampling on the training set: kernels cost atoms × M instead of "
                        "structures², the fit O(N M² + M³); structure scalar targets only; with --forces the "
                        f"energy+force model's active environments (default there: min({DEFAULT_ACTIVE}, training "
                        "atoms))")
    g.add_argument("--active-seed", type=int, default=0, metavar="S",
                   help="seed of the first FPS environment of every element (default 0)")
    g.add_argument("--fps-pool", type=int, default=None, metavar="N",
                   help="choose the active environments by FPS among those of random training structures "
                        "holding about N environments (every element keeps its share) instead of among all: "
                        "FPS costs environments × M, hours on full QM9 (default: all environments)")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux's VmHWM where there is one: ``ru_maxrss`` also keeps the peak of the image this process was exec'd from
    (a large parent that started it, such as a test runner or a notebook)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sparse_memory_bytes(n_train: int, n_test: int, n_active: int, n_kernels: int, engine_budget: float) -> int:
    """What a sparse run holds at its peak: K_NM, K_TM and K_MM, the evidence's M × M products and the engine's
    working memory (its budget)."""
    from ..models.sparse_evidence import gram_bytes

    kernels = 8 * n_kernels * n_active * (int(n_train) + int(n_test) + int(n_active))
    return int(kernels + gram_bytes(n_active, n_kernels) + engine_budget)


def _available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(need: int, what: str) -> None:
    """Refuse a run whose memory estimate does not fit in the memory available now (before any kernel)."""
    avail = _available_bytes()
    gib = 2.0**30
    if avail is not None and need > 0.9 * avail:
        raise InputError(f"{what} needs about {need / gib:.1f} GiB of memory but {avail / gib:.1f} GiB are "
                         "available; use fewer --active-environments or fewer training structures")
    note(f"memory estimate: {need / gib:.2f} GiB" + ("" if avail is None else f" of {avail / gib:.1f} GiB available"))


class _Eta:
    """A progress callback that adds an ETA from the elapsed time (the kernels report none)."""

    def __init__(self, label):
        self.line = FitProgress(label)
        self.start = time.perf_counter()
        self.done = False

    def __call__(self, fraction, eta=None):
        if self.done:
            return
        self.done = fraction >= 1.0
        el = time.perf_counter() - self.start
        self.line(fraction, el * (1 - fraction) / fraction if fraction > 0.02 else None)


def _tiled_kernels(train_frames, test_frames, active, engine, tiles):
    """K_NM and K_TM as tiles of (training + test structures) × active environments in the store of ``tiles``
    (:func:`wkviz.cli.distributed.tile_options`), K_MM apart; the dict of
    :func:`wkviz.models.sparse.sparse_kernels`."""
    from ..scale.distributed import IN_PROCESS, compute_tiles

    t0 = time.perf_counter()
    n, m, nu1 = len(train_frames), len(active), engine.hypers.nu_max + 1
    path = tiles["store"]
    # the sparse memory check has admitted the kernels; the engine of every tile keeps the --memory-budget
    whole = 8 * nu1 * (n + len(test_frames)) * m
    run = compute_tiles(list(train_frames) + list(test_frames), list(train_frames), hypers=engine.hypers,
                        store=path, scheduler=tiles["scheduler"] or IN_PROCESS, n_workers=tiles["workers"],
                        tile_size=tiles["tile_size"], memory_budget=max(whole, engine.memory_budget),
                        worker_memory_budget=engine.memory_budget, assemble=path is None,
                        progress=FitProgress("kernels structures×active (tiles)"), note=lambda line: note("  " + line),
                        centers_B=active)
    store = run.store
    layout = "" if store is None else (f" (store {path}; {store.tile_size} structures × {store.tile_size_B} "
                                       "environments per tile)")
    note(f"  tiles: {run.tiles_computed} computed, {run.tiles_reused} reused of {run.tiles_total}{layout} in "
         f"{run.seconds:.1f} s")
    if store is not None:  # the training and test rows apart: one copy of each, as the in-memory route holds
        K_NM, K_TM = store.read(rows=np.arange(n)), store.read(rows=np.arange(n, store.n_A))
    else:  # a temporary store (--scheduler without --store), read back whole by compute_tiles
        K_NM, K_TM = np.ascontiguousarray(run.result.K[:, :n]), np.ascontiguousarray(run.result.K[:, n:])
    t = time.perf_counter()
    # The atom kernel among the active environments, with both sides restricted to them: M × M pairs
    # (sparse_kernels takes its rows from the atom kernels of the training structures, which tiles of structure
    # sums do not keep). With no centre weight on either side K is that atom kernel itself. Columns in blocks
    # whose output takes at most half the engine's budget, as sparse_kernels sizes its calls.
    K_MM = np.empty((nu1, m, m))
    step = max(1, int(engine.memory_budget // 2 // (8 * nu1 * m)))
    for s in range(0, m, step):
        K_MM[:, :, s:s + step] = engine.compute(train_frames, train_frames, centers_A=active,
                                                centers_B=active[s:s + step]).K
    note(f"  active × active kernel ({m} × {m}) in {format_seconds(time.perf_counter() - t)}")
    return {"K_NM": K_NM, "K_MM": K_MM, "K_TM": K_TM, "seconds": time.perf_counter() - t0}


def _select_and_kernels(train_frames, test_frames, n_active, hypers, seed, memory_budget, tiles=None, pool=None):
    from ..engine.kernels import WignerKernel
    from ..models.sparse import select_active_environments, sparse_kernels

    n_env = sum(len(a) for a in train_frames)
    if not 1 <= n_active <= n_env:
        raise InputError(f"--active-environments must be between 1 and the {n_env} training environments, "
                         f"got {n_active}")
    check_memory(sparse_memory_bytes(len(train_frames), len(test_frames), n_active, hypers.nu_max + 1,
                                     memory_budget), f"a sparse model on {n_active} environments")
    t = time.perf_counter()
    among = f"{n_env} training environments" if pool is None or pool >= n_env else \
        f"a pool of about {pool} of the {n_env} training environments"
    note(f"phase 1/3: choosing {n_active} active environments by FPS among {among}")
    active = select_active_environments(train_frames, n_active, hypers, seed=seed, pool=pool)
    note(f"  done in {time.perf_counter() - t:.1f} s")
    engine = WignerKernel(hypers, memory_budget=int(memory_budget))
    est = engine.estimate(train_frames + test_frames, train_frames, centers_B=active)
    how = "" if tiles is None else f" as tiles {tiles_where(tiles['scheduler'])}"
    note(f"phase 2/3: kernels of {len(train_frames)} training and {len(test_frames)} test structures against "
         f"{n_active} environments{how} (about {est['seconds']:.0f} s)")
    if tiles is None:
        kern = sparse_kernels(train_frames, active, hypers, kind="environments", frames_test=test_frames,
                              engine=engine, progress=_Eta("kernels structures×active"))
    else:
        kern = _tiled_kernels(train_frames, test_frames, active, engine, tiles)
    note(f"  kernels in {kern['seconds']:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    return active, kern


def sparse_fit_predict(args, train_frames, test_frames, train, test, hypers, tiles=None):
    """Select, compute the kernels (as tiles into a store with ``tiles``, :func:`wkviz.cli.distributed.tile_options`),
    fit and predict; returns ``(pred, estimator)``."""
    from ..models import model_nus
    from ..models.sparse import SparseScalarRegressor

    if train.kind != "scalar":
        raise InputError(f"--active-environments fits structure scalars only; '{args.target}' is a {train.kind} "
                         "target: drop --active-environments (exact model)")
    active, kern = _select_and_kernels(train_frames, test_frames, int(args.active_environments), hypers,
                                       args.active_seed, args.memory_budget * 2**30, tiles, args.fps_pool)
    how = "the GP evidence" if args.selection == "evidence" else "cross-validation"
    note(f"phase 3/3: fitting the sparse model (weights and regularisation by {how} on the training set)")
    t = time.perf_counter()
    nu_max = kern["K_NM"].shape[0] - 1
    est = SparseScalarRegressor(intensive=args.intensive, nus=model_nus(args.model, nu_max), weights=args.weights,
                                selection=args.selection, n_folds=args.folds, cv_loss=args.cv_loss,
                                random_state=args.seed)
    est.fit(kern["K_NM"], kern["K_MM"], train.values, counts=train.counts, species=train.species,
            n_atoms=train.n_atoms, n_atoms_active=np.ones(len(active)), progress=_Eta("fit: M×M products"))
    pred = est.predict(kern["K_TM"], counts=test.counts, species=test.species, n_atoms=test.n_atoms)
    note(f"model fitted in {time.perf_counter() - t:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    return pred, est


def repeat_store(tiles, r):
    """The tile options of repeat ``r`` (0-based) of a sparse learning curve: its own store, ``PATH/repeat-<r+1>``
    under ``--store PATH`` (a folder of stores, one per repeat)."""
    if tiles is None or tiles["store"] is None:
        return tiles
    from pathlib import Path

    root = Path(tiles["store"])
    if (root / "manifest.json").exists():
        raise InputError(f"--store {root} is the kernel store of a single request, but learning-curve keeps one "
                         f"store per repeat inside its --store folder ({root}/repeat-1, ...); pass a new or other "
                         "folder")
    return {**tiles, "store": str(root / f"repeat-{r + 1}")}


def run_sparse_learning_curve(args, frames, target, sizes, splits, hypers, tiles=None):
    """The sparse learning curve: per repeat, the active set is chosen by FPS on the largest training set and
    its kernels (all structures of the repeat × M) computed once (as tiles into ``PATH/repeat-<r>`` with
    ``tiles``, :func:`repeat_store`); every size fits on a prefix of its rows.
    Writes the ``model,n_train,repeat,mae,rmse`` CSV (model ``sparse-mixed``); returns the rows."""
    from ..models import model_nus
    from ..models.sparse import SparseScalarRegressor

    if target.kind != "scalar":
        raise InputError(f"--active-environments fits structure scalars only; '{args.target}' is a {target.kind} "
                         "target: drop --active-environments")
    rows = []
    for r, (test_idx, order) in enumerate(splits):
        tr_frames = [frames[i] for i in order]
        te_frames = [frames[i] for i in test_idx]
        note(f"repeat {r + 1}/{len(splits)}")
        active, kern = _select_and_kernels(tr_frames, te_frames, int(args.active_environments), hypers,
                                           args.active_seed, args.memory_budget * 2**30, repeat_store(tiles, r),
                                           args.fps_pool)
        te = target.subset(test_idx)
        nu_max = kern["K_NM"].shape[0] - 1
        for n in sizes:
            tr = target.subset(order[:n])
            t = time.perf_counter()
            est = SparseScalarRegressor(intensive=args.intensive, nus=model_nus("mixed", nu_max),
                                        weights=args.weights, selection=args.selection, n_folds=args.folds,
                                        cv_loss=args.cv_loss, random_state=args.seed)
            est.fit(kern["K_NM"][:, :n], kern["K_MM"], tr.values, counts=tr.counts, species=tr.species,
                    n_atoms=tr.n_atoms, n_atoms_active=np.ones(len(active)),
                    progress=_Eta(f"fit n={n}: M×M products"))
            pred = est.predict(kern["K_TM"], counts=te.counts, species=te.species, n_atoms=te.n_atoms)
            err = np.asarray(pred, dtype=np.float64) - np.asarray(te.values, dtype=np.float64)
            rows.append({"model": "sparse-mixed", "n_train": n, "repeat": r, "mae": float(np.abs(err).mean()),
                         "rmse": float(np.sqrt(np.mean(err**2)))})
            note(f"  n={n}: MAE {rows[-1]['mae']:.6g}, fit {time.perf_counter() - t:.1f} s, peak RSS "
                 f"{peak_rss_mib():.0f} MiB")
    with atomic_write(args.out, "w", newline="") as fh:  # the learning-curve CSV contract, written atomically
        w = csv.DictWriter(fh, fieldnames=["model", "n_train", "repeat", "mae", "rmse"])
        w.writeheader()
        w.writerows(rows)
    return rows
