"""What makes a kernel store trustworthy: a digest per tile, creation by atomic rename, a disk check up front.

Digest. Every tile of every kernel kind gets a BLAKE2b digest over its kind, its grid coordinates ``(bi, bj)``,
its shape and its values as little-endian float64 bytes. The digest is recorded in the store's manifest when
the tile is written and recomputed from the chunk whenever the tile is read. A flipped byte, a deleted chunk
(it reads as the NaN fill value), a truncated chunk (the zstd frame no longer decodes) and a chunk copied over
its neighbour (other values, and other coordinates in the digest) all fail the check, so a damaged tile is
reported and recomputed, never returned.

Creation. A new store is built in a hidden folder beside its path and renamed into place with one
``os.rename``: other processes see either no store or a complete one. Of two processes creating the same store
at once, the rename of the second fails (the target is no longer empty) and it opens the winner's store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import InputError, WkvizError

__all__ = ["tile_digest", "describe_tiles", "format_bytes", "check_free_disk", "create_by_rename", "disk_free_at"]


def tile_digest(kind: str, bi: int, bj: int, block: np.ndarray) -> str:
    """BLAKE2b-128 digest of one tile: kind, grid coordinates, shape and float64 values (little-endian)."""
    values = np.ascontiguousarray(block, dtype="<f8")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"wkviz-tile|{kind}|{int(bi)}|{int(bj)}|{values.shape}|".encode("ascii"))
    h.update(memoryview(values).cast("B"))
    return h.hexdigest()


def describe_tiles(tiles, limit: int = 6) -> str:
    """``tile (3, 4)`` or ``tiles (0, 1), (2, 2) and 5 more``."""
    tiles = [(int(i), int(j)) for i, j in tiles]
    shown = ", ".join(f"({i}, {j})" for i, j in tiles[:limit])
    more = f" and {len(tiles) - limit} more" if len(tiles) > limit else ""
    return f"tile{'s' if len(tiles) != 1 else ''} {shown}{more}"


def format_bytes(n: float) -> str:
    """``12.3 GiB``, ``2.40 TiB``: binary units, three significant figures."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover - the loop returns at TiB


def disk_free_at(path) -> int:
    """Free bytes on the file system that holds ``path`` (its nearest existing ancestor)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def check_free_disk(path, need: int, what: str, disk_free=None) -> None:
    """Refuse, with the numbers, a store that needs more disk than is free at ``path``.

    Parameters
    ----------
    path : str or Path
    need : int
        Bytes the tiles still to be written need (float64, uncompressed: kernels barely compress).
    what : str
        The request in words, for the message.
    disk_free : callable, optional
        ``disk_free(path) -> bytes``; :func:`disk_free_at` by default (tests pass their own).

    Raises
    ------
    InputError
    """
    free = int((disk_free or disk_free_at)(path))
    if need > free:
        raise InputError(
            f"the kernel store for {what} needs about {format_bytes(need)} of disk but only {format_bytes(free)} "
            f"are free at {path}; use fewer structures, a smaller --nu-max or no --tensor-rank, or put --store on "
            "a disk with more room")


class LostRace(Exception):
    """Another process renamed its new store into place first."""


def create_by_rename(path: Path, build) -> None:
    """Build a directory with ``build(tmp_dir)`` beside ``path`` and rename it to ``path`` in one step.

    ``path`` may be missing or an empty directory (which the rename replaces).

    Raises
    ------
    LostRace
        ``path`` became a non-empty directory meanwhile (another process created the store first).
    InputError
        The folder cannot be created (permissions, a read-only or full disk).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            build(tmp)
        except OSError as exc:
            raise InputError(f"cannot create the kernel store at {path} ({exc.strerror or exc}); choose a "
                             "directory you can write to") from None
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and path.is_dir():
                raise LostRace from None
            if exc.errno == errno.ENOTDIR:
                raise WkvizError(f"--store {path} is a file, not a directory; give a new or empty directory for "
                                 "the kernel store") from None
            raise InputError(f"cannot create the kernel store at {path} ({exc.strerror or exc}); choose a "
                             "directory you can write to") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
