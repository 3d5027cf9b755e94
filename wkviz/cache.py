"""Content hashes, a shared result store and a cancellable background job for the dashboard.

The app caches by *content*, never by object identity or file name: two uploads of the same bytes, or the same
structures loaded twice, share results; a changed hyperparameter or a moved atom gives a new key. The helpers
here are plain Python (no streamlit) so they can be tested directly and reused by any front end:

- :func:`hash_bytes`, :func:`hash_structures`, :func:`hash_array`, :func:`hash_key` build short hex digests
  that pages pass to ``st.cache_data`` functions whose heavy arguments are ``_``-prefixed (not hashed).
- :class:`ResultStore` is a process-wide, thread-safe LRU for results that are computed in worker threads
  (Wigner kernels), so every session and every page switch reuses them.
- :data:`ENGINE_LOCK` and :class:`engine_lock` are re-exports of :mod:`wkviz.runtime`'s (their one home), kept
  here for one release; new code imports them from :mod:`wkviz.runtime`.
- :class:`BackgroundJob` runs ``fn(progress=..., cancel=...)`` in a thread and exposes its progress, ETA and
  outcome to a page that polls it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import Cancelled, WkvizError
from .runtime import ENGINE_LOCK, engine_lock  # noqa: F401  (re-exported for one release)

__all__ = [
    "hash_bytes",
    "hash_array",
    "hash_structures",
    "hash_key",
    "ResultStore",
    "RESULTS",
    "ENGINE_LOCK",
    "engine_lock",
    "BackgroundJob",
    "JobState",
]

DIGEST_CHARS = 20


def _hasher():
    return hashlib.blake2b(digest_size=16)


def hash_bytes(data: bytes) -> str:
    """Digest of raw bytes (an uploaded file, a bundled file).

    Parameters
    ----------
    data : bytes

    Returns
    -------
    str
        Hex digest, :data:`DIGEST_CHARS` characters.
    """
    h = _hasher()
    h.update(memoryview(data))
    return h.hexdigest()[:DIGEST_CHARS]


def _update_array(h, array) -> None:
    array = np.ascontiguousarray(array)
    # dtype and shape go in too: the same bytes as int32[4] and float64[2] are different content.
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())


def hash_array(array) -> str:
    """Digest of an array's dtype, shape and values (targets, index sets, weights).

    Parameters
    ----------
    array : array_like

    Returns
    -------
    str
    """
    h = _hasher()
    _update_array(h, np.asarray(array))
    return h.hexdigest()[:DIGEST_CHARS]


def hash_structures(frames) -> str:
    """Digest of what a kernel depends on: atomic numbers, positions, cell and periodicity of every structure.

    Targets (``info``/``arrays``) are deliberately left out: changing the target must not invalidate a kernel.
    Hash the target with :func:`hash_array` where a result depends on it.

    Parameters
    ----------
    frames : sequence of ase.Atoms

    Returns
    -------
    str
    """
    h = _hasher()
    h.update(f"n={len(frames)};".encode())
    for atoms in frames:
        _update_array(h, np.asarray(atoms.numbers, dtype=np.int64))
        _update_array(h, np.asarray(atoms.positions, dtype=np.float64))
        _update_array(h, np.asarray(atoms.cell.array, dtype=np.float64))
        _update_array(h, np.asarray(atoms.pbc, dtype=bool))
    return h.hexdigest()[:DIGEST_CHARS]


def _canonical(part) -> bytes:
    if part is None:
        return b"None"
    if isinstance(part, bytes):
        return b"b" + hash_bytes(part).encode()
    if isinstance(part, str):
        return b"s" + part.encode()
    if isinstance(part, (bool, int, float, np.integer, np.floating)):
        return b"n" + repr(part.item() if hasattr(part, "item") else part).encode()
    if isinstance(part, np.ndarray):
        return b"a" + hash_array(part).encode()
    if hasattr(part, "digest") and callable(part.digest):  # Hypers and anything else that hashes itself
        return b"d" + str(part.digest()).encode()
    if isinstance(part, dict):
        return b"{" + b",".join(_canonical(k) + b":" + _canonical(part[k]) for k in sorted(part, key=str)) + b"}"
    if isinstance(part, (list, tuple)):
        return b"[" + b",".join(_canonical(p) for p in part) + b"]"
    try:
        return b"j" + json.dumps(part, sort_keys=True).encode()
    except TypeError:
        raise TypeError(f"cannot build a content key from an object of type {type(part).__name__}") from None


def hash_key(*parts) -> str:
    """Combine digests, hyperparameters, numbers, strings, arrays, dicts and lists into one key.

    Parameters
    ----------
    *parts
        Anything :func:`hash_key` knows how to canonicalise. Objects with a ``digest()`` method
        (:class:`wkviz.Hypers`) contribute their digest.

    Returns
    -------
    str
    """
    h = _hasher()
    for part in parts:
        h.update(_canonical(part))
        h.update(b"|")
    return h.hexdigest()[:DIGEST_CHARS]


def _nbytes(value) -> int:
    """Rough size of a stored result: the arrays it holds."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    total = 0
    attrs = getattr(value, "__dict__", None)
    if isinstance(value, dict):
        attrs = value
    if attrs:
        for item in attrs.values():
            if isinstance(item, np.ndarray):
                total += int(item.nbytes)
    return total


