"""The app's computations: cost estimates, background jobs (kernels, fits, kernel tiles, sparse models) with
their progress bar, and the large-data options with the size limit that switches them on.

Jobs run in worker threads (:class:`wkviz.cache.BackgroundJob`); the functions they run make no streamlit
calls. The page that started a job keeps it in the session and polls it (:func:`poll_job`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from wkviz import Hypers
from wkviz import cache
from wkviz.errors import InputError
from wkviz.evaluation import forces as forces_eval

from .datasets import Dataset
from .state import MEMORY_BUDGET, kernel_key
from .widgets import format_bytes, format_seconds, show_job_failure


# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------
def start_kernel_job(ds: Dataset, hypers: Hypers, request: dict) -> cache.BackgroundJob:
    """Start computing kernels in a worker thread; the page polls the job stored in the session."""
    from wkviz.engine.kernels import WignerKernel

    key = kernel_key(ds, hypers, request)
    frames = ds.frames
    engine = WignerKernel(hypers, memory_budget=MEMORY_BUDGET)

    def work(progress, cancel):
        return engine.compute(frames, atomic=request["atomic"], tensor_rank=request["tensor_rank"],
                              progress=progress, cancel=cancel)

    job = cache.BackgroundJob(work, label=f"kernels ν≤{hypers.nu_max} on {ds.n} structures", key=key).start()
    st.session_state["wk.kernel_job"] = job
    st.session_state["wk.kernel_job_key"] = key
    return job


def estimate(ds: Dataset, hypers: Hypers, request: dict) -> dict:
    """:meth:`wkviz.engine.kernels.WignerKernel.estimate` of a request with the page's memory budget: pairs,
    seconds (from a micro-run on these structures), memory and disk bytes, whether it fits and the sentence if
    not. Cached by the data set's content hash and the request, so reruns repeat no micro-run."""
    return _estimate(ds.digest, hypers.to_json(), request["tensor_rank"], request["atomic"], ds.frames)


@st.cache_data(show_spinner="Estimating time and memory (a short timed run on a few of these structures)…",
               max_entries=64)
def _estimate(digest: str, hypers_json: str, tensor_rank, atomic: bool, _frames):
    from wkviz.engine.kernels import WignerKernel

    return WignerKernel(Hypers.from_json(hypers_json), memory_budget=MEMORY_BUDGET).estimate(
        _frames, atomic=atomic, tensor_rank=tensor_rank)


def poll_job(job: cache.BackgroundJob, *, cancel_key: str, what: str) -> None:
    """Progress bar with ETA and a cancel button until ``job`` ends; then rerun so the page shows the result.

    A click on "Cancel" reruns the script (interrupting this loop); the next run sees the button pressed and
    sets the job's cancel flag, which the engine checks between tiles.
    """
    if st.session_state.get(cancel_key):
        job.cancel()
    cols = st.columns([5, 1])
    with cols[1]:
        st.button("Cancel", key=cancel_key, icon=":material/cancel:", disabled=job.cancel_requested,
                  width="stretch")
    with cols[0]:
        bar = st.progress(0.0, text=f"{what}: starting…")
    while not job.done:
        s = job.state()
        if s.message:
            text = f"{what}: {s.message}"
        elif job.cancel_requested:
            text = f"{what}: cancelling…"
        else:
            text = (f"{what}: {100 * s.fraction:.0f}% · elapsed {format_seconds(s.elapsed)}"
                    f" · about {format_seconds(s.eta_seconds)} left")
        bar.progress(min(max(s.fraction, 0.0), 1.0), text=text)
        time.sleep(0.25)
    st.rerun()


def settle_job(job: cache.BackgroundJob, *, result_key: str, cancelled: str, show_failure: bool | None = None) -> bool:
    """What a page does once ``job`` has ended: a finished job's ``meta`` is stored under ``result_key`` (True the
    first time, so the caller can add to it), a failed one's error is shown, a cancelled one gets ``cancelled``
    as a warning.

    ``show_failure`` overrides when the error is shown (default: while the job's result is not the stored one).
    """
    ss = st.session_state
    new = (ss.get(result_key) or {}).get("key") != job.meta["key"]
    status = job.state().status
    if status == "done" and new:
        ss[result_key] = dict(job.meta)
        return True
    if status == "failed" and (new if show_failure is None else show_failure):
        show_job_failure(job)
    elif status == "cancelled":
        st.warning(cancelled, icon=":material/cancel:")
    return False


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------
WEIGHT_MODES = {"free per ν (positive)": "free", "kernel exponential c_ν = C·α^ν/ν!": "exponential"}


