"""Reading structure files safely: size limits, decompression, a line-by-line prescan of (ext)xyz.

Nothing here unpickles or evaluates user data: files are parsed by ase's readers, and the old pickle-based ase
trajectory format is refused.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import NAME_MAX, describe_os_error
from ..files import display_name as _shown
from .targets import _PER_ATOM_CALC, _voigt_to_full
from .validate import _MAX_LISTED, _fmt_list, _problems_error, validate_structures

__all__ = ["DEFAULT_MAX_BYTES", "read_structures"]

#: Largest file accepted by :func:`read_structures`, applied both to the bytes as given and to their
#: uncompressed content (so a small .gz cannot expand without bound).
DEFAULT_MAX_BYTES = 200 * 2**20

_BINARY_OK = {"traj"}  # ase's ULM container (JSON header + raw arrays); no pickle involved.


def _decompress(data: bytes, name: str, max_bytes: int) -> tuple[bytes, str]:
    """Undo gzip/bz2/xz compression (recognised by magic bytes), refusing output beyond ``max_bytes``."""
    if data[:2] == b"\x1f\x8b":
        kind, strip = "gzip", (".gz", ".gzip")
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif data[:3] == b"BZh":
        kind, strip = "bzip2", (".bz2",)
        dec = bz2.BZ2Decompressor()
    elif data[:6] == b"\xfd7zXZ\x00":
        kind, strip = "xz", (".xz",)
        dec = lzma.LZMADecompressor()
    else:
        # A name that promises compression on plain content: drop the suffix so ase reads it as text.
        for ext in (".gz", ".gzip", ".bz2", ".xz"):
            if name.lower().endswith(ext):
                return data, name[: -len(ext)]
        return data, name
    new = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "bzip2": bz2.BZ2Decompressor,
           "xz": lzma.LZMADecompressor}[kind]
    chunks, size, rest = [], 0, data
    try:
        # Concatenated members (e.g. `cat a.gz b.gz`) are legal; decompress each, never past the limit.
        while rest:
            room = max_bytes + 1 - size
            out = dec.decompress(rest, room) if kind == "gzip" else dec.decompress(rest, max_length=room)
            chunks.append(out)
            size += len(out)
            if size > max_bytes:
                break
            if not dec.eof:
                raise InputError(f"{name} is a truncated {kind} file; upload it again or upload the uncompressed file.")
            rest = dec.unused_data
            if rest.strip(b"\x00"):
                dec = new()
            else:
                rest = b""
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise InputError(f"{name} is not a valid {kind} file ({exc}); upload the uncompressed file instead.") from None
    out = b"".join(chunks)
    if len(out) > max_bytes:
        raise InputError(
            f"{name} uncompresses to more than {max_bytes / 2**20:.0f} MiB, the limit for one file; split it or "
            "raise max_bytes."
        )
    for ext in strip:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return out, name


def _looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    text_bytes = bytes(range(32, 127)) + b"\n\r\t\f\b"
    odd = len(head.translate(None, text_bytes))
    # UTF-8 text (Å, comments in other languages) has high bytes but decodes cleanly.
    if odd and odd / max(len(head), 1) > 0.10:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the 8 KiB boundary is still text.
            return exc.start < len(head) - 4
    return False


_PROPS_RE = re.compile(r'Properties=(["\']?)([^\s"\']+)\1', re.IGNORECASE)
_TOKEN_RE = re.compile(r'"[^"]*"|\'[^\']*\'|\S+')


def _is_int(tok: str) -> bool:
    return tok.isdigit() or (tok[:1] == "+" and tok[1:].isdigit())


def _prescan_xyz(text: str, name: str) -> None:
    """Check the frame structure of an (ext)xyz file line by line, for messages ase cannot give.

    ase's reader stops at the first problem with a terse message and silently accepts atom lines with
    extra columns; this scan reports wrong atom counts, unknown element symbols, non-numeric coordinates
    and ragged columns with structure and line numbers.
    """
    from ase.data import atomic_numbers

    lines = text.splitlines()
    problems: list[str] = []
    i, frame, n_lines = 0, 0, len(lines)
    prev_start = prev_natoms = 0
    while i < n_lines and len(problems) < _MAX_LISTED:
        if not lines[i].strip():
            if all(not ln.strip() for ln in lines[i:]):
                break
            problems.append(f"line {i + 1}: blank line where the atom count of structure {frame} was expected")
            break
        head = lines[i].split()
        if len(head) != 1 or not _is_int(head[0]):
            if frame and len(head) >= 4 and head[0] in atomic_numbers:
                problems.append(
                    f"structure {frame - 1} (line {prev_start + 1}) declares {prev_natoms} atoms but more atom lines "
                    f"follow (line {i + 1}); fix the count"
                )
                break
            where = f"structure {frame}" if frame else "the first structure"
            problems.append(
                f"line {i + 1}: expected the number of atoms of {where}, found '{lines[i].strip()[:40]}'; "
                "an xyz frame is a count line, a comment line, then one line per atom"
            )
            break
        natoms = int(head[0])
        comment = lines[i + 1] if i + 1 < n_lines else None
        if comment is None:
            problems.append(f"structure {frame} (line {i + 1}): the file ends before its comment line")
            break
        species_col, pos_col, n_cols = 0, 1, None
        m = _PROPS_RE.search(comment)
        if m:
            parts = m.group(2).split(":")
            if len(parts) % 3 == 0:
                col = 0
                n_cols = 0
                for k in range(0, len(parts), 3):
                    pname, ncol = parts[k].lower(), int(parts[k + 2]) if parts[k + 2].isdigit() else 1
                    if pname == "species":
                        species_col = col
                    elif pname == "pos":
                        pos_col = col
                    col += ncol
                n_cols = col
        first = i + 2
        got = 0
        widths = set()
        stop = False
        for j in range(first, min(first + natoms, n_lines)):
            line = lines[j]
            toks = _TOKEN_RE.findall(line) if ('"' in line or "'" in line) else line.split()
            if len(toks) == 1 and _is_int(toks[0]) or not toks:
                problems.append(
                    f"structure {frame} (line {i + 1}) declares {natoms} atoms but only {got} atom line{'s' if got != 1 else ''} "
                    "follow "
                    f"(line {j + 1} is {'blank' if not toks else 'the start of another structure'}); fix the count"
                )
                stop = True
                break
            got += 1
            if len(toks) < max(species_col, pos_col + 2) + 1:
                problems.append(
                    f"structure {frame}, line {j + 1}: an atom line needs an element symbol and x y z, "
                    f"found '{line.strip()[:40]}'"
                )
                stop = True
                break
            widths.add(len(toks))
            sym = toks[species_col]
            if sym not in atomic_numbers and not _is_int(sym):
                hint = ""
                cap = sym[:1].upper() + sym[1:].lower()
                if cap in atomic_numbers:
                    hint = f" (did you mean '{cap}'? symbols are case-sensitive)"
                problems.append(f"structure {frame}, line {j + 1}: unknown element symbol '{sym[:20]}'{hint}")
            for tok in toks[pos_col:pos_col + 3]:
                try:
                    float(tok)
                except ValueError:
                    problems.append(f"structure {frame}, line {j + 1}: coordinate '{tok[:20]}' is not a number")
                    break
        if stop:
            break
        if got < natoms:
            problems.append(
                f"structure {frame} (line {i + 1}) declares {natoms} atoms but the file ends after {got} atom "
                f"line{'s' if got != 1 else ''}; "
                "fix the count or the truncated file"
            )
            break
        if n_cols is not None and widths and widths != {n_cols}:
            bad = sorted(w for w in widths if w != n_cols)
            problems.append(
                f"structure {frame} (line {i + 1}): its Properties declare {n_cols} columns but some atom lines have "
                f"{_fmt_list(bad)}; every atom line must have the declared columns"
            )
        elif n_cols is None and len(widths) > 1:
            problems.append(
                f"structure {frame} (line {i + 1}): atom lines have different numbers of columns "
                f"({_fmt_list(sorted(widths))}); every atom line must have the same columns"
            )
        prev_start, prev_natoms = i, natoms
        i = first + natoms
        frame += 1
    if problems:
        raise _problems_error([f"{name}, {p}" for p in problems])


def _copy_calc_results(atoms) -> None:
    """Copy what a file reader put in ``atoms.calc.results`` into ``info``/``arrays`` so it survives copies."""
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None)
    if not results:
        return
    n = len(atoms)
    for key, value in results.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            continue
        if key in ("stress",) and arr.shape == (6,):
            arr = _voigt_to_full(arr)
        if arr.ndim >= 1 and arr.shape[0] == n and key in _PER_ATOM_CALC:
            if key not in atoms.arrays:
                atoms.arrays[key] = np.array(arr, dtype=float)
        elif key not in atoms.info:
            atoms.info[key] = float(arr) if arr.ndim == 0 else np.array(arr, dtype=float)


def _checked_name(name, what: str) -> str:
    """``name`` as text, refusing what no file system accepts: a NUL byte, a single name over 255 bytes."""
    text = os.fsdecode(name) if isinstance(name, bytes) else os.fspath(name)
    if not isinstance(text, str):
        raise InputError(f"the {what} must be text, got {type(name).__name__}.")
    if "\x00" in text:
        raise InputError(f"the {what} {_shown(text)} contains a NUL byte, which no file name "
                         "may hold; rename the file.")
    for part in Path(text).parts:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise InputError(f"the {what} {_shown(part)} is too long: a file name may have at most {NAME_MAX} "
                             "bytes; rename the file.")
    return text


def read_structures(source, *, filename=None, max_bytes=DEFAULT_MAX_BYTES, index=":"):
    """Read and validate structures from a file path or from the bytes of an upload.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A path, or the content of a file (e.g. a Streamlit upload). Compressed content (gzip, bzip2, xz)
        is recognised by its magic bytes.
    filename : str, optional
        With bytes, the original file name; its extension (after stripping ``.gz``) tells ase the format
        (``"upload.xyz.gz"``, ``"POSCAR"``, ``"x.cif"``). Without it the format is guessed from the content.
    max_bytes : int
        Largest accepted size, for the bytes as given and for their uncompressed content.
    index : str or int
        Which frames to read, in ase's syntax (``":"`` all, ``"-1"`` the last, ``"0:10"``).

    Returns
    -------
    list of ase.Atoms
        Validated structures. Energies, forces, stresses and other results that ase stores on a
        calculator are also copied into ``atoms.info`` / ``atoms.arrays`` (a 6-component Voigt stress
        becomes a 3×3 matrix).

    Raises
    ------
    InputError
        Missing, empty, binary, too large, malformed or physically impossible input, with one sentence
        per problem (see :func:`validate_structures`).
    """
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    if filename is not None:
        filename = _checked_name(filename, "file name")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = os.path.basename(filename) if filename else "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(_checked_name(source, "path"))
        name = path.name
        try:
            if not path.exists():
                raise InputError(f"{_shown(str(path))} does not exist; check the path.")
            if path.is_dir():
                raise InputError(f"{_shown(str(path))} is a directory; give a structure file.")
            if os.fspath(source).endswith(("/", os.sep)):  # Path() drops the slash; the shell would not
                raise InputError(f"{_shown(os.fspath(source))} ends with a slash but is a file, not a folder; "
                                 "drop the slash.")
            if not path.is_file():
                # a FIFO would block and /dev/zero never end: only regular files are read
                raise InputError(f"{_shown(str(path))} is not a regular file (a device, pipe or socket); give a "
                                 "structure file.")
            size = path.stat().st_size
            if size > max_bytes:
                raise InputError(
                    f"{_shown(name)} is {size / 2**20:.1f} MiB, above the {max_bytes / 2**20:.0f} MiB limit for one "
                    "file; split it or raise max_bytes."
                )
            data = path.read_bytes()
        except OSError as exc:  # permission denied, an I/O error, a special file
            raise InputError(describe_os_error(exc, path, action="read") + ".") from None
        if filename:
            name = os.path.basename(filename)
    else:
        raise InputError(f"cannot read structures from a {type(source).__name__}; give a file path or bytes.")

    if len(data) > max_bytes:
        raise InputError(
            f"{name} is {len(data) / 2**20:.1f} MiB, above the {max_bytes / 2**20:.0f} MiB limit for one file; "
            "split it or raise max_bytes."
        )
    data, inner_name = _decompress(data, name, max_bytes)
    if not data.strip():
        raise InputError(f"{name} is empty; it contains no structures.")
    if data.startswith(b"PickleTrajectory"):
        raise InputError(
            f"{name} is an old pickle-based ase trajectory, which wkviz will not unpickle; convert it with "
            "`python -m ase.io.trajectory` on a machine you trust, or export extxyz."
        )

    with tempfile.TemporaryDirectory(prefix="wkviz-read-") as tmp:
        # ase guesses formats from the basename (POSCAR, *.cif) and reads by path; give it the
        # uncompressed bytes under the original name.
        tmp_path = Path(tmp) / (inner_name if inner_name not in ("", ".", "..") else "upload")
        tmp_path.write_bytes(data)
        try:
            fmt = filetype(str(tmp_path), read=True)
        except UnknownFileTypeError:
            fmt = None
        if fmt is not None and fmt not in ioformats:
            fmt = None  # ase falls back to the bare extension, which may name no reader at all
        if fmt == "xyz":
            fmt = "extxyz"  # extxyz reads plain xyz too and keeps comment-line properties
        binary = _looks_binary(data)
        if binary and fmt not in _BINARY_OK:
            raise InputError(
                f"{name} looks like a binary file, not a text structure file; upload extxyz, xyz, cif, POSCAR, "
                "pdb or an ase .traj file."
            )
        if fmt is None:
            raise InputError(
                f"cannot tell the file format of {name}; give it an extension ase knows (.xyz, .extxyz, .cif, "
                ".pdb, .traj, .gz of these) or the name POSCAR/CONTCAR."
            )
        if fmt == "traj" and not data.startswith(b"- of Ulm"):
            raise InputError(f"{name} is not an ase ULM trajectory; export it as extxyz instead.")
        if fmt == "extxyz":
            _prescan_xyz(data.decode("utf-8", errors="replace"), name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frames = ase.io.read(str(tmp_path), index=index, format=fmt)
        except InputError:
            raise
        except KeyError as exc:
            raise InputError(f"{name}: unknown element symbol or missing field {exc}; check the file.") from None
        except Exception as exc:  # ase readers raise many types; the user needs the message, not a traceback
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{name} could not be read as {fmt}: {msg[:200]}.") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        if index in (":", slice(None)):
            raise InputError(f"{name} contains no structures that ase could read as {fmt}; check the file.")
        raise InputError(f"{name}: index {index!r} selects no structures.")
    for atoms in frames:
        _copy_calc_results(atoms)
    validate_structures(frames, name=name)
    return frames

