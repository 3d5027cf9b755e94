"""Process-wide run-time facilities, each in one place: the engine lock, the cancel check and BLAS thread limits.

- :data:`ENGINE_LOCK` serialises Numba's parallel regions across threads. Numba's default threading layer
  (workqueue) aborts the whole process when two Python threads launch parallel kernels at once, and the app serves
  several browser sessions from one process. It is re-entrant: a background job holds it for its whole run
  (:class:`engine_lock`) and the engine takes it again around each parallel region of the same thread.
- :func:`check_cancel` is the one cancellation check of every long loop (kernels, features, models, cost
  comparisons, tiles): a ``threading.Event``-like object or a callable, ``None`` for "never".
- :func:`blas_threads` and :func:`single_threaded_blas` limit BLAS threads for a block of linear algebra.
- :func:`signals_deferred` holds Ctrl-C and SIGTERM for a short block of I/O that must not stop halfway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Callable

from .errors import Cancelled

#: Held while Numba's parallel kernels run; see the module docstring for why.
ENGINE_LOCK = threading.RLock()


def is_set(flag) -> bool:
    """True when a cancel flag (``threading.Event``-like or callable; ``None`` never) is set."""
    if flag is None:
        return False
    return bool(flag.is_set() if hasattr(flag, "is_set") else flag())


def check_cancel(cancel, what: str = "computation") -> None:
    """Raise :class:`wkviz.errors.Cancelled` if ``cancel`` is set.

    Parameters
    ----------
    cancel : threading.Event-like, callable or None
        The caller's cancel flag.
    what : str
        What is being cancelled, for the message (``"<what> cancelled"``).
    """
    if is_set(cancel):
        raise Cancelled(f"{what} cancelled")


@contextlib.contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C and SIGTERM while the block runs, then hand the first one that came to the handler that was
    installed before (which raises ``KeyboardInterrupt``, the CLI's terminate exception, or ends the process).

    For short I/O that must finish once started: zarr runs each read and write as a task on its own event-loop
    thread, so an interrupt raised in the waiting thread leaves the task running, and the loop that zarr closes at
    exit then reports it as destroyed while pending (noise after the CLI's one-line message, and a chunk written
    after its store was given up). Nothing changes outside the main thread (the app's background jobs stop through
    their cancel flag), nor for a signal whose handler was not installed from Python.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    previous = {}
    for signum in signums:
        if signal.getsignal(signum) is not None:
            previous[signum] = signal.signal(signum, lambda s, frame: got.append((s, frame)))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if got:
            signum, frame = got[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


class engine_lock:
    """Context manager taking :data:`ENGINE_LOCK`, calling ``on_wait()`` once if another caller holds it.

    Parameters
    ----------
    on_wait : callable, optional
        Called (without arguments) before blocking, so a job can report "waiting for another session".
    cancel : threading.Event-like, optional
        While waiting, a set cancel flag raises :class:`wkviz.errors.Cancelled` instead of waiting on.
    """

    def __init__(self, on_wait: Callable[[], None] | None = None, cancel=None):
        self.on_wait = on_wait
        self.cancel = cancel

    def __enter__(self):
        if ENGINE_LOCK.acquire(blocking=False):
            return self
        if self.on_wait is not None:
            self.on_wait()
        while not ENGINE_LOCK.acquire(timeout=0.2):
            if is_set(self.cancel):
                raise Cancelled("cancelled while waiting for another computation to finish")
        return self

    def __exit__(self, *exc):
        ENGINE_LOCK.release()
        return False


# OpenBLAS threads spin while they wait: on a busy machine (other sessions, Numba kernels, the app) a
# 160×160 Cholesky ran 100× and a 1600×1600 one 10× slower with 2 threads than with 1 (measured on the 2-core
# reference machine). A search that does hundreds of such solves therefore uses at most half the cores.
SMALL_SOLVE = 1200

_BLAS_LIMIT_LOCK = threading.RLock()
_BLAS: dict = {}


def _blas_controller():
    # created once, after NumPy has loaded its BLAS (threadpoolctl comes with scikit-learn; None without it)
    if "ctl" not in _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS["ctl"] = ThreadpoolController()
        except ImportError:
            _BLAS["ctl"] = None
    return _BLAS["ctl"]


@contextlib.contextmanager
def blas_limit(threads: int, *, exclusive: bool = False):
    """Run the BLAS/LAPACK calls of this block on at most ``threads`` threads.

    ``exclusive`` holds a lock for the block, so that concurrent short blocks do not restore the thread count out
    of order; long blocks (a model fit) leave it off so that they do not stall other sessions' work.
    """
    ctl = _blas_controller()
    if ctl is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        if exclusive:
            stack.enter_context(_BLAS_LIMIT_LOCK)
        stack.enter_context(ctl.limit(limits=int(threads), user_api="blas"))
        yield


class ThreadChoice:
    """BLAS threads for a run of similar large factorisations (a hyperparameter search), chosen by timing the
    work itself: the first call runs on every core, the second on one thread, the rest on the faster of the two
    (the first call also pays for first touches of memory, so the order favours one thread when in doubt).

    On an idle 2-core machine two threads cut an evidence evaluation at M = 3,000 from 1.8 to 1.4 s; on a busy
    one they made a 3,000 × 3,000 factorisation 3× slower (the spinning threads of the comment above). A probe on
    a small matrix cannot tell (small factorisations do not gain from threads on any machine), the real calls can.

    Use ``with choice.run(): ...`` around each call.
    """

    def __init__(self, cores: int | None = None):
        self.cores = int(cores or os.cpu_count() or 1)
        self.seconds: dict = {}

    @property
    def threads(self) -> int:
        """Threads of the next call."""
        if self.cores < 2:
            return 1
        for trial in (self.cores, 1):
            if trial not in self.seconds:
                return trial
        return min(self.seconds, key=self.seconds.get)

    @contextlib.contextmanager
    def run(self):
        threads = self.threads
        start = time.perf_counter()
        with blas_limit(threads):
            yield threads
        self.seconds.setdefault(threads, time.perf_counter() - start)


def blas_threads(n: int):
    """BLAS thread limit for the many solves of an n × n hyperparameter search: 1 below :data:`SMALL_SOLVE`
    rows, half the cores above."""
    return blas_limit(1 if n < SMALL_SOLVE else max(1, (os.cpu_count() or 2) // 2))


def single_threaded_blas():
    """One BLAS thread for this block.

    Multi-threaded OpenBLAS synchronises its threads by busy-waiting: for small calls (a 200×200 eigh) that is
    slower than one thread even on an idle machine, and when other jobs share the cores a waiting thread burns the
    time the other one needs.
    """
    return blas_limit(1, exclusive=True)