SELECTIONS = {"GP evidence": "evidence", "k-fold cross-validation": "cv"}


#: Splits of the model comparison by default: 5 when the data set has at most this many structures (the fits are
#: then cheap), else 1 (one split, as before).
SMALL_FOR_SPLITS = 2000


def default_splits(n_structures: int) -> int:
    """Splits the Models page proposes: 5 on a small data set (≤ :data:`SMALL_FOR_SPLITS` structures), else 1."""
    return 5 if int(n_structures) <= SMALL_FOR_SPLITS else 1


def fit_models(kres, frames, target_key: str, train, test, *, names, weights: str, selection: str, folds: int,
               intensive: bool, splits: int = 1, seed: int = 0, progress=None, cancel=None) -> dict:
    """Fit each named model on ``train`` (hyperparameters chosen on train only, by the GP evidence or k-fold CV as
    ``selection`` says) and predict ``test`` with :func:`wkviz.models.fit_predict`, GP standard deviations
    included; with ``splits`` > 1 also fit them on ``splits − 1`` further random splits of the same sizes
    (:func:`wkviz.evaluation.compare.compare_splits`, seed ``seed``) for the mean ± standard error and the paired
    differences (:class:`wkviz.evaluation.compare.Comparison`; split 0 is ``train``/``test``).

    Runs in a worker thread (no streamlit calls). Returns a dict with the test truth, the composition baseline of
    the test entries (fitted on ``train``), the comparison, and per model the predictions, predictive standard
    deviations (when the model gives them), metrics and weights.
    """
    from wkviz import evaluation, models
    from wkviz.evaluation import compare as wk_compare
    from wkviz.runtime import check_cancel

    train = np.asarray(train)
    test = np.asarray(test)
    splits = max(int(splits), 1)
    kernels = models.KernelSet.from_result(kres)
    target = models.TargetData.from_frames(frames, target_key)
    tr_k, te_k, self_k = kernels.subset(train, train), kernels.subset(test, train), kernels.subset(test, test)
    tr_d, te_d = target.subset(train), target.subset(test)
    baseline = evaluation.composition_baseline(tr_d, te_d, intensive=intensive)
    out = {"kind": target.kind, "unit": target.unit, "y_true": te_d.values, "models": {}, "order": list(names),
           "baseline": baseline, "n_atoms": te_d.n_atoms}
    rows = []
    start = time.perf_counter()
    for i, name in enumerate(names):
        check_cancel(cancel)
        t0 = time.perf_counter()
        pred, std, est = models.fit_predict(tr_k, tr_d, te_k, te_d, model=name, intensive=intensive, cancel=cancel,
                                            return_std=True, test_self_kernels=self_k, weights=weights,
                                            selection=selection, n_folds=int(folds))
        core = est.model_
        m = evaluation.score_predictions(tr_d, te_d, pred, intensive=intensive)
        seconds = time.perf_counter() - t0
        rows.append(wk_compare.score_row(name, 0, tr_d, te_d, pred, est, intensive=intensive, seconds=seconds))
        out["models"][name] = {
            "pred": np.asarray(pred), "std": None if std is None else np.asarray(std), "metrics": m.as_dict(),
            "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
            "cv_mae": float(core.cv_mae_), "cv_rmse": float(core.cv_rmse_), "seconds": seconds,
            "noise_std": float(getattr(core, "noise_std_", float("nan"))),
        }
        if progress is not None:
            frac = (i + 1) / (len(names) * splits)
            elapsed = time.perf_counter() - start
            progress(frac, elapsed * (1 - frac) / frac)
    comparison = wk_compare.Comparison(rows=rows, models=list(names), unit=target.unit, key=target_key)
    if splits > 1:
        more = wk_compare.compare_splits(target, len(train), len(test), splits - 1, seed)
        first = 1.0 / splits

        def report(fraction, eta):
            if progress is not None:
                frac = first + (1 - first) * fraction
                elapsed = time.perf_counter() - start
                progress(frac, elapsed * (1 - frac) / frac)

        extra = wk_compare.compare(kernels, target, more, models=names, intensive=intensive,
                                   split_ids=range(1, splits), progress=report, cancel=cancel, weights=weights,
                                   selection=selection, n_folds=int(folds))
        comparison.rows.extend(extra.rows)
    out["comparison"] = comparison
    return out


