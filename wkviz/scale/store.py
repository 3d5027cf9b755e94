"""On-disk chunked kernel store: a kernel request computed tile by tile, resumable and reusable.

A store is a directory holding a zarr (v3) group. Each kernel kind of the request (``K``, and ``K_vector`` /
``K_tensor`` when tensor kernels were asked for) is one zarr array whose chunks are exactly the tiles of the
request: ``tile_size`` structures × ``tile_size`` structures (× all body orders and components), or, for a
request of environment columns (``centers_B``), ``tile_size`` structures × ``tile_size_B`` centres. A tile is
therefore written as one chunk file, by one writer, and never touched again.

Identity. The store is keyed by a content hash of what the numbers depend on: the structures of A and B
(atomic numbers, positions, cell, periodicity; :func:`wkviz.cache.hash_structures`), whether the request is
symmetric, the hyperparameters and the kernel kinds. Opening an existing store for another request is refused
with a :class:`~wkviz.errors.WkvizError` naming both hashes, so finished tiles can never be mixed with tiles of
other structures or other hyperparameters.

Progress. ``manifest.json`` lists, for every tile of the grid, how many times it was written (0 = missing) and
one record per run. It is rewritten atomically (temporary file, fsync, ``os.replace``) after tiles land, at
most every ``flush_seconds``; a tile counts as finished only once the manifest says so. A run that is
interrupted (cancelled, an exception, a killed client) loses at most the tiles written since the last
manifest flush, and those are simply recomputed and overwritten: the manifest can never claim a tile whose
chunk is not on disk. Symmetric requests store only the tiles on and above the diagonal; :meth:`KernelStore.read`
fills the rest by transposition.

Integrity (:mod:`wkviz.scale.tilecheck`). The manifest also holds a digest of every finished tile (kind,
coordinates, shape, values), and chunks are zstd frames with their own checksum. Every read recomputes the
digests of the tiles it touches and refuses a tile that fails (:class:`~wkviz.errors.InputError` naming the
tiles and the fix); :meth:`KernelStore.recheck`, run before tiles are reused, turns such tiles back into missing
ones so the next run recomputes them and says so. ``python -m wkviz store verify PATH [--repair]`` checks a
whole store. A tile counts as finished only when its digest is recorded. Stores written before digests existed
(format ``wkviz-kernel-store/1``) still open, but none of their tiles can be vouched for: they are all
recomputed by the next run into the same store, which is then upgraded to the current format.

Creation. A new store is built in a hidden folder beside its path and renamed into place in one step, so
concurrent openers of the same new store never see half a store: the one whose rename loses opens the
winner's. A new store that would not fit on the disk is refused up front with the numbers.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from ..cache import hash_key, hash_structures
from ..errors import InputError, MemoryBudgetError, WkvizError
from ..hypers import Hypers
from ..runtime import signals_deferred
from .tilecheck import LostRace, check_free_disk, create_by_rename, describe_tiles, tile_digest

__all__ = ["KernelStore", "store_key", "STORE_FORMAT", "kernel_kinds"]

STORE_FORMAT = "wkviz-kernel-store/2"
# Format 1 had no tile digests; its stores open, and all their tiles count as unverified (recomputed).
_OLD_FORMATS = ("wkviz-kernel-store/1",)
# The identity of a request does not depend on how its tiles are checked: format-1 stores keep their key.
_KEY_FORMAT = "wkviz-kernel-store/1"
_MANIFEST = "manifest.json"
_ZARR_DIR = "kernels.zarr"
_LOCK = "writer.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kernel_kinds(tensor_rank=0) -> tuple:
    """Kernel arrays of a request: ``("K",)`` plus ``"K_vector"`` (rank 1) and/or ``"K_tensor"`` (rank 2)."""
    ranks = (tensor_rank,) if np.isscalar(tensor_rank) else tuple(tensor_rank or ())
    kinds = ["K"]
    for r in sorted({int(r) for r in ranks}):
        if r not in (0, 1, 2):
            raise InputError(f"tensor_rank must be 0, 1 or 2 (or a tuple of them), got {r!r}")
        if r == 1:
            kinds.append("K_vector")
        elif r == 2:
            kinds.append("K_tensor")
    return tuple(kinds)


def store_key(frames_A, frames_B, hypers: Hypers, kinds=("K",), centers_B=None) -> dict:
    """Content hashes identifying a kernel request (``centers_B``: B's columns are these centres, global atom
    indices of ``frames_B``, as in :meth:`wkviz.engine.kernels.WignerKernel.compute`).

    Returns
    -------
    dict
        ``key`` (the store's identity), ``structures_A``, ``structures_B`` (``"symmetric"`` when B is A) and
        ``hypers`` (the hyperparameter digest), so that a refusal can say which part differs.
    """
    ha = hash_structures(frames_A)
    hb = "symmetric" if frames_B is None else hash_structures(frames_B)
    if centers_B is None:
        key = hash_key(_KEY_FORMAT, ha, hb, hypers, list(kinds))
    else:  # environment columns: a request of another shape, keyed by its centres too
        key = hash_key(_KEY_FORMAT, ha, hb, hypers, list(kinds), "centers_B",
                       [int(c) for c in np.asarray(centers_B).ravel()])
    return {"key": key, "structures_A": ha, "structures_B": hb, "hypers": str(hypers.digest())}


def _zarr():
    try:
        import zarr
    except ImportError:
        raise InputError("the on-disk kernel store needs the optional package 'zarr' (pip install \"zarr>=3.0\", "
                         "or pip install 'wkviz[scale]')") from None
    return zarr


def _tail_shape(kind: str) -> tuple:
    """Per-pair component axes of each kernel kind (after the structure axes are split out)."""
    return {"K": (), "K_vector": (3,), "K_tensor": (5,)}[kind]


def _tile_sides(meta: dict) -> tuple:
    """Rows and columns per tile: ``tile_size`` both, unless the store records ``tile_size_B`` (its columns
    are centres)."""
    t = int(meta["tile_size"])
    return t, int(meta.get("tile_size_B", t))


def _tile_bytes(meta: dict, grid, tiles) -> int:
    """Dense float64 bytes of ``tiles`` over all kinds (edge tiles are smaller)."""
    (t, tb), n_A, n_B = _tile_sides(meta), int(meta["n_A"]), int(meta["n_B"])
    per_pair = 8 * (int(meta["nu_max"]) + 1) * sum(int(np.prod(_tail_shape(k))) ** 2 for k in meta["kinds"])
    ij = np.asarray(list(tiles), dtype=np.int64).reshape(-1, 2)
    pairs = np.minimum(t, n_A - ij[:, 0] * t) * np.minimum(tb, n_B - ij[:, 1] * tb)
    return per_pair * int(pairs.sum())


def _encode_counts(counts: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(counts, dtype=np.uint8).tobytes()).decode("ascii")


def _decode_counts(text: str, shape) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"))
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


def _atomic_write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class KernelStore:
    """A kernel request ``A × B`` (or ``A × A``) laid out as tiles in a zarr group on disk.

    Use :meth:`open` (create or reopen, checking the content hash); the constructor is internal.

    Attributes
    ----------
    path : Path
    key : str
        Content hash of the request (:func:`store_key`).
    n_A, n_B : int
        Structures in A and B.
    symmetric : bool
        B is A: only tiles with ``bi ≤ bj`` exist.
    tile_size : int
        Structures per tile side (= zarr chunk size along both structure axes).
    tile_size_B : int
        Columns per tile: ``tile_size``, or the centres per tile of a store of environment columns.
    grid : tuple of int
        Tile rows × tile columns.
    nu_max : int
    kinds : tuple of str
        Kernel arrays held (``"K"``, ``"K_vector"``, ``"K_tensor"``).
    """

    def __init__(self, path: Path, meta: dict, manifest: dict, flush_seconds: float):
        zarr = _zarr()
        self.path = Path(path)
        self.meta = meta
        self.key = meta["key"]["key"]
        self.n_A = int(meta["n_A"])
        self.n_B = int(meta["n_B"])
        self.symmetric = bool(meta["symmetric"])
        self.tile_size, self.tile_size_B = _tile_sides(meta)
        self.nu_max = int(meta["nu_max"])
        self.kinds = tuple(meta["kinds"])
        self.hypers = Hypers.from_dict(meta["hypers"])
        centers = meta.get("centers_B")
        #: B's columns are these centres (global atom indices of B's structures), or None (structures)
        self.centers_B = None if centers is None else np.asarray(centers, dtype=np.int64)
        self.grid = (math.ceil(self.n_A / self.tile_size), math.ceil(self.n_B / self.tile_size_B))
        self.flush_seconds = float(flush_seconds)
        self._group = zarr.open_group(str(self.path / _ZARR_DIR), mode="r+")
        self._writes = _decode_counts(manifest["writes"], self.grid)
        # digests of finished tiles; a format-1 manifest has none, so all its tiles are unverified
        self._digests = {tuple(int(x) for x in k.split(",")): dict(v)
                         for k, v in manifest.get("digests", {}).items()}
        self._checked = set()  # tiles whose chunks this object has verified (or written) since it was opened
        # written without digests: its tiles on record are reported as unverified (a repaired tile is just missing)
        self._legacy = manifest.get("format") in _OLD_FORMATS
        self._runs = list(manifest.get("runs", []))
        self._dirty = False
        self._last_flush = time.monotonic()
        self._run = None

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, frames_A, frames_B=None, *, hypers: Hypers, tensor_rank=0, tile_size: int = 128,
             flush_seconds: float = 1.0, disk_free=None, centers_B=None,
             tile_size_B: int | None = None) -> "KernelStore":
        """Create the store for a request, or reopen the store of the *same* request.

        Parameters
        ----------
        path : str or Path
            Store directory (created if missing; an empty directory is fine). A new store is built beside it
            and renamed into place, so concurrent openers of one new store all end up with the same store.
        frames_A, frames_B : sequence of ase.Atoms
            ``frames_B=None`` is the symmetric request A × A.
        hypers : Hypers
        tensor_rank : int or tuple of int
            Also hold ``K_vector`` (1) and/or ``K_tensor`` (2).
        tile_size : int
            Structures per tile side for a new store; an existing store keeps its own tile size.
        flush_seconds : float
            Least time between two manifest rewrites while tiles stream in (0: after every tile).
        disk_free : callable, optional
            ``disk_free(path) -> bytes`` free on the disk of ``path`` (default: :func:`shutil.disk_usage`); a new
            store whose tiles need more is refused.
        centers_B : array of int, optional
            Columns are these centres of ``frames_B`` (global atom indices; the active environments of a sparse
            model) instead of its structures: the kernel is (nu_max+1, len(A), len(centers_B)), tiles are
            ``tile_size`` structures × ``tile_size_B`` centres. Scalar kernels only.
        tile_size_B : int, optional
            Centres per tile for a new store of environment columns (default ``tile_size``); an existing store
            keeps its own. Structure columns always have ``tile_size``.

        Raises
        ------
        WkvizError
            The directory holds a store of another request (other structures, hyperparameters or kernel
            kinds), or something that is not a wkviz kernel store, or ``path`` is a file.
        InputError
            A new store would not fit on the disk, or cannot be created there.
        """
        if not isinstance(hypers, Hypers):
            raise InputError("hypers must be a wkviz.Hypers instance")
        kinds = kernel_kinds(tensor_rank)
        if centers_B is not None:
            if frames_B is None or kinds != ("K",):
                raise InputError("a store of environment columns (centers_B) needs frames_B and scalar kernels only")
            centers_B = np.asarray(centers_B, dtype=np.int64).ravel()
            n_atoms_B = sum(len(b) for b in frames_B)
            if centers_B.size == 0 or centers_B.min() < 0 or centers_B.max() >= n_atoms_B:
                raise InputError(f"centers_B must be atom indices in 0..{n_atoms_B - 1}")
        key = store_key(frames_A, frames_B, hypers, kinds, centers_B)
        path = Path(path)
        tile_size = int(tile_size)
        if tile_size < 1:
            raise InputError(f"tile_size must be a positive number of structures, got {tile_size}")
        tile_size_B = tile_size if tile_size_B is None or centers_B is None else int(tile_size_B)
        if tile_size_B < 1:
            raise InputError(f"tile_size_B must be a positive number of centres, got {tile_size_B}")
        n_A = len(frames_A)
        n_B = n_A if frames_B is None else len(frames_B) if centers_B is None else len(centers_B)
        meta = {
            "format": STORE_FORMAT, "key": key, "n_A": n_A, "n_B": n_B, "symmetric": frames_B is None,
            "tile_size": tile_size, "nu_max": hypers.nu_max, "kinds": list(kinds), "hypers": hypers.to_dict(),
            "n_atoms_A": [len(a) for a in frames_A],
            "n_atoms_B": [len(b) for b in (frames_A if frames_B is None else frames_B)],
            "species": sorted({int(z) for fr in (frames_A, frames_B or []) for a in fr for z in a.numbers}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "id": uuid.uuid4().hex[:12],
        }
        if centers_B is not None:
            meta["centers_B"] = [int(c) for c in centers_B]
            meta["tile_size_B"] = tile_size_B
        for _ in range(3):  # a lost creation race is followed by opening the winner's store
            existing = cls._existing(path)
            if existing is not None:
                cls._check_key(path, existing["meta"], key, kinds)
                return cls(path, existing["meta"], existing, flush_seconds)
            grid = (math.ceil(n_A / tile_size), math.ceil(n_B / tile_size_B))
            need = _tile_bytes(meta, grid, [(i, j) for i in range(grid[0]) for j in range(grid[1])
                                            if not (frames_B is None and j < i)])
            check_free_disk(path, need, f"{n_A:,} × {n_B:,} structures ({', '.join(kinds)}, ν ≤ {hypers.nu_max})",
                            disk_free)
            manifest = {"format": STORE_FORMAT, "meta": meta, "writes": _encode_counts(np.zeros(grid, np.uint8)),
                        "digests": {}, "runs": []}

            def build(tmp):
                cls._create_arrays(tmp, meta)
                _atomic_write_json(tmp / _MANIFEST, manifest)

            try:
                create_by_rename(path, build)
            except LostRace:
                continue
            return cls(path, meta, manifest, flush_seconds)
        raise WkvizError(f"the kernel store at {path} kept changing while it was opened; is another program "
                         "creating and deleting it? Try again, or use another --store path")

    @classmethod
    def _existing(cls, path: Path):
        """The manifest of the store at ``path``; None when there is no store yet (missing or empty folder)."""
        if path.exists() and not path.is_dir():
            raise WkvizError(f"--store {path} is a file, not a directory; give a new or empty directory for the "
                             "kernel store")
        manifest_path = path / _MANIFEST
        if manifest_path.exists():
            return cls._read_manifest(manifest_path)
        try:
            empty = not path.exists() or not any(path.iterdir())
        except OSError as exc:
            raise InputError(f"cannot read the folder {path} ({exc.strerror or exc}); check --store") from None
        if not empty:
            if manifest_path.exists():  # another process renamed its new store into place meanwhile
                return cls._read_manifest(manifest_path)
            raise WkvizError(f"{path} exists and is not a wkviz kernel store (no {_MANIFEST}); choose an empty "
                             "or new directory for --store")
        return None

    @staticmethod
    def _check_key(path: Path, meta: dict, key: dict, kinds: tuple) -> None:
        if meta["key"]["key"] != key["key"]:
            differ = [name for name, part in (("structures A", "structures_A"), ("structures B", "structures_B"),
                                              ("hyperparameters", "hypers"))
                      if meta["key"].get(part) != key[part]]
            if tuple(meta.get("kinds", ())) != kinds:
                differ.append(f"kernel kinds ({', '.join(meta.get('kinds', ()))} stored)")
            raise WkvizError(
                f"the kernel store at {path} holds content hash {meta['key']['key']} but this request has "
                f"hash {key['key']} (different {', '.join(differ) or 'content'}); pass another --store path "
                f"for this request, or delete {path} to discard the stored tiles")

    @classmethod
    def load(cls, path, flush_seconds: float = 1.0) -> "KernelStore":
        """Open an existing store without its structures (to verify, repair or read it).

        Raises
        ------
        WkvizError
            ``path`` holds no wkviz kernel store.
        """
        path = Path(path)
        if not path.is_dir() or not (path / _MANIFEST).exists():
            raise WkvizError(f"{path} is not a wkviz kernel store (no {_MANIFEST} in it); give the folder that "
                             "was passed as --store")
        manifest = cls._read_manifest(path / _MANIFEST)
        return cls(path, manifest["meta"], manifest, flush_seconds)

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WkvizError(f"cannot read the kernel-store manifest {path} ({exc}); delete the store directory "
                             "to start again") from None
        if not isinstance(manifest, dict) or manifest.get("format") not in (STORE_FORMAT, *_OLD_FORMATS):
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise WkvizError(f"{path} is not a {STORE_FORMAT} manifest (format {fmt!r}); use another --store path")
        return manifest

    @staticmethod
    def _create_arrays(path: Path, meta: dict) -> None:
        zarr = _zarr()
        from zarr.codecs import ZstdCodec

        group = zarr.open_group(str(path / _ZARR_DIR), mode="w")
        nu1, (t, tb) = meta["nu_max"] + 1, _tile_sides(meta)
        for kind in meta["kinds"]:
            tail = _tail_shape(kind)
            shape = (nu1, meta["n_A"], *tail, meta["n_B"], *tail)
            chunks = (nu1, min(t, meta["n_A"]), *tail, min(tb, meta["n_B"]), *tail)
            # NaN fill: a chunk that was never written reads as NaN, never as a plausible zero kernel; the zstd
            # frame checksum makes a damaged chunk fail to decode (the tile digest catches the rest)
            group.create_array(kind, shape=shape, chunks=chunks, dtype="float64", fill_value=np.nan,
                               compressors=ZstdCodec(level=0, checksum=True))

    # ------------------------------------------------------------------------------------------------------
    def tiles(self) -> list:
        """Every tile ``(bi, bj)`` of the request (upper triangle only when symmetric), row-major."""
        nbi, nbj = self.grid
        return [(i, j) for i in range(nbi) for j in range(nbj) if not (self.symmetric and j < i)]

    def _finished(self, tile) -> bool:
        return all(kind in self._digests.get(tile, ()) for kind in self.kinds)

    def missing_tiles(self) -> list:
        """Tiles the manifest does not list as finished (with a digest per kind)."""
        return [t for t in self.tiles() if not self._finished(t)]

    @property
    def n_tiles(self) -> int:
        return len(self.tiles())

    @property
    def n_done(self) -> int:
        return sum(1 for t in self.tiles() if self._finished(t))

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_tiles

    def write_counts(self) -> np.ndarray:
        """How many times the manifest records each tile as written, shape ``grid`` (a copy); a tile found
        damaged and recomputed counts twice."""
        return self._writes.copy()

    @property
    def runs(self) -> list:
        """One record per run: ``id``, ``started``, ``finished``, ``tiles_computed``, ``status``, ``seconds``
        and what the caller added (workers, scheduler)."""
        return [dict(r) for r in self._runs]

    def tile_rows(self, bi: int) -> slice:
        return slice(bi * self.tile_size, min((bi + 1) * self.tile_size, self.n_A))

    def tile_cols(self, bj: int) -> slice:
        return slice(bj * self.tile_size_B, min((bj + 1) * self.tile_size_B, self.n_B))

    def row_blocks(self, rows=None, kind: str = "K"):
        """``(row indices, K[:, rows_block, :])`` one tile row at a time (every column): what a streamed
        consumer (the sparse model's products, :meth:`wkviz.models.sparse.SparseKernelRidge.fit_blocks`)
        reads without holding the whole kernel. ``rows`` (structures of A, default all) keeps their order."""
        rows = self._index(rows, self.n_A, "rows")
        t = self.tile_size
        for s in range(0, len(rows), t):
            part = rows[s:s + t]
            yield np.arange(s, s + len(part)), self.read(rows=part, kind=kind)

    # ------------------------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        # One writer at a time: two runs appending to one manifest would lose each other's tiles.
        lock = self.path / _LOCK
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    host, pid = lock.read_text().split()
                except (OSError, ValueError):
                    host, pid = "", "0"
                if host == socket.gethostname() and not _pid_alive(int(pid)):
                    lock.unlink(missing_ok=True)  # left by a run that was killed: take it over
                    continue
                raise WkvizError(f"the kernel store {self.path} is being written by process {pid} on {host}; wait "
                                 f"for it to finish, or delete {lock} if that process no longer exists") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self._locked = True
            return

    def _release_lock(self) -> None:
        if getattr(self, "_locked", False):
            (self.path / _LOCK).unlink(missing_ok=True)
            self._locked = False

    def begin_run(self, **info) -> str:
        """Open a run record (appears in the manifest as ``status: running`` until :meth:`end_run`) and take
        the store's writer lock (refused with :class:`WkvizError` while another live process holds it)."""
        self._acquire_lock()
        run_id = uuid.uuid4().hex[:12]
        self._run = {"id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "tiles_computed": 0,
                     "status": "running", "t0": time.time(), **info}
        self._runs.append(self._run)
        self.flush(force=True)
        return run_id

    def end_run(self, status: str = "finished") -> None:
        """Close the current run record and flush the manifest."""
        if self._run is not None:
            self._run["status"] = status
            self._run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._run["seconds"] = round(time.time() - self._run.pop("t0"), 3)
            self._run = None
        try:
            self.flush(force=True)
        finally:
            self._release_lock()

    def write_tile(self, bi: int, bj: int, arrays: dict) -> None:
        """Write one finished tile (``arrays[kind]`` shaped like the tile's block) and record it.

        The chunk is on disk before the manifest can mention it; the manifest is flushed when
        ``flush_seconds`` have passed since the last flush.
        """
        if not (0 <= bi < self.grid[0] and 0 <= bj < self.grid[1]) or (self.symmetric and bj < bi):
            raise WkvizError(f"tile ({bi}, {bj}) is not part of this store's {self.grid} grid")
        rows, cols = self.tile_rows(bi), self.tile_cols(bj)
        blocks = {}
        for kind in self.kinds:
            block = np.asarray(arrays[kind], dtype=np.float64)
            tail = _tail_shape(kind)
            expect = (self.nu_max + 1, rows.stop - rows.start, *tail, cols.stop - cols.start, *tail)
            if block.shape != expect:
                raise WkvizError(f"tile ({bi}, {bj}) of {kind} has shape {block.shape}, expected {expect}")
            blocks[kind] = ((slice(None), rows, *([slice(None)] * len(tail)), cols), block)
        # a Ctrl-C meanwhile waits until the tile is written and recorded (signals_deferred says why)
        with signals_deferred():
            digests = {}
            self._digests.pop((bi, bj), None)  # rewritten: unfinished until the new digest is recorded
            for kind, (index, block) in blocks.items():
                self._group[kind][index] = block
                digests[kind] = tile_digest(kind, bi, bj, block)
            # the chunk is on disk before its digest can reach the manifest
            self._digests[(bi, bj)] = digests
            self._checked.add((bi, bj))
            self._writes[bi, bj] = min(int(self._writes[bi, bj]) + 1, 255)
            if self._run is not None:
                self._run["tiles_computed"] += 1
            self._dirty = True
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Rewrite the manifest atomically if tiles landed (and ``flush_seconds`` passed, unless forced)."""
        now = time.monotonic()
        if not force and (not self._dirty or now - self._last_flush < self.flush_seconds):
            return
        runs = [{k: v for k, v in r.items() if k != "t0"} for r in self._runs]
        meta = {**self.meta, "format": STORE_FORMAT}
        digests = {f"{i},{j}": d for (i, j), d in sorted(self._digests.items())}
        manifest = {"format": STORE_FORMAT, "meta": meta, "writes": _encode_counts(self._writes),
                    "digests": digests, "runs": runs}
        _atomic_write_json(self.path / _MANIFEST, manifest)
        self._dirty = False
        self._last_flush = now

    # ------------------------------------------------------------------------------------------------------
    def _index(self, idx, n, name):
        if idx is None:
            return np.arange(n)
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(f"{name} indices must lie in 0..{n - 1}")
        return idx

    def read(self, rows=None, cols=None, kind: str = "K", *, memory_budget: int | None = None) -> np.ndarray:
        """Kernel block between structures ``rows`` of A and ``cols`` of B (all when omitted).

        Only finished tiles may be read; in a symmetric store the lower triangle comes from the transposed
        upper tiles. ``K`` has shape ``(nu_max+1, len(rows), len(cols))``, ``K_vector``
        ``(nu_max+1, len(rows), 3, len(cols), 3)``, ``K_tensor`` with 5 components.

        Every tile read is checked against its digest first.

        Raises
        ------
        WkvizError
            A tile needed for the block is not finished yet (resume the computation first).
        InputError
            A tile needed for the block failed its check (damaged, missing or misplaced chunk): the message
            names the tiles and the fix; nothing is returned.
        MemoryBudgetError
            The block would exceed ``memory_budget`` bytes.
        """
        if kind not in self.kinds:
            raise InputError(f"this store holds {', '.join(self.kinds)}, not {kind}")
        rows = self._index(rows, self.n_A, "row")
        cols = self._index(cols, self.n_B, "column")
        tail = _tail_shape(kind)
        d = int(np.prod(tail)) if tail else 1
        nbytes = 8 * (self.nu_max + 1) * len(rows) * len(cols) * d * d
        if memory_budget is not None and nbytes > memory_budget:
            raise MemoryBudgetError(f"reading a {len(rows)} × {len(cols)} block of {kind} needs "
                                    f"{nbytes / 2**30:.2f} GiB, above the {memory_budget / 2**30:.2f} GiB budget; "
                                    "read smaller blocks")
        out = np.empty((self.nu_max + 1, len(rows), *tail, len(cols), *tail))
        t, tb = self.tile_size, self.tile_size_B  # equal in a symmetric store, whose tiles are transposed
        row_tiles, col_tiles = rows // t, cols // tb
        # each stored tile is read (and checked) once, also when a symmetric read needs it twice
        places = {}
        for bi in np.unique(row_tiles):
            for bj in np.unique(col_tiles):
                transpose = self.symmetric and bj < bi
                places.setdefault((bj, bi) if transpose else (bi, bj), []).append((bi, bj, transpose))
        unfinished = [tile for tile in places if not self._finished(tile)]
        if unfinished:
            raise self._unfinished_error(unfinished)
        bad = []
        for (ti, tj), where in places.items():
            stored, problem = self._read_tile(kind, ti, tj)
            if problem is not None:
                bad.append(((ti, tj), problem))
                continue
            for bi, bj, transpose in where:
                # K(B_j, A_i) = K(A_i, B_j)ᵀ, components swapped too (K_λ(b, a) = K_λ(a, b)ᵀ)
                block = stored.transpose((0, 3, 4, 1, 2) if tail else (0, 2, 1)) if transpose else stored
                r_sel = np.flatnonzero(row_tiles == bi)
                c_sel = np.flatnonzero(col_tiles == bj)
                ri = rows[r_sel] - bi * t
                ci = cols[c_sel] - bj * tb
                if tail:
                    out[:, r_sel[:, None], :, c_sel[None, :], :] = block[:, ri[:, None], :, ci[None, :], :]
                else:
                    out[:, r_sel[:, None], c_sel[None, :]] = block[:, ri[:, None], ci[None, :]]
        if bad:
            tiles = sorted(t for t, _ in bad)
            one = len(tiles) == 1
            raise InputError(
                f"{describe_tiles(tiles)} of {kind} in the kernel store {self.path} failed "
                f"{'its' if one else 'their'} check ({bad[0][1]}); run `python -m wkviz store verify {self.path} "
                f"--repair` and then the same request again (same --store) to recompute {'it' if one else 'them'}")
        return out

    def _unfinished_error(self, tiles) -> WkvizError:
        unverified = [t for t in tiles if self._writes[t] > 0]
        if unverified:
            return WkvizError(
                f"{describe_tiles(unverified)} of the kernel store {self.path} "
                f"{'has' if len(unverified) == 1 else 'have'} no valid checksum (written by an older wkviz, or "
                "marked damaged by `store verify --repair`); run the same request again with the same --store to "
                "recompute them")
        return WkvizError(f"{len(tiles)} of {self.n_tiles} tiles of the kernel store {self.path} "
                          f"{'is' if len(tiles) == 1 else 'are'} not computed yet ({describe_tiles(tiles)}); "
                          "resume the computation with the same --store")

    def _read_tile(self, kind: str, bi: int, bj: int):
        """(block, None) for a finished tile whose chunk matches its digest, else (None, what is wrong)."""
        lead = [slice(None)] * len(_tail_shape(kind))
        try:
            with signals_deferred():
                block = np.asarray(self._group[kind][(slice(None), self.tile_rows(bi), *lead, self.tile_cols(bj))])
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a chunk that does not decode (truncated, garbled zstd frame)
            why = f"{type(exc).__name__}: {str(exc)[:100]}"
            return None, f"its {kind} chunk is damaged and does not decode ({why})"
        if tile_digest(kind, bi, bj, block) != self._digests.get((bi, bj), {}).get(kind):
            nan = np.isnan(block).all()
            return None, (f"its {kind} chunk is missing" if nan
                          else f"its {kind} chunk failed its checksum (damaged, or another tile's chunk)")
        return block, None

    # ------------------------------------------------------------------------------------------------------
    def check_tiles(self, tiles=None) -> list:
        """Read every finished tile (or ``tiles``) of every kind and compare it with its digest.

        Returns
        -------
        list of ((bi, bj), str)
            The tiles that fail, with what is wrong; tiles the manifest records as written but without a
            digest (stores of wkviz before tile digests) are listed as unverified.
        """
        bad = []
        for tile in self.tiles() if tiles is None else tiles:
            if not self._finished(tile):
                if self._legacy and self._writes[tile] > 0:
                    bad.append((tile, "has no checksum (written by an older wkviz)"))
                continue
            for kind in self.kinds:
                _, problem = self._read_tile(kind, *tile)
                if problem is not None:
                    bad.append((tile, problem))
                    break
            else:
                self._checked.add(tile)
        return bad

    def forget_tiles(self, tiles) -> None:
        """Mark ``tiles`` as missing (their digests dropped), so the next run recomputes them; the manifest
        changes at the next flush."""
        for tile in tiles:
            self._digests.pop(tuple(tile), None)
            self._checked.discard(tuple(tile))
        self._dirty = True

    def recheck(self, note=None) -> list:
        """Before finished tiles are reused: check those not yet checked by this object, mark the bad ones
        missing and tell ``note`` (one line per problem) that they will be recomputed.

        Returns
        -------
        list of ((bi, bj), str)
            The tiles found bad (now missing).
        """
        todo = [t for t in self.tiles() if t not in self._checked
                and (self._finished(t) or (self._legacy and self._writes[t] > 0))]
        bad = self.check_tiles(todo)
        if bad:
            self.forget_tiles([t for t, _ in bad])
            by_problem = {}
            for tile, problem in bad:
                by_problem.setdefault(problem, []).append(tile)
            for problem, tiles in by_problem.items():
                msg = (f"{describe_tiles(tiles)} of the kernel store {self.path}: {problem}; recomputing "
                       f"{'it' if len(tiles) == 1 else 'them'}")
                if note is not None:
                    note(msg)
                else:
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return bad

    def repair(self, tiles) -> None:
        """Mark ``tiles`` missing on disk (under the writer lock), so the next run recomputes them."""
        self._acquire_lock()
        try:
            self.forget_tiles(tiles)
            self.flush(force=True)
        finally:
            self._release_lock()

    def bytes_missing(self) -> int:
        """Bytes (dense float64) of the tiles still to be written."""
        return _tile_bytes(self.meta, self.grid, self.missing_tiles())

    def to_result(self, *, memory_budget: int | None = None):
        """The whole kernel as a :class:`wkviz.engine.kernels.KernelResult` (every tile must be finished)."""
        from ..engine.kernels import KernelResult

        missing = self.missing_tiles()
        if missing:
            raise self._unfinished_error(missing)
        arrays = {kind: self.read(kind=kind, memory_budget=memory_budget) for kind in self.kinds}
        seconds = sum(r.get("seconds", 0.0) for r in self._runs)
        return KernelResult(K=arrays["K"], species=np.asarray(self.meta["species"], dtype=np.int64),
                            hypers=self.hypers, n_atoms_A=np.asarray(self.meta["n_atoms_A"], dtype=np.int64),
                            n_atoms_B=np.asarray(self.meta["n_atoms_B"], dtype=np.int64),
                            K_vector=arrays.get("K_vector"), K_tensor=arrays.get("K_tensor"), seconds=seconds)

    def output_bytes(self) -> int:
        """Bytes of the full (dense) kernel arrays of the request."""
        total = 0
        for kind in self.kinds:
            tail = _tail_shape(kind)
            d = int(np.prod(tail)) if tail else 1
            total += 8 * (self.nu_max + 1) * self.n_A * self.n_B * d * d
        return total

    def __repr__(self) -> str:
        return (f"KernelStore({str(self.path)!r}, key={self.key}, {self.n_A}×{self.n_B}"
                f"{' symmetric' if self.symmetric else ''}, tiles {self.n_done}/{self.n_tiles} of {self.tile_size}"
                f"{'' if self.tile_size_B == self.tile_size else f' × {self.tile_size_B}'})")
