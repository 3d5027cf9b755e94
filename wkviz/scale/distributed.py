"""Kernel tiles as tasks on Dask (``dask.distributed``), streamed into a :class:`~wkviz.scale.store.KernelStore`.

A request A × B (or A × A) is cut into tiles of ``tile_size`` structures × ``tile_size`` structures; a
symmetric request keeps only tiles on and above the diagonal. A request of environment columns (``centers_B``, a
sparse model's N × M kernel) has tiles of ``tile_size`` structures × ``tile_size_B`` centres
(:func:`centre_tile_size`). Every tile is one task that calls the very engine
of the local path — ``WignerKernel(hypers).compute(frames_I, frames_J)``, or ``compute(frames_I)`` on the
diagonal — so a tiled kernel equals the local one up to floating-point summation order (≤ 1e-15 relative,
measured in ``tests/test_distributed.py``; ``K[0]`` is bit-identical).

Where things run. Tasks run on any ``dask.distributed`` cluster: a ``LocalCluster`` of worker *processes* with
one thread each (``scheduler="local"``; Numba, OpenMP and BLAS are pinned to one thread per worker so N workers
use N cores and not N²) or a running scheduler given by address. Workers only compute: finished tiles come back
to the client, which writes them into the store (one writer, so the store needs no shared file system and no
locking) and records them in the store's manifest. Tasks are submitted in a bounded window, so a request of
10⁵ tiles never floods the scheduler, and cancelling stops within one poll interval.

Without a cluster. ``scheduler="in-process"`` runs the missing tiles one after another in the calling process,
with the same engine call, store bookkeeping (run records, resume, cancel) and progress; it needs neither
``distributed`` nor worker processes. :func:`compute_store` is the app's whole tiled computation: open a store,
try a local cluster, fall back to this process, read the kernel back when it fits.

Damage. Before finished tiles are reused, each is checked against the digest recorded when it was written
(:meth:`KernelStore.recheck`); a damaged, missing or misplaced chunk makes its tile missing again, the run
recomputes it and ``note`` says which tiles and why. A request whose remaining tiles need more disk than is free
is refused before anything runs.

Failure. A worker that dies takes its running tile with it; the scheduler re-runs that task elsewhere (dask's
own retry), and only the returned result is written, so no tile is lost or written twice. An interrupted run
(cancel flag, exception, killed client) leaves every flushed tile in the store; running the same request on
the same store computes only the missing tiles, and a later session reuses all of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field

import numpy as np

from ..errors import Cancelled, InputError, MemoryBudgetError, WkvizError
from ..hypers import Hypers
from ..runtime import check_cancel, is_set
from .store import KernelStore, kernel_kinds, store_key
from .tilecheck import check_free_disk

__all__ = ["compute_tiles", "compute_store", "TileRun", "local_cluster", "choose_tile_size", "centre_tile_size",
           "tile_pair_counts", "WORKER_ENV", "IN_PROCESS"]

#: ``scheduler`` value of :func:`compute_tiles` that runs the tiles in the calling process, without Dask.
IN_PROCESS = "in-process"

# Environment of LocalCluster workers: one thread for every threaded runtime, since parallelism comes from
# the worker processes (Numba's parallel loops inside N processes on N cores would oversubscribe them).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}

_POLL_SECONDS = 0.2

# Held while a cluster starts with a stand-in __main__ (see _main_not_rerun): when two threads start clusters at
# once, the first to finish would otherwise put the original back while the other's workers are still starting.
_MAIN_LOCK = threading.Lock()


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError("kernel tiles on Dask need the optional package 'distributed' (pip install "
                         "\"distributed>=2024.1\" \"zarr>=3.0\", or pip install 'wkviz[scale]')") from None


def _light_frames(frames):
    """Copies holding only what the engine reads (numbers, positions, cell, pbc): cheaper to ship to workers
    than frames carrying targets and calculators."""
    from ase import Atoms

    return [Atoms(numbers=np.asarray(a.numbers), positions=np.asarray(a.positions), cell=np.asarray(a.cell.array),
                  pbc=np.asarray(a.pbc)) for a in frames]


def _centre_block(frames_B, centers):
    """The structures of ``frames_B`` holding ``centers`` (global atom indices) and the centres' indices among
    their atoms: an environment tile ships only the structures its centres live in."""
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in frames_B])])
    owner = np.searchsorted(offsets, centers, side="right") - 1
    holders = np.unique(owner)
    local = np.concatenate([[0], np.cumsum([len(frames_B[h]) for h in holders])])
    pos = np.searchsorted(holders, owner)
    return [frames_B[h] for h in holders], local[pos] + (centers - offsets[owner])


def _tile_task(hypers_json: str, frames_i, frames_j, tensor_rank, memory_budget: int, numba_threads: int,
               centers_j=None):
    """One tile on a worker: the local engine, unchanged (``centers_j``: the tile's columns are these centres of
    ``frames_j``). Returns the arrays and what it cost."""
    import numba

    from ..engine.kernels import WignerKernel

    previous = numba.get_num_threads()
    start = time.perf_counter()
    try:
        if numba_threads:
            numba.set_num_threads(max(1, min(int(numba_threads), numba.config.NUMBA_NUM_THREADS)))
        engine = WignerKernel(Hypers.from_json(hypers_json), memory_budget=memory_budget)
        if centers_j is None:
            res = engine.compute(frames_i, frames_j, tensor_rank=tensor_rank)
        else:
            res = engine.compute(frames_i, frames_j, centers_B=centers_j)
    finally:
        numba.set_num_threads(previous)
    return {"arrays": _tile_arrays(res), "n_pairs": int(res.n_pairs), "seconds": time.perf_counter() - start,
            "pid": os.getpid()}


@dataclass
class TileRun:
    """Outcome of :func:`compute_tiles`.

    Attributes
    ----------
    result : KernelResult or None
        The assembled kernel (None when ``assemble=False`` or when it exceeds the memory budget; read it from
        ``store`` then).
    store : KernelStore or None
        The on-disk store (None when the run used a temporary store).
    tiles_total, tiles_computed, tiles_reused : int
        Tiles of the request, computed by this run, and found finished in the store.
    n_pairs : int
        Ordered same-species centre pairs computed by this run.
    seconds : float
        Wall time of the run (cluster start-up included).
    task_seconds : float
        Sum of the tiles' own compute times on the workers.
    workers : int
        Worker threads the scheduler reported.
    repaired : list of ((bi, bj), str)
        Tiles found damaged (or unverifiable) before the run, recomputed by it, with what was wrong.
    """

    result: object
    store: KernelStore | None
    tiles_total: int
    tiles_computed: int
    tiles_reused: int
    n_pairs: int
    seconds: float
    task_seconds: float
    workers: int
    timings: dict = field(default_factory=dict)
    repaired: list = field(default_factory=list)


def choose_tile_size(n_A: int, n_B: int | None = None, n_workers: int = 2, *, largest: int = 256,
                     smallest: int = 8) -> int:
    """Structures per tile side: the largest power-of-two fraction of ``largest`` that still gives every
    worker at least four tiles (load balance), and never below ``smallest`` (per-task overhead)."""
    symmetric = n_B is None
    n_B = n_A if symmetric else n_B
    t = largest
    while t > smallest:
        nbi, nbj = math.ceil(n_A / t), math.ceil(n_B / t)
        tiles = nbi * (nbi + 1) // 2 if symmetric else nbi * nbj
        if tiles >= 4 * max(1, n_workers):
            break
        t //= 2
    return max(smallest, min(t, max(n_A, n_B)))


def centre_tile_size(tile_size: int, frames_A, n_centres: int) -> int:
    """Centres per tile of a request of environment columns: as many as the atoms in ``tile_size`` structures of
    A (at least ``tile_size``), or all ``n_centres`` when fewer.

    Every tile is one engine call, whose fixed costs grow with both sides: the neighbour lists and densities of
    its structures, and those of the structures holding its centres. Tiles with as many centres as atoms keep
    both small next to the tile's pairs. For 700 QM9 structures × 1,000 environments (in memory: 30 s), square
    tiles of 64 structures × 64 centres took 107 s, tiles of 64 × 1,000 48 s and of 256 × 1,000 32 s: the
    structures per tile (``tile_size``) matter too.
    """
    mean_atoms = sum(len(a) for a in frames_A) / max(1, len(frames_A))
    return int(min(int(n_centres), max(int(tile_size), math.ceil(int(tile_size) * mean_atoms))))


def tile_pair_counts(n_atoms_by_species_A: np.ndarray, n_atoms_by_species_B: np.ndarray | None = None) -> int:
    """Ordered same-species centre pairs of a request from per-structure element counts ``[n, n_species]``
    (columns aligned): Σ_Z (Σ_A n_Z(A)) (Σ_B n_Z(B)); the symmetric request computes about half of them."""
    a = np.asarray(n_atoms_by_species_A, dtype=np.float64).sum(axis=0)
    b = a if n_atoms_by_species_B is None else np.asarray(n_atoms_by_species_B, dtype=np.float64).sum(axis=0)
    return int(round(float(a @ b)))


@contextlib.contextmanager
def _main_not_rerun():
    """Hide the parent's ``__main__`` script from the processes started meanwhile.

    A process started with ``spawn`` (dask's default) or ``forkserver`` first re-runs the parent's ``__main__``
    — its file (``__file__``), or its module for ``python -m`` (``__spec__``) — as ``__mp_main__``. A script
    whose top level does real work is then run again by every worker: a Streamlit page (Streamlit runs each
    page as ``__main__`` with the page's file) would have every worker load data and draw the page in bare
    mode. Dask's workers never need the parent's ``__main__``: tasks reach them pickled by value (cloudpickle)
    whenever they refer to it. So while the workers start, ``sys.modules["__main__"]`` is a stand-in with the
    same attributes but neither file nor spec, which ``multiprocessing`` has nothing to re-run from.

    The original is put back on exit, also on failure, unless something else replaced the stand-in meanwhile
    (Streamlit installs a fresh ``__main__`` at the start of every script run; that one then stays). A module
    lock serialises concurrent starts, so every start stays covered until its own workers are up.
    """
    with _MAIN_LOCK:
        saved = sys.modules.get("__main__")
        if saved is None or (getattr(saved, "__spec__", None) is None and getattr(saved, "__file__", None) is None):
            yield  # an interactive or `python -c` parent: nothing to re-run
            return
        stand_in = types.ModuleType("__main__")
        # same globals, so code that looks a name up in __main__ meanwhile (pickle by reference) still finds it
        stand_in.__dict__.update({k: v for k, v in vars(saved).items()
                                  if k not in ("__file__", "__spec__", "__loader__", "__cached__", "__name__",
                                               "__package__", "__path__")})
        sys.modules["__main__"] = stand_in
        try:
            yield
        finally:
            if sys.modules.get("__main__") is stand_in:
                sys.modules["__main__"] = saved


# Run by every worker as it starts (a dask preload given as text): Ctrl-C in a terminal reaches every process of
# its foreground group, and a worker that got it would print its own KeyboardInterrupt traceback; only the client
# should react, and it closes the workers.
_WORKER_PRELOAD = """
import signal, threading

def dask_setup(worker):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
"""


@contextlib.contextmanager
def _sigint_deferred():
    """Keep Ctrl-C away from the worker processes while they start, and act on it once they are up.

    A terminal's Ctrl-C reaches every process of its foreground group. A worker interrupted while it imports
    prints a traceback, and an interrupted start-up leaves a half-started cluster (whose atexit clean-up prints
    another). So SIGINT is blocked in this thread while the cluster starts: the threads started meanwhile (dask's
    event loop, which spawns the workers) and the workers inherit the blocked mask and never see it (the worker
    preload :data:`_WORKER_PRELOAD` covers workers spawned later). A Ctrl-C meanwhile is only recorded (the
    list yielded) and raised by the caller once the cluster object exists and can be closed. Python's resource
    tracker unblocks the signal in the thread that first starts it, so it is started here, before. Outside the
    main thread nothing changes.
    """
    pressed = []
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield pressed
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield pressed
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending Ctrl-C runs the recording handler here
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def local_cluster(n_workers: int = 2, *, memory_limit="auto", silence_logs: bool = True):
    """A ``dask.distributed`` client on a fresh ``LocalCluster`` of ``n_workers`` single-threaded worker
    processes with Numba/BLAS pinned to one thread (closed on exit).

    The workers do not re-run the parent's ``__main__`` script while they start (so a Streamlit page or any
    script with work at its top level can start a cluster; :func:`_main_not_rerun`). A worker that its nanny
    restarts later, after a crash, is an ordinary ``spawn`` of the parent and does re-run it.

    Yields
    ------
    distributed.Client
    """
    import logging

    _require_distributed()
    from distributed import Client, LocalCluster

    if int(n_workers) < 1:
        raise InputError(f"the number of workers must be at least 1, got {n_workers}")
    # the worker processes are started (and wait to be ready) in here
    with _main_not_rerun(), _sigint_deferred() as pressed:
        # CRITICAL: a worker busy in a tile when the run is interrupted logs errors about the scheduler it lost
        cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                               dashboard_address=":0", memory_limit=memory_limit,
                               silence_logs=logging.CRITICAL if silence_logs else logging.WARNING,
                               env=dict(WORKER_ENV), preload=[_WORKER_PRELOAD])
    try:
        if pressed:
            raise KeyboardInterrupt
        client = Client(cluster)
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.close()
        raise
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()


@contextlib.contextmanager
def _client_for(client, scheduler, n_workers):
    if client is not None:
        yield client
        return
    if scheduler is None or str(scheduler).lower() == "local":
        with local_cluster(n_workers) as c:
            yield c
        return
    from distributed import Client

    try:
        c = Client(str(scheduler), timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise WkvizError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address "
                         "(e.g. tcp://host:8786) or use --scheduler local") from None
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.close()


def _worker_threads(client) -> int:
    try:
        info = client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
    except Exception:  # noqa: BLE001 - only used to size the submission window
        return 1


def compute_tiles(frames_A, frames_B=None, *, hypers: Hypers | None = None, store=None, client=None,
                  scheduler="local", n_workers: int = 2, tile_size: int | None = None, tensor_rank=0,
                  memory_budget: int = 2 * 2**30, worker_memory_budget: int | None = None, assemble: bool = True,
                  progress=None, cancel=None, max_in_flight: int | None = None,
                  numba_threads: int = 1, note=None, disk_free=None, centers_B=None,
                  tile_size_B: int | None = None) -> TileRun:
    """Compute a kernel request tile by tile on a Dask cluster (or in this process), streaming tiles into a
    kernel store.

    Parameters
    ----------
    frames_A, frames_B : sequence of ase.Atoms
        ``frames_B=None``: the symmetric request A × A (upper-triangle tiles only).
    hypers : Hypers
    store : str, Path or KernelStore, optional
        Where tiles go. A path is opened with :meth:`KernelStore.open` (created, or reopened if it holds this
        very request — finished tiles are then skipped — and refused if it holds another). ``None``: a
        temporary store, deleted after assembly.
    client : distributed.Client, optional
        Use this client; otherwise one is made from ``scheduler``.
    scheduler : "local", "in-process" or str
        ``"local"``: a LocalCluster of ``n_workers`` processes for this call; ``"in-process"``
        (:data:`IN_PROCESS`): the missing tiles one after another in this process, with all its Numba threads and
        without ``distributed``; otherwise a scheduler address.
    n_workers : int
        Workers of the local cluster (ignored with ``client`` or an address).
    tile_size : int, optional
        Structures per tile side for a new store (:func:`choose_tile_size` when omitted; with ``centers_B`` the
        centres count as the structures of A that hold as many atoms).
    tensor_rank : int or tuple
        As in :meth:`WignerKernel.compute` (atomic kernels are not tiled).
    memory_budget : int
        Bytes allowed for the assembled result on the client; above it the kernel stays in the store only.
    worker_memory_budget : int, optional
        Engine memory budget inside each task (default ``memory_budget``).
    assemble : bool
        Read the finished kernel back into a :class:`~wkviz.engine.kernels.KernelResult`.
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every finished tile (reused tiles count as done).
    cancel : threading.Event-like or callable, optional
        Checked while waiting; when set, queued tiles are cancelled, the manifest is flushed and
        :class:`~wkviz.errors.Cancelled` is raised. Finished tiles stay in the store.
    max_in_flight : int, optional
        Tasks submitted at once (default 2 × worker threads, at least 2).
    numba_threads : int
        Numba threads inside each task (1 on a LocalCluster; raise it on cluster nodes that run one
        multi-core worker each).
    note : callable, optional
        ``note(line)`` for what the run found: finished tiles it reuses, tiles that failed their check and are
        recomputed (a ``RuntimeWarning`` when omitted).
    disk_free : callable, optional
        ``disk_free(path) -> bytes`` free on the store's disk (default: :func:`shutil.disk_usage`); a request
        whose missing tiles need more is refused with the numbers before anything runs.
    centers_B : array of int, optional
        Columns are these centres of ``frames_B`` (global atom indices; a sparse model's active environments):
        the N × M kernel as tiles of structures × centres (:meth:`KernelStore.open`), scalar kernels only.
    tile_size_B : int, optional
        Centres per tile for a new store of environment columns (:func:`centre_tile_size` when omitted).

    Returns
    -------
    TileRun
    """
    start = time.perf_counter()
    here = client is None and str(scheduler).lower() == IN_PROCESS
    if not here:
        _require_distributed()
    hypers = Hypers() if hypers is None else hypers
    if not isinstance(hypers, Hypers):
        raise InputError("hypers must be a wkviz.Hypers instance")
    frames_A = list(frames_A)
    frames_B = None if frames_B is None else list(frames_B)
    if not frames_A or (frames_B is not None and not frames_B):
        raise InputError("a kernel request needs at least one structure on each side")
    kinds = kernel_kinds(tensor_rank)
    ranks = tuple(sorted({1 if k == "K_vector" else 2 for k in kinds if k != "K"}))
    worker_memory_budget = int(memory_budget if worker_memory_budget is None else worker_memory_budget)

    tmpdir = None
    repaired = []
    if store is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="wkviz-tiles-")
        store = os.path.join(tmpdir.name, "store")

    said = []

    def open_store(workers):
        if isinstance(store, KernelStore):
            want = store_key(frames_A, frames_B, hypers, kernel_kinds(ranks), centers_B)["key"]
            if want != store.key:
                raise WkvizError(f"the kernel store at {store.path} holds content hash {store.key} but this "
                                 f"request has hash {want}; open a store for this request instead")
            opened = store
        else:
            n_B = None if frames_B is None else len(frames_B)
            if centers_B is not None:  # the centres count as the structures of A that hold as many atoms
                n_B = math.ceil(len(centers_B) * len(frames_A) / max(1, sum(len(a) for a in frames_A)))
            t = tile_size or choose_tile_size(len(frames_A), n_B, workers)
            tb = None
            if centers_B is not None:
                tb = tile_size_B or centre_tile_size(t, frames_A, len(centers_B))
            opened = KernelStore.open(store, frames_A, frames_B, hypers=hypers, tensor_rank=ranks, tile_size=t,
                                      disk_free=disk_free, centers_B=centers_B, tile_size_B=tb)
            if tmpdir is not None and assemble and opened.output_bytes() > memory_budget:
                raise MemoryBudgetError(
                    f"the kernel needs {opened.output_bytes() / 2**30:.2f} GiB, above the memory budget of "
                    f"{memory_budget / 2**30:.2f} GiB; give a store path to keep it on disk, or raise the budget")
        # finished tiles are reused only once they match their digests; bad ones become missing again
        repaired.extend(opened.recheck(note))
        check_free_disk(opened.path, opened.bytes_missing(),
                        f"the {len(opened.missing_tiles())} missing tiles of {opened.path}", disk_free)
        if note is not None and opened.n_done and not said:  # a resumed or reused store, said once
            said.append(True)
            missing = len(opened.missing_tiles())
            note(f"{opened.n_done} of {opened.n_tiles} tiles are finished in the kernel store {opened.path} and "
                 f"are reused; {f'computing the other {missing}' if missing else 'nothing to compute'}")
        return opened

    try:
        # A mismatched store or a too-big request is refused before a cluster is started, whenever the
        # number of workers (for the default tile size) is known without connecting.
        local = client is None and (scheduler is None or str(scheduler).lower() in ("local", IN_PROCESS))
        if client is not None or local:
            store = open_store(_worker_threads(client) if client is not None else int(n_workers))
        if here:
            workers = 1
            run = _run_tiles_here(store, frames_A, frames_B, hypers, ranks, worker_memory_budget, progress, cancel)
        else:
            with _client_for(client, scheduler, n_workers) as cl:
                workers = _worker_threads(cl)
                store = open_store(workers)
                run = _run_tiles(cl, store, frames_A, frames_B, hypers, ranks, worker_memory_budget, progress,
                                 cancel, max_in_flight or max(2, 2 * workers), numba_threads, workers,
                                 scheduler if client is None else "client")
        result = None
        if assemble and store.output_bytes() <= memory_budget:
            result = store.to_result()
            result.seconds = time.perf_counter() - start
            result.n_pairs = run["n_pairs"]
        return TileRun(result=result, store=None if tmpdir is not None else store, tiles_total=store.n_tiles,
                       tiles_computed=run["computed"], tiles_reused=run["reused"], n_pairs=run["n_pairs"],
                       seconds=time.perf_counter() - start, task_seconds=run["task_seconds"], workers=workers,
                       timings={"first_tile": run["first_tile"]}, repaired=repaired)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()


class _Tally:
    """What a run computed, written into the store tile by tile, with progress and ETA after every tile."""

    def __init__(self, store: KernelStore, todo: list, progress):
        self.store, self.todo, self.progress = store, todo, progress
        self.out = {"computed": 0, "reused": store.n_tiles - len(todo), "n_pairs": 0, "task_seconds": 0.0,
                    "first_tile": None}
        self.t0 = time.perf_counter()

    def add(self, bi: int, bj: int, res: dict) -> None:
        """Write the result of :func:`_tile_task` for tile (bi, bj) and report progress."""
        out, store = self.out, self.store
        store.write_tile(bi, bj, res["arrays"])
        out["computed"] += 1
        # an off-diagonal tile of a symmetric request stands for its mirror tile too
        out["n_pairs"] += res["n_pairs"] * (2 if store.symmetric and bi != bj else 1)
        out["task_seconds"] += res["seconds"]
        if out["first_tile"] is None:
            out["first_tile"] = time.perf_counter() - self.t0
        if self.progress is not None:
            frac = (out["reused"] + out["computed"]) / store.n_tiles
            elapsed = time.perf_counter() - self.t0
            self.progress(frac, elapsed * (len(self.todo) - out["computed"]) / out["computed"])


@contextlib.contextmanager
def _run_record(store: KernelStore, **info):
    """A run record in the store's manifest (and its writer lock), closed with how the run ended."""
    run_id = store.begin_run(**info)
    status = "failed"
    try:
        yield run_id
        status = "finished"
    except Cancelled:
        status = "cancelled"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        store.end_run(status)


def _tile_arrays(res) -> dict:
    out = {"K": res.K}
    if res.K_vector is not None:
        out["K_vector"] = res.K_vector
    if res.K_tensor is not None:
        out["K_tensor"] = res.K_tensor
    return out


def _run_tiles_here(store: KernelStore, frames_A, frames_B, hypers, ranks, memory_budget, progress,
                    cancel) -> dict:
    """The missing tiles one after another in this process, with the engine call a worker makes."""
    from ..engine.kernels import WignerKernel

    todo = store.missing_tiles()
    tally = _Tally(store, todo, progress)
    if not todo:
        return tally.out
    engine = WignerKernel(hypers, memory_budget=memory_budget)
    frames_B = frames_A if frames_B is None else frames_B
    with _run_record(store, workers=1, scheduler="in-process (no cluster)", tiles_missing=len(todo)):
        for bi, bj in todo:
            check_cancel(cancel, "tiled kernel computation")
            t0 = time.perf_counter()
            rows = frames_A[store.tile_rows(bi)]
            if store.centers_B is not None:
                cols, centres = _centre_block(frames_B, store.centers_B[store.tile_cols(bj)])
                res = engine.compute(rows, cols, centers_B=centres, cancel=cancel)
            else:
                # a diagonal tile of a symmetric store is itself a symmetric request, as on the workers
                cols = None if store.symmetric and bi == bj else frames_B[store.tile_cols(bj)]
                res = engine.compute(rows, cols, tensor_rank=ranks, cancel=cancel)
            tally.add(bi, bj, {"arrays": _tile_arrays(res), "n_pairs": int(res.n_pairs),
                               "seconds": time.perf_counter() - t0})
    return tally.out


def _run_tiles(client, store: KernelStore, frames_A, frames_B, hypers, ranks, memory_budget, progress, cancel,
               window, numba_threads, workers, scheduler_label) -> dict:
    from distributed import wait

    todo = store.missing_tiles()
    tally = _Tally(store, todo, progress)
    if progress is not None:
        progress(tally.out["reused"] / store.n_tiles, None)
    if not todo:
        return tally.out

    # Blocks of structures travel inside the task specification rather than as scattered data: the scheduler
    # then holds everything a task needs, so a task whose worker died can be re-run anywhere (scattered data
    # would die with the only worker holding it). A block of 128 molecules is ~50 kB, tiny next to a tile's work.
    light_A = _light_frames(frames_A)
    light_B = light_A if frames_B is None else _light_frames(frames_B)
    t = store.tile_size
    row_blocks = {bi: light_A[bi * t:(bi + 1) * t] for bi in sorted({bi for bi, _ in todo})}
    if store.centers_B is None:
        col_blocks = {bj: (light_B[store.tile_cols(bj)], None) for bj in sorted({bj for _, bj in todo})}
    else:
        col_blocks = {bj: _centre_block(light_B, store.centers_B[store.tile_cols(bj)])
                      for bj in sorted({bj for _, bj in todo})}

    hjson = hypers.to_json()
    pending = {}
    queue = list(todo)
    tally.t0 = time.perf_counter()  # the ETA counts from the first submission
    with _run_record(store, workers=workers, scheduler=str(scheduler_label), tiles_missing=len(todo)) as run_id, \
            _cancel_on_exit(pending):
        while queue or pending:
            while queue and len(pending) < window:
                bi, bj = queue.pop(0)
                diag = store.symmetric and bi == bj
                cols, centres = col_blocks[bj]
                fut = client.submit(_tile_task, hjson, row_blocks[bi], None if diag else cols, ranks,
                                    memory_budget, numba_threads, centres, key=f"wkviz-tile-{run_id}-{bi}-{bj}",
                                    pure=False, retries=2)
                pending[fut] = (bi, bj)
            if is_set(cancel):
                raise Cancelled("tiled kernel computation cancelled")
            try:
                done, _ = wait(list(pending), timeout=_POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished within the poll interval: check cancel again
                continue
            for fut in done:
                bi, bj = pending.pop(fut)
                tally.add(bi, bj, fut.result())  # result() re-raises the task's exception (bad input) here
                if is_set(cancel) and (queue or pending):
                    raise Cancelled("tiled kernel computation cancelled")
    return tally.out


@contextlib.contextmanager
def _cancel_on_exit(pending: dict):
    # queued tasks die with the run, however it ends (before its record is closed)
    try:
        yield
    finally:
        for fut in pending:
            fut.cancel()


def compute_store(frames, hypers: Hypers, path, *, tensor_rank=0, n_workers: int = 2,
                  memory_budget: int = 2 * 2**30, progress=None, cancel=None, note=None, disk_free=None):
    """The symmetric kernel of ``frames`` as tiles in the store at ``path``: on a local cluster if one starts,
    in this process otherwise.

    Opens (or creates) the store; if tiles are missing, starts a :func:`local_cluster` of ``n_workers``
    single-threaded workers and runs :func:`compute_tiles` on it, shutting the cluster down when the call ends
    (finished, cancelled or failed). If the cluster cannot be started, the missing tiles are computed in this
    process instead (``scheduler="in-process"``), into the same store, and the returned information says why. A
    complete store is read back without starting anything. The tile size of a new store follows ``n_workers``
    whichever way the tiles run, so a store has one layout.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    hypers : Hypers
    path : str or Path
        The store's directory (new, empty, or holding this very request).
    tensor_rank : int or tuple
        As in :func:`compute_tiles` (atomic kernels are not tiled).
    n_workers : int
        Workers of the local cluster.
    memory_budget : int
        Bytes: the engine's budget in every tile, and the largest kernel read back into memory.
    progress, cancel
        As in :func:`compute_tiles`; a cancelled run keeps its finished tiles and the next call resumes.
    note, disk_free
        As in :func:`compute_tiles`: tiles that fail their check are recomputed and reported to ``note``.

    Returns
    -------
    result : KernelResult or None
        The whole kernel, or None when it exceeds ``memory_budget`` (it is complete in the store then).
    info : dict
        ``path``, ``tiles_total``, ``tiles_reused``, ``tiles_computed``, ``tile_size``, ``where`` (a sentence),
        ``fallback`` (why no cluster, or None), ``worker_pids`` (of the cluster, all shut down on return),
        ``timings``, ``seconds``, ``in_memory``, ``repaired`` (tiles that failed their check and were
        recomputed, with what was wrong).
    """
    from ..engine.kernels import WignerKernel

    start = time.perf_counter()
    frames = list(frames)
    try:
        store = KernelStore.open(path, frames, hypers=hypers, tensor_rank=tensor_rank,
                                 tile_size=choose_tile_size(len(frames), None, n_workers), disk_free=disk_free)
    except OSError as exc:
        raise InputError(f"cannot create the kernel store at {path} ({exc.strerror or exc}); choose a directory "
                         "you can write to") from None
    repaired = store.recheck(note)  # before anything is reused; compute_tiles then finds them checked
    info = {"path": str(path), "tiles_total": store.n_tiles, "tiles_reused": store.n_done, "tiles_computed": 0,
            "tile_size": store.tile_size, "fallback": None, "worker_pids": [], "timings": {}, "repaired": repaired}
    if store.complete:
        info["where"] = "with nothing to compute: every tile was already in the store"
    else:
        with contextlib.ExitStack() as stack:  # closes the cluster however the call ends
            client = None
            t0 = time.perf_counter()
            try:
                # local_cluster keeps its workers from re-running the caller's __main__ (a Streamlit page)
                client = stack.enter_context(local_cluster(n_workers))
            except Exception as exc:  # noqa: BLE001 - any failure to start a cluster falls back to this process
                info["fallback"] = f"{type(exc).__name__}: {exc}".strip()
            if client is not None:
                with contextlib.suppress(Exception):  # only reported, so the caller can say they were shut down
                    info["worker_pids"] = sorted(int(p) for p in client.run(os.getpid).values())
                info["timings"]["cluster start-up"] = time.perf_counter() - t0
                run = compute_tiles(frames, hypers=hypers, store=store, client=client, tensor_rank=tensor_rank,
                                    memory_budget=memory_budget, assemble=False, progress=progress, cancel=cancel,
                                    note=note, disk_free=disk_free)
                info["where"] = (f"on a local Dask cluster of {run.workers} single-threaded worker processes, "
                                 "shut down when the job ended")
            else:
                run = compute_tiles(frames, hypers=hypers, store=store, scheduler=IN_PROCESS,
                                    tensor_rank=tensor_rank, memory_budget=memory_budget, assemble=False,
                                    progress=progress, cancel=cancel, note=note, disk_free=disk_free)
                info["where"] = ("in this process, one tile after another, because a local Dask cluster could not "
                                 f"be started ({info['fallback']})")
            info["tiles_computed"] = run.tiles_computed
            info["timings"]["tiles"] = time.perf_counter() - t0
    result = None
    if store.output_bytes() <= memory_budget:
        t0 = time.perf_counter()
        result = store.to_result()
        info["timings"]["read from the store"] = time.perf_counter() - t0
        result.seconds = time.perf_counter() - start
        result.n_pairs = WignerKernel(hypers).estimate(frames, timed=False)["n_pairs"]  # pairs the kernel represents
        result.timings = dict(info["timings"])
    info["seconds"] = time.perf_counter() - start
    info["in_memory"] = result is not None
    return result, info