def start_fit_job(ds: Dataset, kres, kkey: str, target_key: str, train, test, *, names, weights: str,
                  selection: str, folds: int, intensive: bool, splits: int = 1,
                  seed: int = 0) -> tuple[cache.BackgroundJob, str]:
    key = "fit:" + cache.hash_key(kkey, ds.digest, target_key, np.asarray(train), np.asarray(test), list(names),
                                  weights, selection, int(folds), bool(intensive), int(splits), int(seed))
    frames = ds.frames

    def work(progress, cancel):
        return fit_models(kres, frames, target_key, train, test, names=names, weights=weights, selection=selection,
                          folds=folds, intensive=intensive, splits=splits, seed=seed, progress=progress,
                          cancel=cancel)

    meta = {"key": key, "dataset": ds.digest, "kernel_key": kkey, "target": target_key,
            "train": np.asarray(train), "test": np.asarray(test), "names": list(names), "weights": weights,
            "selection": selection, "folds": int(folds), "intensive": bool(intensive), "splits": int(splits),
            "seed": int(seed)}
    job = cache.BackgroundJob(work, label=f"fitting {len(names)} model{'s' if len(names) > 1 else ''}"
                                          + (f" on {int(splits)} splits" if int(splits) > 1 else ""), key=key,
                              use_engine_lock=False, meta=meta).start()
    st.session_state["wk.fit_job"] = job
    st.session_state["wk.fit_job_key"] = key
    return job, key


# --------------------------------------------------------------------------------------------------------------
# Large data sets: kernel tiles into an on-disk store, sparse models
# --------------------------------------------------------------------------------------------------------------
#: A data set counts as *large* when its kernel request (``WignerKernel.estimate``) is estimated to take longer
#: than ``LARGE_SECONDS`` or to produce more than ``LARGE_BYTES`` of kernels (a quarter of the memory budget:
#: the kernels are not the only thing a session holds). Above either limit the Kernels page also offers tiles on
#: Dask into an on-disk store, and the Models page the sparse model. The environment variables
#: ``WKVIZ_LARGE_SECONDS`` and ``WKVIZ_LARGE_BYTES`` override both, read on every run (the tests lower them to
#: 0 to reach these options on a small data set; a server can raise them).
LARGE_SECONDS = 120.0


LARGE_BYTES = MEMORY_BUDGET // 4


#: Worker processes (one thread each) of the LocalCluster a tile job starts; also fixes the tile size of new
#: stores, so a store has the same layout whether its tiles ran on the cluster or in this process.
TILE_WORKERS = 2


def large_limits() -> tuple[float, float]:
    """(seconds, bytes) above which a data set counts as large (:data:`LARGE_SECONDS`, :data:`LARGE_BYTES`,
    or their environment overrides)."""

    def read(name: str, default: float) -> float:
        text = os.environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:  # a typo in a server's environment must not take every page down
            return default
        return value if value >= 0 else default

    return read("WKVIZ_LARGE_SECONDS", LARGE_SECONDS), read("WKVIZ_LARGE_BYTES", float(LARGE_BYTES))


def is_large(est: dict | None) -> bool:
    """Whether an estimate (:func:`estimate`) is above the large-data limits."""
    if est is None:
        return False
    seconds, nbytes = large_limits()
    return float(est["seconds"]) > seconds or float(est["output_bytes"]) > nbytes


def large_rule() -> str:
    """The large-data limits in words, for the pages."""
    seconds, nbytes = large_limits()
    return f"an estimated time above {format_seconds(seconds)} or kernels above {format_bytes(nbytes)}"


