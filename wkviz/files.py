"""Writing output files so that nothing is ever half-written: a temporary file beside the target, then a rename.

Every file wkviz writes for the user (``--out K.npz``, prediction and learning-curve CSVs) goes through
:func:`atomic_write`: the data go to a hidden temporary file in the same directory, are flushed to disk
(``fsync``) and only then renamed over the target with ``os.replace``, which is atomic on POSIX file systems.
A reader therefore sees either the previous file or the complete new one — never a truncated file, even when
the process is killed (``kill -9``) or the disk fills up halfway. On an error or Ctrl-C the temporary file is
removed; after ``kill -9`` it stays behind as ``.<name>.<random>.tmp`` and the target is untouched.

:func:`check_output_path` refuses an output that cannot be written (a folder, a missing or read-only directory,
a name too long for the file system) before any work is done, with one sentence naming the problem and the fix.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = ["NAME_MAX", "atomic_write", "check_output_path", "describe_os_error", "display_name", "write_atomic_bytes",
           "write_atomic_text"]

#: Longest file name (one path component) most file systems accept, in bytes.
NAME_MAX = 255


def describe_os_error(exc: OSError, path=None, action: str = "write") -> str:
    """One sentence for an ``OSError`` met while reading or writing ``path``: what happened and the fix.

    Parameters
    ----------
    exc : OSError
    path : str or os.PathLike, optional
        The file concerned (default: ``exc.filename``).
    action : str
        ``"write"`` or ``"read"``.

    Returns
    -------
    str
    """
    where = os.fspath(path) if path is not None else (exc.filename if exc.filename is not None else "a file")
    where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
    fixes = {
        errno.ENOSPC: "no space is left on the device; free some space or choose another location",
        errno.EDQUOT: "the disk quota is exhausted; free some space or choose another location",
        errno.EACCES: "permission denied; check the permissions of the file and its directory",
        errno.EPERM: "the operation is not permitted; check the permissions of the file and its directory",
        errno.EROFS: "the file system is read-only; choose another location",
        errno.EISDIR: "it is a directory; give a file path",
        errno.ENOTDIR: "a part of the path is not a directory; check the path",
        errno.ENOENT: "it does not exist; check the path",
        errno.ENAMETOOLONG: f"the name is too long (at most {NAME_MAX} bytes per name); use a shorter name",
        errno.EIO: "the device reported an input/output error; check the disk",
    }
    why = fixes.get(exc.errno, f"{exc.strerror or exc}; check the path and the disk")
    return f"cannot {action} {_short(where)}: {why}"


def display_name(name, limit: int = 80) -> str:
    """A file name or path as a message shows it: control characters (a NUL byte, a newline) as ``?``, and a
    name over ``limit`` characters shortened in the middle with its length in bytes (a 300-byte name would
    bury the sentence around it).

    Parameters
    ----------
    name : str, bytes or os.PathLike
    limit : int

    Returns
    -------
    str
    """
    text = os.fsdecode(os.fspath(name)) if not isinstance(name, str) else name
    text = "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in text)
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogateescape"))
    return f"{text[: limit // 2]}…{text[-(limit // 4):]} ({size} bytes)"


_short = display_name


def _resolved(path) -> Path:
    """``path`` with symlinks followed, so that the file a link points to is replaced, not the link."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\x00" in text:
        raise InputError(f"the output name {_short(text)} contains a NUL byte; give a plain file name")
    if not text.strip():
        raise InputError("the output path is empty; give a file name")
    return Path(os.path.realpath(text))


def check_output_path(path, flag: str = "--out", example: str = "out") -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
    flag : str
        How the path was given (``"--out"``), named in the message.
    example : str
        A file name to suggest inside a folder given by mistake (``"K.npz"``).

    Returns
    -------
    pathlib.Path
        The path the data will land in (symlinks followed).

    Raises
    ------
    InputError
        The path is a folder or another non-regular file, its directory is missing, not a directory or not
        writable, or a name in it is longer than the file system allows — one sentence each, with the fix.
    """
    target = _resolved(path)
    shown = _short(os.fspath(path))
    for part in target.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise InputError(f"{flag} {shown}: the name '{_short(part, 40)}' is {len(os.fsencode(part))} bytes "
                             f"long, over the {NAME_MAX}-byte limit of file names; use a shorter name")
    if target.is_dir():
        raise InputError(f"{flag} {shown} is a folder; give a file name inside it, e.g. {flag} "
                         f"{_short(os.path.join(os.fspath(path), example))}")
    if target.exists() and not target.is_file():
        raise InputError(f"{flag} {shown} exists and is not a regular file; give the path of a file")
    folder = target.parent
    if not folder.exists():
        raise InputError(f"{flag} {shown}: the folder {_short(str(folder))} does not exist; create it first or "
                         "choose another location")
    if not folder.is_dir():
        raise InputError(f"{flag} {shown}: {_short(str(folder))} is not a folder; check the path")
    # A real probe, not os.access: it also catches read-only mounts and pseudo file systems (/proc), and
    # answers correctly for root, whom permission bits do not stop.
    try:
        fd, probe = tempfile.mkstemp(prefix=".wkviz-probe-", dir=folder)
    except OSError as exc:
        raise InputError(f"{flag} {shown}: cannot create files in {_short(str(folder))} "
                         f"({exc.strerror or exc}); choose a folder you can write to") from None
    os.close(fd)
    os.unlink(probe)
    return target


def _mode_for(target: Path) -> int:
    """Permission bits for the new file: those of the file it replaces, else the usual ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None):
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)place. Its name is used exactly as given (no extension is added).
    mode : {"wb", "w"}
        Binary or text.
    encoding, newline : str, optional
        For text mode, as in :func:`open` (``encoding`` defaults to UTF-8).

    Yields
    ------
    file object
        Write the content to it; do not close it.

    Raises
    ------
    InputError
        The file cannot be written (no space left, permission denied, a folder, ...), in one sentence. The
        previous content of ``path``, if any, is untouched, and the temporary file is removed.

    Examples
    --------
    >>> with atomic_write("K.npz") as fh:            # doctest: +SKIP
    ...     np.savez_compressed(fh, K=K)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = _resolved(path)
    if target.is_dir():
        raise InputError(f"cannot write {_short(os.fspath(path))}: it is a folder; give a file path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(describe_os_error(exc, path)) from None
    try:
        if "b" in mode:
            fh = os.fdopen(fd, mode)
        else:
            fh = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException as exc:
        # Ctrl-C, a full disk, a bug in the writer: the previous file stays as it was, no debris is left
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise InputError(describe_os_error(exc, path)) from exc
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (the directory entry), where the platform allows it."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_atomic_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_atomic_text(path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
