"""Sparse runs of ``fit`` and ``learning-curve`` (``--active-environments M``, DESIGN.md §3b).

The model is the projected-process model of :mod:`wkviz.models.sparse` on M active environments chosen by
per-element farthest-point sampling on the training structures (``--active-seed``): kernels cost (training + test
atoms) × M instead of N², and the fit O(N M² + M³) (GP evidence from precomputed M × M products). Both
sub-commands keep their output contracts; the extra lines (phases, ETA, memory) go to stderr.
"""

from __future__ import annotations

import csv
import resource
import time

import numpy as np

from ..errors import InputError
from ..files import atomic_write
from .common import FitProgress, note

__all__ = ["add_sparse_flags", "sparse_memory_bytes", "check_memory", "peak_rss_mib", "sparse_fit_predict",
           "run_sparse_learning_curve"]


def add_sparse_flags(parser) -> None:
    """``--active-environments M`` and ``--active-seed S`` (sparse model on FPS environments)."""
    g = parser.add_argument_group("sparse model (large training sets)")
    g.add_argument("--active-environments", type=int, default=None, metavar="M",
                   help="fit the sparse (projected-process) model on M active atomic environments chosen by "
                        "farthest-point sampling on the training set: kernels cost atoms × M instead of "
                        "structures², the fit O(N M² + M³); structure scalar targets only")
    g.add_argument("--active-seed", type=int, default=0, metavar="S",
                   help="seed of the first FPS environment of every element (default 0)")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
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


def _select_and_kernels(train_frames, test_frames, n_active, hypers, seed, memory_budget):
    from ..engine.kernels import WignerKernel
    from ..models.sparse import select_active_environments, sparse_kernels

    n_env = sum(len(a) for a in train_frames)
    if not 1 <= n_active <= n_env:
        raise InputError(f"--active-environments must be between 1 and the {n_env} training environments, "
                         f"got {n_active}")
    check_memory(sparse_memory_bytes(len(train_frames), len(test_frames), n_active, hypers.nu_max + 1,
                                     memory_budget), f"a sparse model on {n_active} environments")
    t = time.perf_counter()
    note(f"phase 1/3: choosing {n_active} active environments by FPS among {n_env} training environments")
    active = select_active_environments(train_frames, n_active, hypers, seed=seed)
    note(f"  done in {time.perf_counter() - t:.1f} s")
    engine = WignerKernel(hypers, memory_budget=int(memory_budget))
    est = engine.estimate(train_frames + test_frames, train_frames, centers_B=active)
    note(f"phase 2/3: kernels of {len(train_frames)} training and {len(test_frames)} test structures against "
         f"{n_active} environments (about {est['seconds']:.0f} s)")
    kern = sparse_kernels(train_frames, active, hypers, kind="environments", frames_test=test_frames, engine=engine,
                          progress=_Eta("kernels structures×active"))
    note(f"  kernels in {kern['seconds']:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    return active, kern


def sparse_fit_predict(args, train_frames, test_frames, train, test, hypers):
    """Select, compute the kernels, fit and predict; returns ``(pred, estimator)``."""
    from ..models import model_nus
    from ..models.sparse import SparseScalarRegressor

    if train.kind != "scalar":
        raise InputError(f"--active-environments fits structure scalars only; '{args.target}' is a {train.kind} "
                         "target: drop --active-environments (exact model)")
    active, kern = _select_and_kernels(train_frames, test_frames, int(args.active_environments), hypers,
                                       args.active_seed, args.memory_budget * 2**30)
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


def run_sparse_learning_curve(args, frames, target, sizes, splits, hypers):
    """The sparse learning curve: per repeat, the active set is chosen by FPS on the largest training set and
    its kernels (all structures of the repeat × M) computed once; every size fits on a prefix of its rows.
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
                                           args.active_seed, args.memory_budget * 2**30)
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