def store_root() -> Path:
    """Per-user directory of kernel stores: ``$XDG_CACHE_HOME/wkviz/stores`` (``~/.cache/wkviz/stores``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wkviz" / "stores"


@st.cache_data(show_spinner=False, max_entries=64)
def _store_key(digest: str, hypers_json: str, tensor_rank, _frames) -> str:
    from wkviz.scale.store import kernel_kinds, store_key

    return store_key(_frames, None, Hypers.from_json(hypers_json), kernel_kinds(tensor_rank))["key"]


def default_store_path(ds: Dataset, hypers: Hypers, request: dict) -> Path:
    """Where the store of this request goes unless the user names another directory: under :func:`store_root`,
    named by the content hash of the structures, hyperparameters and kernel kinds (the store's own key)."""
    return store_root() / _store_key(ds.digest, hypers.to_json(), request["tensor_rank"], ds.frames)[:16]


def store_path(ds: Dataset, hypers: Hypers, request: dict) -> Path:
    """The store directory typed on the Kernels page (``kernels.store_path``), or the default one."""
    typed = str(st.session_state.get("kernels.store_path") or "").strip()
    return Path(typed).expanduser() if typed else default_store_path(ds, hypers, request)


@dataclass(frozen=True)
class StoreStatus:
    """What a store directory holds for the current request."""

    path: str
    exists: bool
    tiles_done: int
    tiles_total: int
    tile_size: int

    @property
    def complete(self) -> bool:
        return self.exists and self.tiles_done == self.tiles_total


@st.cache_data(show_spinner=False, max_entries=32)
def _store_status(path: str, mtime_ns: int, digest: str, hypers_json: str, tensor_rank, _frames) -> StoreStatus:
    from wkviz.scale.store import KernelStore

    store = KernelStore.open(path, _frames, hypers=Hypers.from_json(hypers_json), tensor_rank=tensor_rank)
    return StoreStatus(str(path), True, store.n_done, store.n_tiles, store.tile_size)


def store_status(path, ds: Dataset, hypers: Hypers, request: dict) -> StoreStatus:
    """Finished and total tiles of the store at ``path`` for this request, creating nothing.

    Raises
    ------
    WkvizError
        The directory holds the store of another request (other structures, hyperparameters or kernel kinds)
        or something that is not a kernel store: the store's own message, naming both content hashes.
    """
    import math

    from wkviz.scale.distributed import choose_tile_size

    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file; a kernel store is a directory, give a new or empty directory")
        if path.is_dir() and any(path.iterdir()):
            # the manifest is replaced atomically inside the directory when tiles land, which changes its mtime
            return _store_status(str(path), path.stat().st_mtime_ns, ds.digest, hypers.to_json(),
                                 request["tensor_rank"], ds.frames)
    except OSError as exc:
        raise InputError(f"cannot read the store directory {path} ({exc.strerror or exc}); choose a directory you "
                         "can read and write") from None
    t = choose_tile_size(ds.n, None, TILE_WORKERS)
    nb = math.ceil(ds.n / t)
    return StoreStatus(str(path), False, 0, nb * (nb + 1) // 2, t)


def compute_store_tiles(frames, hypers: Hypers, request: dict, path, *, n_workers: int = TILE_WORKERS,
                        progress=None, cancel=None):
    """The Kernels page's tiled computation (runs in a worker thread; no streamlit calls):
    :func:`wkviz.scale.distributed.compute_store` with the page's memory budget, for a request without atom-level
    kernels. Returns its ``(result, info)``."""
    from wkviz.scale import distributed

    if request["atomic"]:
        raise InputError("atom-level kernels are not computed as tiles; untick 'per atom' (per-atom "
                         "targets need the in-memory computation on fewer structures)")
    return distributed.compute_store(frames, hypers, path, tensor_rank=request["tensor_rank"], n_workers=n_workers,
                                     memory_budget=MEMORY_BUDGET, progress=progress, cancel=cancel)


def start_tile_job(ds: Dataset, hypers: Hypers, request: dict, path) -> cache.BackgroundJob:
    """Start :func:`compute_store_tiles` in a worker thread as the session's kernel job (same progress, ETA and
    cancel as the in-memory computation); the kernel is stored under the request's key when it fits."""
    key = kernel_key(ds, hypers, request)
    frames = ds.frames
    path = Path(path)

    def work(progress, cancel):
        result, info = compute_store_tiles(frames, hypers, request, path, progress=progress, cancel=cancel)
        if result is not None:
            cache.RESULTS.put(key, result)
        return info

    job = cache.BackgroundJob(work, label=f"kernel tiles ν≤{hypers.nu_max} on {ds.n} structures",
                              meta={"tiles": True, "path": str(path), "key": key}).start()
    st.session_state["wk.kernel_job"] = job
    st.session_state["wk.kernel_job_key"] = key
    return job


SPARSE_ACTIVE = {"structures": "structures", "environments": "atomic environments"}


def sparse_model_name(n_active: int, active_kind: str) -> str:
    return f"sparse M={int(n_active)} {active_kind}"


@st.cache_data(show_spinner=False, max_entries=64)
def _sparse_estimate(digest: str, hypers_json: str, train, test, n_active: int, active_kind: str, _frames) -> dict:
    from wkviz.engine.kernels import WignerKernel
    from wkviz.models import sparse

    hypers = Hypers.from_json(hypers_json)
    return sparse.sparse_estimate([_frames[i] for i in train], [_frames[i] for i in test], n_active, active_kind,
                                  hypers, engine=WignerKernel(hypers, memory_budget=MEMORY_BUDGET))


def sparse_estimate(ds: Dataset, hypers: Hypers, train, test, n_active: int, active_kind: str) -> dict:
    """Cost of the sparse model's kernels (training × M and test × M) against the exact N × N kernel
    (:func:`wkviz.models.sparse.sparse_estimate`, cached per data set and request)."""
    return _sparse_estimate(ds.digest, hypers.to_json(), np.asarray(train), np.asarray(test), int(n_active),
                            active_kind, ds.frames)


def fit_sparse_model(frames, target_key: str, train, test, *, hypers: Hypers, n_active: int, active_kind: str,
                     weights: str, folds: int, intensive: bool, K_diag=None, progress=None, cancel=None) -> dict:
    """Run :func:`wkviz.models.sparse.fit_sparse` (M active points by FPS, their kernels, the sparse fit, the test
    predictions) with the app's memory budget and score it.

    Runs in a worker thread (no streamlit calls). Returns a dict shaped like :func:`fit_models`'s, with one
    model, so the page can show it next to the exact ones.
    """
    from wkviz import evaluation
    from wkviz.engine.kernels import WignerKernel
    from wkviz.models import sparse

    fit = sparse.fit_sparse(frames, target_key, train, test, hypers=hypers, n_active=n_active,
                            active_kind=active_kind, weights=weights, n_folds=int(folds), intensive=intensive,
                            K_diag=K_diag, engine=WignerKernel(hypers, memory_budget=MEMORY_BUDGET),
                            progress=progress, cancel=cancel)
    core = fit.estimator.model_
    name = sparse_model_name(n_active, active_kind)
    m = evaluation.metrics(fit.test.values, fit.pred, unit=fit.test.unit)
    return {"kind": "scalar", "unit": fit.test.unit, "y_true": fit.test.values, "order": [name], "active": fit.active,
            "kernel_seconds": fit.kernel_seconds,
            "models": {name: {
                "pred": fit.pred, "std": fit.std, "metrics": m.as_dict(),
                "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
                "cv_mae": float(core.cv_mae_), "cv_rmse": float(core.cv_rmse_),
                "seconds": fit.seconds, "noise_std": float(core.noise_std_)}}}


def start_sparse_job(ds: Dataset, kres, target_key: str, train, test, *, hypers: Hypers, n_active: int,
                     active_kind: str, weights: str, folds: int, intensive: bool) -> cache.BackgroundJob:
    """Start :func:`fit_sparse_model` as the session's sparse job. With the exact kernels at hand (``kres``) the
    test self-kernels come from them and the predictions get GP error bars."""
    train, test = np.asarray(train), np.asarray(test)
    K_diag = None
    if kres is not None:
        from wkviz.models import KernelSet

        K_diag = KernelSet(K=kres.K).subset(test, test).diagonal("scalar")
    key = "sparse:" + cache.hash_key(ds.digest, hypers, target_key, train, test, int(n_active), active_kind, weights,
                                     int(folds), bool(intensive), K_diag is not None)
    frames = ds.frames

    def work(progress, cancel):
        return fit_sparse_model(frames, target_key, train, test, hypers=hypers, n_active=n_active,
                                active_kind=active_kind, weights=weights, folds=folds, intensive=intensive,
                                K_diag=K_diag, progress=progress, cancel=cancel)

    meta = {"key": key, "dataset": ds.digest, "target": target_key, "train": train, "test": test, "hypers": hypers,
            "n_active": int(n_active), "active_kind": active_kind, "weights": weights, "folds": int(folds),
            "intensive": bool(intensive), "name": sparse_model_name(n_active, active_kind)}
    job = cache.BackgroundJob(work, label=f"sparse model on {int(n_active)} active {SPARSE_ACTIVE[active_kind]}",
                              key=key, meta=meta).start()
    st.session_state["wk.sparse_job"] = job
    return job


def sparse_python(meta: dict, train_name: str, test_name: str) -> str:
    """Python that reproduces a sparse fit of the Models page from the downloaded train and test files."""
    select = "select_active" if meta["active_kind"] == "structures" else "select_active_environments"
    n_act = ("[len(train[i]) for i in active]" if meta["active_kind"] == "structures" else "[1] * len(active)")
    return "\n".join([
        "from ase.io import read",
        "from wkviz import Hypers, evaluation, models",
        "from wkviz.models import sparse",
        "",
        f"h = Hypers.from_json({meta['hypers'].to_json()!r})",
        f"train, test = read({train_name!r}, ':'), read({test_name!r}, ':')",
        f"active = sparse.{select}(train, {meta['n_active']}, h, seed=0)",
        f"k = sparse.sparse_kernels(train, active, h, kind={meta['active_kind']!r}, frames_test=test)",
        f"tr = models.TargetData.from_frames(train, {meta['target']!r})",
        f"te = models.TargetData.from_frames(test, {meta['target']!r}, species=tr.species)",
        f"model = sparse.SparseScalarRegressor(intensive={meta['intensive']}, weights={meta['weights']!r}, "
        f"n_folds={meta['folds']})",
        "model.fit(k['K_NM'], k['K_MM'], tr.values, counts=tr.counts, species=tr.species, n_atoms=tr.n_atoms,",
        f"          n_atoms_active={n_act})",
        "pred = model.predict(k['K_TM'], counts=te.counts, species=te.species, n_atoms=te.n_atoms)",
        "print(evaluation.metrics(te.values, pred).as_dict())",
    ])


# --------------------------------------------------------------------------------------------------------------
# Energy-and-force models (data with forces)
# --------------------------------------------------------------------------------------------------------------
def start_force_job(ds: Dataset, train, test, *, hypers: Hypers, n_active: int, hypers_label: str):
    """Start :func:`wkviz.evaluation.forces.fit_force_model` as the session's energy-and-force job
    (``wk.force_job``); the result is stored in :data:`wkviz.cache.RESULTS` under the content hash of the data, split,
    hyperparameters and M."""
    train, test = np.asarray(train), np.asarray(test)
    key = "forces:" + cache.hash_key(ds.digest, hypers, train, test, int(n_active))
    frames = ds.frames

    def work(progress, cancel):
        return forces_eval.fit_force_model(frames, train, test, hypers=hypers, n_active=n_active, progress=progress,
                               cancel=cancel)

    meta = {"key": key, "dataset": ds.digest, "train": train, "test": test, "hypers": hypers,
            "n_active": int(n_active), "hypers_label": hypers_label}
    job = cache.BackgroundJob(work, label=f"energy + force model on {len(train)} structures, "
                                          f"{int(n_active)} active environments", key=key, meta=meta).start()
    st.session_state["wk.force_job"] = job
    return job


def start_md_job(start, *, model=None, model_key: str | None = None, train=None,
                 n_active: int = forces_eval.MD_ACTIVE, steps: int, timestep_fs: float, temperature_K: float,
                 seed: int = 0) -> cache.BackgroundJob:
    """Start :func:`wkviz.evaluation.forces.md_comparison` as the session's MD job (``wk.md_job``), cached by the
    content hash of the start structure, the model (its key) or training structures, and the run settings."""
    train_digest = None if train is None else cache.hash_structures(train)
    key = "md:" + cache.hash_key(cache.hash_structures([start]), model_key or "", train_digest or "", int(n_active),
                                 int(steps), float(timestep_fs), float(temperature_K), int(seed))

    def work(progress, cancel):
        return forces_eval.md_comparison(start, model=model, train=train, n_active=n_active, steps=steps,
                             timestep_fs=timestep_fs, temperature_K=temperature_K, seed=seed, progress=progress,
                             cancel=cancel)

    what = "fitting the gold potential, then " if model is None else ""
    job = cache.BackgroundJob(work, label=f"{what}{int(steps)} MD steps with the learned potential and EMT", key=key,
                              meta={"key": key}).start()
    st.session_state["wk.md_job"] = job
    return job