class ResultStore:
    """A thread-safe least-recently-used store with a byte budget.

    Parameters
    ----------
    max_bytes : int
        Results are evicted, oldest first, once the arrays they hold exceed this many bytes. The newest result
        is always kept, even if it alone is larger.
    """

    def __init__(self, max_bytes: int = 2 * 2**30):
        self.max_bytes = int(max_bytes)
        self._items: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, default=None):
        """Return the stored value (and mark it recently used), or ``default``."""
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: str, value) -> None:
        """Store ``value`` under ``key``, evicting the least recently used results beyond the budget."""
        size = _nbytes(value)
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            total = sum(s for _, s in self._items.values())
            while total > self.max_bytes and len(self._items) > 1:
                _, (_, evicted) = self._items.popitem(last=False)
                total -= evicted

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: Results shared by every session of one app process (kernels, mostly).
RESULTS = ResultStore()

@dataclass
class JobState:
    """A snapshot of a :class:`BackgroundJob`, safe to read from the page's thread."""

    status: str  # "waiting" | "running" | "done" | "cancelled" | "failed"
    fraction: float
    eta_seconds: float | None
    elapsed: float
    message: str


class BackgroundJob:
    """Run ``fn(progress=..., cancel=...)`` in a daemon thread, holding :data:`wkviz.runtime.ENGINE_LOCK`.

    ``fn`` receives ``progress(fraction, eta_seconds)`` and a ``threading.Event`` it should poll (the engine's
    ``compute`` accepts both directly). The page keeps the job in its session state, polls :meth:`state` to
    draw a progress bar, calls :meth:`cancel` from a button, and reads :attr:`result` or :attr:`error` when done.

    Parameters
    ----------
    fn : callable
        ``fn(progress=callable, cancel=threading.Event) -> result``.
    label : str
        What is being computed, for the page.
    key : str, optional
        Content key of the result; when given the result is also put into :data:`RESULTS`.
    use_engine_lock : bool
        Hold :data:`ENGINE_LOCK` while ``fn`` runs (default True).
    meta : dict, optional
        What the caller needs to know about the job later (its inputs, for instance); never read here.
    """

    def __init__(self, fn: Callable, label: str = "", key: str | None = None, use_engine_lock: bool = True,
                 meta: dict | None = None):
        self.fn = fn
        self.label = label
        self.key = key
        self.meta = dict(meta or {})
        self.use_engine_lock = use_engine_lock
        self.result = None
        self.error: BaseException | None = None
        self.error_traceback: str | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._fraction = 0.0
        self._eta: float | None = None
        self._status = "waiting"
        self._message = ""
        self._started = None
        self._finished = None
        self._thread = threading.Thread(target=self._run, name=f"wkviz-job-{label}", daemon=True)

    # -- control ---------------------------------------------------------------------------------------------
    def start(self) -> "BackgroundJob":
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the computation to stop at its next cancellation check."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job; return True when it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._status in ("done", "cancelled", "failed")

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def state(self) -> JobState:
        with self._lock:
            now = self._finished if self._finished is not None else time.perf_counter()
            elapsed = 0.0 if self._started is None else now - self._started
            return JobState(self._status, self._fraction, self._eta, elapsed, self._message)

    # -- worker ----------------------------------------------------------------------------------------------
    def _progress(self, fraction, eta_seconds=None):
        with self._lock:
            self._status = "running"
            self._message = ""
            self._fraction = float(min(max(fraction, 0.0), 1.0))
            self._eta = None if eta_seconds is None else float(max(eta_seconds, 0.0))

    def _on_wait(self):
        with self._lock:
            self._message = "waiting for another session's computation to finish"

    def _run(self):
        try:
            if self.use_engine_lock:
                with engine_lock(on_wait=self._on_wait, cancel=self._cancel):
                    with self._lock:
                        self._status = "running"
                        self._message = ""
                    result = self.fn(progress=self._progress, cancel=self._cancel)
            else:
                with self._lock:
                    self._status = "running"
                result = self.fn(progress=self._progress, cancel=self._cancel)
        except Cancelled as exc:
            self._finish("cancelled", str(exc) or "cancelled")
        except WkvizError as exc:
            self.error = exc
            self._finish("failed", str(exc))
        except BaseException as exc:  # a bug: keep the traceback for the log
            self.error = exc
            self.error_traceback = traceback.format_exc()
            self._finish("failed", f"{type(exc).__name__}: {exc}")
        else:
            self.result = result
            if self.key is not None:
                RESULTS.put(self.key, result)
            self._finish("done", "")

    def _finish(self, status, message):
        with self._lock:
            self._status = status
            self._message = message
            self._finished = time.perf_counter()
            if status == "done":
                self._fraction = 1.0
                self._eta = 0.0
