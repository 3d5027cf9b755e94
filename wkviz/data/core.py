"""Structures in, validated; targets described; splits; the bundled sample data.

Everything a user can get wrong about their data is caught here and raised as one
:class:`~wkviz.errors.InputError` whose message has one sentence per problem, naming the structure
(numbered from 0, as in Python and in every CSV wkviz writes) and, for text files, the line (numbered
from 1, as editors show it). Nothing here unpickles or evaluates user data: files are parsed by ase's
readers, and the old pickle-based ase trajectory format is refused.

Units follow ase: lengths Å, energies eV, forces eV/Å, stresses eV/Å³, charges e.
"""

from __future__ import annotations

import bz2
import lzma
import math
import os
import re
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "HARTREE_EV",
    "MIN_DISTANCE",
    "SAMPLE_DIR",
    "SAMPLE_SETS",
    "TargetInfo",
    "read_structures",
    "validate_structures",
    "describe_targets",
    "get_target",
    "random_split",
    "fps_split",
    "cover_elements",
    "summarize",
    "composition_counts",
    "charge_dipole",
    "load_sample",
    "load_qm9",
    "load_qm9_split",
]

#: Largest file accepted by :func:`read_structures`, applied both to the bytes as given and to their
#: uncompressed content (so a small .gz cannot expand without bound).
DEFAULT_MAX_BYTES = 200 * 2**20

#: eV per Hartree, CODATA 2018. ase.units.Hartree is CODATA 2014 in ase 3.2x (27.211386024 eV); the two
#: differ by 8e-9 relative, about 0.1 meV on a QM9 U0.
HARTREE_EV = 27.211386245988

#: Two atoms closer than this (Å) are almost certainly a duplicated atom or a unit mistake (nm, bohr).
MIN_DISTANCE = 0.1

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"

SAMPLE_SETS = {
    "qm9": {
        "file": "qm9_subset.extxyz.gz",
        "title": "QM9 subset (2,000 small organic molecules)",
        "description": (
            "2,000 molecules drawn with seed 0 from QM9 (H, C, N, O, F; up to 9 heavy atoms; B3LYP/6-31G(2df,p)), "
            "taken from the qm9pack package. Targets: U0, homo, lumo, gap, U, H, G, zpve (eV); dipole_norm (D); "
            "alpha_iso (bohr³); cv (cal/mol/K); per-atom Mulliken charges 'mulliken' (e) and their dipole "
            "'mulliken_dipole' (e·Å, a rotating 3-vector)."
        ),
    },
    "gold": {
        "file": "gold_emt.extxyz.gz",
        "title": "Gold clusters and bulk, EMT (500 structures)",
        "description": (
            "300 Au clusters of 10-40 atoms and 200 rattled, strained periodic fcc cells of 4-32 atoms, labelled "
            "with ase's EMT potential: 'energy' (eV), per-atom 'forces' (eV/Å), 'stress' (3×3, eV/Å³, bulk only); "
            "'config_type' is 'cluster' or 'bulk'."
        ),
    },
    "teaching": {
        "file": "teaching.extxyz",
        "title": "Body-order teaching set (degenerate pairs)",
        "description": (
            "Pairs of environments (A, B) whose 3-body (ν=2) correlations are identical although the structures "
            "differ: a ν=2 kernel cannot tell them apart, a ν=3 kernel can. info 'pair', 'label', 'center' "
            "(index of the degenerate environment), 'description'."
        ),
    },
}

# Keys of per-structure info that are bookkeeping, never targets.
_METADATA_KEYS = {"pair", "center", "qm9_index", "Natoms", "cutoff", "nneightol", "config_type", "label"}
# ase arrays that describe the structure itself.
_STRUCTURE_ARRAYS = {"positions", "numbers", "tags", "masses", "momenta", "initial_magmoms", "initial_charges"}

_KNOWN_UNITS = {
    "energy": "eV", "free_energy": "eV", "U0": "eV", "U": "eV", "H": "eV", "G": "eV", "zpve": "eV",
    "homo": "eV", "lumo": "eV", "gap": "eV", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å",
    "mulliken_dipole": "e·Å", "mulliken": "e", "charges": "e", "dipole_norm": "D", "alpha_iso": "bohr³",
    "cv": "cal/(mol·K)", "magmom": "μB", "magmoms": "μB", "energies": "eV",
}
_EXTENSIVE = {"energy", "free_energy", "U0", "U", "H", "G", "zpve", "cv", "alpha_iso", "mulliken_dipole", "dipole",
              "magmom"}
_INTENSIVE = {"homo", "lumo", "gap", "stress", "dipole_norm"}

_BINARY_OK = {"traj"}  # ase's ULM container (JSON header + raw arrays); no pickle involved.
_MAX_LISTED = 10


@dataclass(frozen=True)
class TargetInfo:
    """What can be learned from a key of a data set.

    Attributes
    ----------
    key : str
        Name to pass to :func:`get_target` (``"CS[1]"`` for column 1 of a multi-column per-atom array).
    kind : {"scalar", "vector", "tensor", "atomic"}
        Per-structure scalar; per-structure 3-vector (λ=1); per-structure 3×3 tensor (λ=0 ⊕ λ=2 when
        symmetric); per-atom scalar.
    unit : str
        Unit when known from the key's name (``"eV"``, ``"e·Å"``...), else ``""``.
    extensive : bool
        Whether the target grows with the number of atoms (fit with a sum kernel) or not (mean kernel).
        From the key's name when known, otherwise guessed from its correlation with the number of atoms.
    source : {"info", "arrays", "calc"}
        Where it was found: ``atoms.info``, ``atoms.arrays`` or the results of ``atoms.calc`` (energies,
        forces and stresses that ase puts there when reading a file).
    n_valid : int
        Number of structures in which it is present and finite.
    """

    key: str
    kind: str
    unit: str
    extensive: bool
    source: str
    n_valid: int


def _problems_error(problems):
    """One InputError listing at most ``_MAX_LISTED`` problems, each a sentence."""
    shown = [p if p.endswith(".") else p + "." for p in problems[:_MAX_LISTED]]
    more = len(problems) - len(shown)
    text = " ".join(shown)
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''}.)"
    return InputError(text)


def _fmt_list(idx, limit=12):
    idx = list(idx)
    s = ", ".join(str(i) for i in idx[:limit])
    if len(idx) > limit:
        s += f", … ({len(idx)} in all)"
    return s


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------

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


_PER_ATOM_CALC = {"forces", "energies", "stresses", "charges", "magmoms", "born_effective_charges"}


def _voigt_to_full(v):
    xx, yy, zz, yz, xz, xy = np.asarray(v, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


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

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = os.path.basename(filename) if filename else "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path.")
        if path.is_dir():
            raise InputError(f"{path} is a directory; give a structure file.")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(
                f"{name} is {size / 2**20:.1f} MiB, above the {max_bytes / 2**20:.0f} MiB limit for one file; "
                "split it or raise max_bytes."
            )
        data = path.read_bytes()
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


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------

def _periodic_volume(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Measure (length, area or volume) spanned by the periodic cell vectors."""
    vecs = cell[np.asarray(pbc, dtype=bool)]
    if len(vecs) == 0:
        return math.inf
    gram = vecs @ vecs.T
    return float(math.sqrt(max(np.linalg.det(gram), 0.0)))


def _closest_pair(atoms, limit):
    """Closest pair below ``limit`` Å as (distance, i, j, is_image) or None."""
    pos = atoms.positions
    n = len(atoms)
    if not atoms.pbc.any():
        if n < 2:
            return None
        if n <= 300:
            diff = pos[:, None, :] - pos[None, :, :]
            d2 = np.einsum("ijk,ijk->ij", diff, diff)
            iu = np.triu_indices(n, 1)
            k = int(np.argmin(d2[iu]))
            d = math.sqrt(d2[iu][k])
            return (d, int(iu[0][k]), int(iu[1][k]), False) if d < limit else None
        from scipy.spatial import cKDTree

        pairs = cKDTree(pos).query_pairs(limit, output_type="ndarray")
        if len(pairs) == 0:
            return None
        d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        k = int(np.argmin(d))
        return float(d[k]), int(pairs[k, 0]), int(pairs[k, 1]), False
    return _closest_pair_periodic(atoms, limit)


def _closest_pair_periodic(atoms, limit):
    """Closest pair (or atom and its own image) below ``limit`` Å in a periodic structure.

    ase's neighbour list has a large fixed cost per call; for a cutoff as small as ``MIN_DISTANCE``
    a KD-tree over the atoms and their 26 neighbouring images in a Minkowski-reduced cell is exact
    (every periodic direction of a valid cell is far longer than the cutoff) and much faster.
    """
    import itertools

    from ase.geometry import wrap_positions
    from ase.geometry.minkowski_reduction import minkowski_reduce
    from scipy.spatial import cKDTree

    pbc = np.asarray(atoms.pbc, dtype=bool)
    rcell, _ = minkowski_reduce(atoms.cell.array, pbc=pbc)
    pos = wrap_positions(atoms.positions, rcell, pbc=pbc, eps=0.0)
    n = len(pos)
    ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
    shifts = np.array([s for s in itertools.product(*ranges) if any(s)], dtype=float).reshape(-1, 3)
    translations = shifts @ rcell
    if len(translations):
        lengths = np.linalg.norm(translations, axis=1)
        k = int(np.argmin(lengths))
        if lengths[k] < limit:
            return float(lengths[k]), 0, 0, True
    images = np.concatenate([pos] + [pos + t for t in translations], axis=0)
    pairs = cKDTree(images).query_pairs(limit, output_type="ndarray")
    if len(pairs) == 0:
        return None
    # Keep pairs with at least one atom in the home cell; map images back to atom indices.
    pairs = pairs[(pairs[:, 0] < n) | (pairs[:, 1] < n)]
    if len(pairs) == 0:
        return None
    d = np.linalg.norm(images[pairs[:, 0]] - images[pairs[:, 1]], axis=1)
    k = int(np.argmin(d))
    i, j = sorted((int(pairs[k, 0]) % n, int(pairs[k, 1]) % n))
    # "across the boundary" refers to the coordinates as given, not to the wrapped copy used here
    direct = float(np.linalg.norm(atoms.positions[i] - atoms.positions[j]))
    return float(d[k]), i, j, bool(direct > d[k] + 1e-6)


def validate_structures(frames, *, name=None) -> None:
    """Check that structures are physically usable; raise one InputError listing every problem.

    Checks: at least one structure; every structure has atoms; finite coordinates; real elements
    (atomic numbers 1-118, no dummy 'X'); a finite cell whose periodic vectors span a non-zero
    length/area/volume; no two atoms (or an atom and a periodic image) closer than ``MIN_DISTANCE``.
    Isolated atoms, single-element systems and structures with no neighbours are valid.

    Parameters
    ----------
    frames : list of ase.Atoms
    name : str, optional
        File name to prefix the message with.

    Raises
    ------
    InputError
    """
    from ase import Atoms

    prefix = f"{name}: " if name else ""
    if isinstance(frames, Atoms):
        frames = [frames]
    frames = list(frames) if frames is not None else []
    if not frames:
        raise InputError(f"{prefix}no structures were given.")
    problems = []
    for s, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            problems.append(f"structure {s}: is a {type(atoms).__name__}, not an ase.Atoms")
            continue
        n = len(atoms)
        if n == 0:
            problems.append(f"structure {s}: has no atoms")
            continue
        pos = atoms.positions
        bad = np.where(~np.isfinite(pos).all(axis=1))[0]
        if len(bad):
            problems.append(
                f"structure {s}: atom{'s' if len(bad) > 1 else ''} {_fmt_list(bad)} "
                f"{'have' if len(bad) > 1 else 'has'} NaN or infinite coordinates"
            )
            continue
        z = atoms.numbers
        wrong = np.where((z < 1) | (z > 118))[0]
        if len(wrong):
            problems.append(
                f"structure {s}: atom{'s' if len(wrong) > 1 else ''} {_fmt_list(wrong)} "
                f"{'are' if len(wrong) > 1 else 'is'} not a real element (atomic number "
                f"{int(z[wrong[0]])}); use element symbols H-Og"
            )
            continue
        cell = atoms.cell.array
        if not np.isfinite(cell).all():
            problems.append(f"structure {s}: the cell contains NaN or infinite numbers")
            continue
        if atoms.pbc.any():
            measure = _periodic_volume(cell, atoms.pbc)
            dims = int(atoms.pbc.sum())
            lengths = np.linalg.norm(cell[atoms.pbc], axis=1)
            scale = float(np.prod(lengths)) if np.all(lengths > 0) else 0.0
            if measure <= 1e-8 * max(scale, 1.0) or measure < 1e-6:
                what = {1: "length", 2: "area", 3: "volume"}[dims]
                problems.append(
                    f"structure {s}: it is periodic (pbc={''.join('T' if p else 'F' for p in atoms.pbc)}) but its "
                    f"cell has zero {what}; give a proper Lattice or set pbc to False"
                )
                continue
        close = _closest_pair(atoms, MIN_DISTANCE)
        if close is not None:
            d, i, j, image = close
            if i == j:
                problems.append(
                    f"structure {s}: atom {i} is {d:.2f} Å from its own periodic image; the cell is too small"
                )
            else:
                problems.append(
                    f"structure {s}: two atoms {d:.2f} Å apart (atoms {i} and {j}{', across the cell boundary' if image else ''}); "
                    f"atoms closer than {MIN_DISTANCE} Å are usually duplicates or coordinates in the wrong unit"
                )
    if problems:
        raise _problems_error([prefix + p for p in problems])


# --------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------

_COLUMN_RE = re.compile(r"^(.*)\[(\d+)\]$")


def _calc_results(atoms):
    calc = getattr(atoms, "calc", None)
    res = getattr(calc, "results", None)
    return res if isinstance(res, dict) else {}


def _numeric(value):
    """Value as a float array, or None when it is not numeric (strings, bools, objects)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    try:
        arr = np.asarray(value)
    except Exception:
        return None
    if arr.dtype.kind not in "iuf":
        return None
    return arr.astype(float)


def _lookup(atoms, key):
    """Value of ``key`` in one structure: (float array or None, source or None, per_atom)."""
    res = _calc_results(atoms)
    if key in atoms.info:
        v = _numeric(atoms.info[key])
        if v is not None and key == "stress" and v.shape == (6,):
            v = _voigt_to_full(v)
        return v, ("calc" if key in res else "info"), False
    if key in atoms.arrays and key not in ("positions", "numbers"):
        return _numeric(atoms.arrays[key]), ("calc" if key in res else "arrays"), True
    if key in res:
        v = _numeric(res[key])
        if v is not None and key == "stress" and v.shape == (6,):
            v = _voigt_to_full(v)
        return v, "calc", key in _PER_ATOM_CALC
    m = _COLUMN_RE.match(key)
    if m and m.group(1) in atoms.arrays:
        base = _numeric(atoms.arrays[m.group(1)])
        col = int(m.group(2))
        if base is not None and base.ndim == 2 and col < base.shape[1]:
            return base[:, col], "arrays", True
        return None, "arrays", True
    return None, None, False


def _kind_of(value, n_atoms, per_atom):
    """Target kind from the shape of one structure's value, or None when it is not a target."""
    if per_atom:
        if value.shape in ((n_atoms,), (n_atoms, 1)):
            return "atomic"
        return None
    if value.ndim == 0 or value.shape == (1,):
        return "scalar"
    if value.shape == (3,):
        return "vector"
    if value.shape in ((3, 3), (9,)):
        return "tensor"
    return None


def _shape_for(kind, value):
    if kind == "scalar":
        return value.reshape(())
    if kind == "tensor":
        return value.reshape(3, 3)
    if kind == "atomic":
        return value.reshape(-1)
    return value


def _guess_extensive(key, values, n_atoms):
    base = _COLUMN_RE.sub(r"\1", key)
    low = base.lower()
    if base in _EXTENSIVE:
        return True
    if base in _INTENSIVE or "per_atom" in low or "peratom" in low:
        return False
    if "energy" in low and "gap" not in low:
        return True
    # Unknown name: extensive when it tracks the number of atoms closely (needs some spread in sizes).
    v = np.asarray(values, dtype=float)
    na = np.asarray(n_atoms, dtype=float)
    if v.ndim == 1 and len(v) >= 5 and np.std(na) > 0 and np.std(v) > 0:
        r = np.corrcoef(v, na)[0, 1]
        return bool(abs(r) > 0.8)
    return False


def _candidate_keys(frames):
    """Keys, in first-seen order, that could be targets."""
    keys = {}
    for atoms in frames:
        for k in atoms.info:
            if k not in _METADATA_KEYS:
                keys.setdefault(k, None)
        for k in _calc_results(atoms):
            keys.setdefault(k, None)
        for k, arr in atoms.arrays.items():
            if k in _STRUCTURE_ARRAYS:
                continue
            a = np.asarray(arr)
            if a.ndim == 2 and a.shape[1] not in (1, 3) and a.dtype.kind == "f" and k not in _PER_ATOM_CALC:
                for c in range(a.shape[1]):
                    keys.setdefault(f"{k}[{c}]", None)
            else:
                keys.setdefault(k, None)
    return list(keys)


def _collect(frames, key):
    """Per-structure lookups of ``key``: lists of values (None when missing), sources and per-atom flags."""
    found = [_lookup(atoms, key) for atoms in frames]
    return [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]


def _overall_source(sources):
    present = {s for s in sources if s is not None}
    for s in ("calc", "info", "arrays"):
        if s in present:
            return s
    return None


def _raw_dtype_kind(frames, key):
    for atoms in frames:
        if key in atoms.info:
            return np.asarray(atoms.info[key]).dtype.kind
        if key in atoms.arrays:
            return np.asarray(atoms.arrays[key]).dtype.kind
    return "f"


def describe_targets(frames):
    """List what can be learned from these structures, and how.

    Parameters
    ----------
    frames : list of ase.Atoms

    Returns
    -------
    list of TargetInfo
        One entry per usable key: per-structure scalars, 3-vectors and 3×3 tensors from ``atoms.info``
        (or calculator results), per-atom scalars from ``atoms.arrays`` (a multi-column per-atom array
        ``X`` gives ``X[0]``, ``X[1]``...). Not listed: non-numeric values, integer-valued per-structure
        keys (indices and counts far more often than targets), per-atom vectors such as forces, values
        whose shape differs between structures, and values identical in every structure (when there
        are at least two). :func:`get_target` still returns any of them, or says why it cannot.
    """
    frames = list(frames)
    out = []
    for key in _candidate_keys(frames):
        values, sources, per_atom = _collect(frames, key)
        present = [(a, v, pa) for a, v, pa in zip(frames, values, per_atom) if v is not None]
        if not present:
            continue
        kinds = {_kind_of(v, len(a), pa) for a, v, pa in present}
        if len(kinds) != 1 or None in kinds:
            continue
        kind = kinds.pop()
        raw_kind = _raw_dtype_kind(frames, _COLUMN_RE.sub(r"\1", key) if _COLUMN_RE.match(key) else key)
        if raw_kind in "iu" and kind in ("scalar", "atomic"):
            continue
        shaped = [_shape_for(kind, v) for _, v, _ in present]
        if len(frames) >= 2 and len(present) == len(frames) and kind != "atomic":
            if all(np.array_equal(x, shaped[0], equal_nan=True) for x in shaped[1:]):
                continue
        n_valid = int(sum(bool(np.all(np.isfinite(x))) for x in shaped))
        if kind == "atomic":
            extensive = False
        elif kind == "scalar":
            extensive = _guess_extensive(key, [float(x) for x in shaped], [len(a) for a, _, _ in present])
        else:
            extensive = _guess_extensive(key, [], [])
        base = _COLUMN_RE.sub(r"\1", key)
        unit = _KNOWN_UNITS.get(key, _KNOWN_UNITS.get(base, ""))
        if not unit and re.search(r"(^|_)ev($|_)", key.lower()):
            unit = "eV"
        out.append(TargetInfo(key=key, kind=kind, unit=unit, extensive=bool(extensive),
                              source=_overall_source(sources), n_valid=n_valid))
    return out


def get_target(frames, key):
    """Values of one target for every structure, checked for presence, shape and finiteness.

    Parameters
    ----------
    frames : list of ase.Atoms
    key : str
        An ``atoms.info`` key, an ``atoms.arrays`` key, a calculator result (``"energy"``, ``"forces"``,
        ``"stress"``), or ``"X[c]"`` for column ``c`` of a multi-column per-atom array ``X``.

    Returns
    -------
    ndarray
        ``(n,)`` for scalars, ``(n, 3)`` for vectors, ``(n, 3, 3)`` for tensors (9 numbers are read
        row-major, a 6-component stress as Voigt xx yy zz yz xz xy), ``(total_atoms,)`` for per-atom
        scalars (structure 0's atoms first), ``(total_atoms, k)`` for per-atom vectors such as forces.

    Raises
    ------
    InputError
        When the key is absent everywhere, missing, non-numeric or non-finite in some structures
        (they are named), or has different shapes in different structures.
    """
    frames = list(frames)
    if not frames:
        raise InputError("no structures were given, so there is no target to read.")
    values, _, per_atom = _collect(frames, key)
    missing = [s for s, v in enumerate(values) if v is None]
    if len(missing) == len(frames):
        avail = [t.key for t in describe_targets(frames)]
        hint = f"; available targets: {', '.join(avail)}" if avail else "; these structures carry no targets"
        raise InputError(f"no target '{key}' in these structures{hint}.")
    if missing:
        raise InputError(
            f"target '{key}' is missing or not numeric in {len(missing)} of {len(frames)} structures "
            f"(structures {_fmt_list(missing)}); remove them or choose another target."
        )
    atomic = {bool(pa) for pa in per_atom}
    if len(atomic) > 1:
        raise InputError(f"target '{key}' is per-atom in some structures and per-structure in others; "
                         "rename one of them.")
    if atomic.pop():
        bad_len = [s for s, (a, v) in enumerate(zip(frames, values)) if v.ndim == 0 or v.shape[0] != len(a)]
        if bad_len:
            raise InputError(f"target '{key}' does not have one row per atom in structures {_fmt_list(bad_len)}.")
        shapes = {}
        for s, v in enumerate(values):
            shapes.setdefault(v.shape[1:] if v.ndim > 1 and v.shape[1:] != (1,) else (), []).append(s)
        if len(shapes) > 1:
            parts = [f"{shp[0] if shp else 1} column(s) in structures {_fmt_list(idx, 6)}"
                     for shp, idx in sorted(shapes.items(), key=lambda kv: -len(kv[1]))]
            raise InputError(f"target '{key}' has inconsistent shapes: {'; '.join(parts)}; every structure must "
                             "have the same columns.")
        shp = next(iter(shapes))
        arr = np.concatenate([v.reshape((len(v),) + shp) for v in values], axis=0)
    else:
        shapes = {}
        for s, v in enumerate(values):
            shp = (3, 3) if v.shape == (9,) else (() if v.shape == (1,) else v.shape)
            shapes.setdefault(shp, []).append(s)
        if len(shapes) > 1:
            parts = [f"shape {shp if shp else '() (a scalar)'} in structures {_fmt_list(idx, 6)}"
                     for shp, idx in sorted(shapes.items(), key=lambda kv: -len(kv[1]))]
            raise InputError(f"target '{key}' has inconsistent shapes: {'; '.join(parts)}; every structure must "
                             "give the same shape.")
        shp = next(iter(shapes))
        arr = np.array([v.reshape(shp) for v in values], dtype=float)
    nonfinite = [s for s, v in enumerate(values) if not np.all(np.isfinite(v))]
    if nonfinite:
        raise InputError(
            f"target '{key}' is NaN or infinite in {len(nonfinite)} of {len(frames)} structures "
            f"(structures {_fmt_list(nonfinite)}); remove them or fix the values."
        )
    return arr


# --------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------

def _n_test(n, test_size):
    if isinstance(test_size, (bool, np.bool_)):
        raise InputError("test_size must be a fraction in (0, 1) or a number of structures, not a bool.")
    if isinstance(test_size, (float, np.floating)) and 0 < test_size < 1:
        k = int(round(test_size * n))
    elif isinstance(test_size, (int, np.integer)):
        k = int(test_size)
    else:
        raise InputError(f"test_size must be a fraction in (0, 1) or a number of structures, got {test_size!r}.")
    if not 1 <= k <= n - 1:
        raise InputError(
            f"a test set of {k} out of {n} structures leaves no training or no test data; choose between 1 and {n - 1}."
        )
    return k


def random_split(n, test_size, seed):
    """Random train/test split, reproducible from the seed.

    Parameters
    ----------
    n : int
        Number of structures (at least 2).
    test_size : float or int
        Fraction in (0, 1) or number of test structures.
    seed : int

    Returns
    -------
    train_idx, test_idx : ndarray of int
        ``train_idx`` is in random order, so its prefixes are nested random subsets (learning curves);
        ``test_idx`` is sorted.
    """
    n = int(n)
    if n < 2:
        raise InputError(f"a split needs at least 2 structures, got {n}.")
    k = _n_test(n, test_size)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[k:].copy(), np.sort(perm[:k])


def fps_split(K, n_train, seed=0):
    """Farthest-point-sampling train/test split on a kernel matrix.

    The distance between structures i and j is the kernel-induced distance
    d²(i, j) = K_ii + K_jj − 2 K_ij. Starting from one structure chosen with ``seed``, each step adds the
    structure farthest from those already chosen, so the training set spreads over the data.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Symmetric positive semi-definite kernel (one body order, or a mixture).
    n_train : int or float
        Number (or fraction in (0, 1)) of training structures.
    seed : int
        Chooses the first point.

    Returns
    -------
    train_idx, test_idx : ndarray of int
        ``train_idx`` in selection order (its prefixes are FPS subsets); ``test_idx`` sorted.
    """
    K = np.asarray(K, dtype=float)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise InputError(
            f"FPS needs a square (n, n) kernel, got shape {K.shape}; pick one body order, e.g. K[2], or a mixture."
        )
    n = K.shape[0]
    if n < 2:
        raise InputError(f"a split needs at least 2 structures, got {n}.")
    if not np.all(np.isfinite(K)):
        raise InputError("the kernel for FPS contains NaN or infinite values; recompute it.")
    scale = max(float(np.max(np.abs(K))), 1e-300)
    if np.max(np.abs(K - K.T)) > 1e-8 * scale:
        raise InputError("the kernel for FPS is not symmetric; use the train-train kernel K(A, A).")
    if isinstance(n_train, (float, np.floating)) and 0 < n_train < 1:
        n_train = int(round(n_train * n))
    n_train = int(n_train)
    if not 1 <= n_train <= n - 1:
        raise InputError(f"n_train={n_train} leaves no training or no test data; choose between 1 and {n - 1}.")
    diag = np.diag(K).copy()
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    mind = np.maximum(diag + diag[first] - 2.0 * K[first], 0.0)
    mind[first] = -1.0
    for _ in range(n_train - 1):
        nxt = int(np.argmax(mind))
        chosen.append(nxt)
        mind = np.minimum(mind, np.maximum(diag + diag[nxt] - 2.0 * K[nxt], 0.0))
        mind[chosen] = -1.0
    train = np.array(chosen, dtype=int)
    test = np.setdiff1d(np.arange(n), train)
    return train, test


def cover_elements(frames, train, test):
    """Move test structures holding an element that no training structure has into the training set.

    A model has no coefficient for an element it never saw (a per-element baseline gives it 0), so a single
    such test structure can dominate the test error: a fluorine molecule in a 300-molecule QM9 draw costs
    thousands of eV on a total energy. The rule is one pass against the *given* training set: every test
    structure with an element absent from ``train`` moves, even if another moved structure would then cover
    it. The result is deterministic (no randomness), and which structures move does not depend on the order of
    ``train``. When *every* test structure would move, nothing moves: an empty test set is worse than a test
    set with unseen elements.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        The whole data set (indices refer to it).
    train, test : sequence of int
        Training and test indices into ``frames``.

    Returns
    -------
    train : ndarray of int
        The given training indices in their order (so prefixes stay nested subsets), then the moved ones.
    test : ndarray of int
        The test indices that stay, in their given order.
    moved : ndarray of int
        The moved indices, in their order in ``test`` (empty when nothing moved).
    """
    train = np.asarray(train, dtype=int).ravel()
    test = np.asarray(test, dtype=int).ravel()
    n = len(frames)
    for name, idx in (("train", train), ("test", test)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(f"{name} indices must lie in 0..{n - 1} for {n} structures.")
    seen = set(np.concatenate([np.asarray(frames[i].numbers) for i in train]).tolist()) if train.size else set()
    unseen = np.array([not set(np.asarray(frames[i].numbers).tolist()) <= seen for i in test], dtype=bool)
    if not unseen.any() or unseen.all():
        return train.copy(), test.copy(), np.zeros(0, dtype=int)
    moved = test[unseen]
    return np.concatenate([train, moved]), test[~unseen], moved


# --------------------------------------------------------------------------------------------------------------
# Summaries and compositions
# --------------------------------------------------------------------------------------------------------------

def composition_counts(frames, species=None):
    """Element counts per structure.

    Parameters
    ----------
    frames : list of ase.Atoms
    species : sequence of int or str, optional
        Columns to count (atomic numbers or symbols), e.g. the training set's elements. Atoms of
        elements not listed are not counted: a composition baseline has no coefficient for an element
        it never saw, so it contributes zero.

    Returns
    -------
    counts : ndarray of shape (n_structures, n_species), float
    species : ndarray of int
        Atomic numbers of the columns (sorted when inferred from the structures).
    """
    from ase.data import atomic_numbers

    frames = list(frames)
    if species is None:
        species = np.unique(np.concatenate([a.numbers for a in frames])) if frames else np.array([], dtype=int)
    else:
        sp = []
        for s in species:
            if isinstance(s, str):
                if s not in atomic_numbers:
                    raise InputError(f"unknown element symbol '{s}' in species.")
                sp.append(atomic_numbers[s])
            else:
                sp.append(int(s))
        species = np.array(sp, dtype=int)
    col = {int(z): c for c, z in enumerate(species)}
    counts = np.zeros((len(frames), len(species)))
    for s, atoms in enumerate(frames):
        zs, cs = np.unique(atoms.numbers, return_counts=True)
        for z, c in zip(zs, cs):
            if int(z) in col:
                counts[s, col[int(z)]] = c
    return counts, np.asarray(species, dtype=int)


def summarize(frames):
    """Counts, elements, sizes, periodicity and target statistics of a data set.

    Returns
    -------
    dict
        ``n_structures``, ``n_atoms_total``, ``atoms_per_structure`` (min, max, mean, median, and a
        ``histogram`` dict size → count), ``elements`` (symbol → dict(atoms=…, structures=…)),
        ``n_periodic``, ``n_nonperiodic``, ``n_unique_compositions``, and ``targets``: key →
        dict(kind, unit, extensive, source, n_valid, mean, std, min, max) over the finite values
        (for vectors and tensors these are statistics of the norm).
    """
    from ase.data import chemical_symbols

    frames = list(frames)
    sizes = np.array([len(a) for a in frames], dtype=int)
    counts, species = composition_counts(frames)
    elements = {
        chemical_symbols[int(z)]: {"atoms": int(counts[:, c].sum()), "structures": int((counts[:, c] > 0).sum())}
        for c, z in enumerate(species)
    }
    hist = {int(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))} if len(sizes) else {}
    n_periodic = int(sum(bool(a.pbc.any()) for a in frames))
    targets = {}
    for t in describe_targets(frames):
        values, _, _ = _collect(frames, t.key)
        vals = []
        for v in values:
            if v is None or not np.all(np.isfinite(v)):
                continue
            if t.kind in ("scalar", "atomic"):
                vals.extend(np.ravel(v).tolist())
            else:
                vals.append(float(np.linalg.norm(v)))
        arr = np.array(vals, dtype=float)
        stats = dict(mean=float(arr.mean()), std=float(arr.std()), min=float(arr.min()), max=float(arr.max())) \
            if len(arr) else dict(mean=math.nan, std=math.nan, min=math.nan, max=math.nan)
        targets[t.key] = dict(kind=t.kind, unit=t.unit, extensive=t.extensive, source=t.source, n_valid=t.n_valid,
                              **stats)
    return {
        "n_structures": len(frames),
        "n_atoms_total": int(sizes.sum()),
        "atoms_per_structure": {
            "min": int(sizes.min()) if len(sizes) else 0,
            "max": int(sizes.max()) if len(sizes) else 0,
            "mean": float(sizes.mean()) if len(sizes) else 0.0,
            "median": float(np.median(sizes)) if len(sizes) else 0.0,
            "histogram": hist,
        },
        "elements": elements,
        "n_periodic": n_periodic,
        "n_nonperiodic": len(frames) - n_periodic,
        "n_unique_compositions": int(len({tuple(r) for r in counts})),
        "targets": targets,
    }


# --------------------------------------------------------------------------------------------------------------
# Derived targets
# --------------------------------------------------------------------------------------------------------------

def charge_dipole(atoms, charges="mulliken"):
    """Dipole of point charges about the centre of mass, Σ_i q_i (r_i − r_com), in e·Å.

    Parameters
    ----------
    atoms : ase.Atoms
    charges : str or array_like
        Key of a per-atom array of charges (e), or the charges themselves.

    Returns
    -------
    ndarray of shape (3,)
        Rotates with the structure: for a rotation R, ``charge_dipole(R·atoms) = R @ charge_dipole(atoms)``.
        The centre of mass (ase's standard masses) fixes the origin; for a neutral molecule the result
        does not depend on it.
    """
    q = np.asarray(atoms.arrays[charges] if isinstance(charges, str) else charges, dtype=float)
    if q.shape != (len(atoms),):
        raise InputError(f"charges must give one number per atom ({len(atoms)}), got shape {q.shape}.")
    r = atoms.positions - atoms.get_center_of_mass()
    return q @ r


# --------------------------------------------------------------------------------------------------------------
# Sample data and QM9
# --------------------------------------------------------------------------------------------------------------

def load_sample(name):
    """Load a bundled data set.

    Parameters
    ----------
    name : {"qm9", "gold", "teaching"}
        See ``SAMPLE_SETS`` for descriptions and ``sample_data/README.md`` for provenance and units.

    Returns
    -------
    list of ase.Atoms
    """
    if name not in SAMPLE_SETS:
        raise InputError(f"no sample data set '{name}'; choose one of {', '.join(SAMPLE_SETS)}.")
    path = SAMPLE_DIR / SAMPLE_SETS[name]["file"]
    if not path.exists():
        raise InputError(
            f"the sample file {path} is missing; rebuild it with `python scripts/make_sample_data.py`."
        )
    return read_structures(path)


def _parse_list(text):
    """Numbers from qm9pack's bracketed text columns ('[[-0.01,1.08],[...]]'); never eval'd."""
    return np.array([float(t) for t in re.split(r"[\s,\[\]']+", text) if t], dtype=float)


def _parse_symbols(text):
    return [t for t in re.split(r"[\s,\[\]'\"]+", text) if t]


def _qm9_atoms(row):
    """One qm9pack row → ase.Atoms with eV energies, Mulliken charges and their dipole."""
    from ase import Atoms

    symbols = _parse_symbols(row["Elements"])
    pos = _parse_list(row["XYZ_Ang"]).reshape(len(symbols), 3)
    q = _parse_list(row["Mulliken_pop"])
    if len(q) != len(symbols):
        raise InputError(f"QM9 molecule {row['Index']}: {len(q)} Mulliken charges for {len(symbols)} atoms.")
    atoms = Atoms(symbols=symbols, positions=pos)
    atoms.arrays["mulliken"] = q
    info = atoms.info
    info["qm9_index"] = int(row["Index"])
    info["smiles"] = str(row["SMILES"])
    for key, col in (("U0", "InternalEnergy_0K_au"), ("U", "InternalEnergy_298K_au"), ("H", "Enthalphy_298K_au"),
                     ("G", "GibbsFreeEnergy_298K_au"), ("homo", "HOMO_au"), ("lumo", "LUMO_au"),
                     ("gap", "HOMO_LUMO_gap_au"), ("zpve", "ZPVE_au")):
        info[key] = float(row[col]) * HARTREE_EV
    info["dipole_norm"] = float(row["Dipole_debye"])
    # QM9's isotropic polarisability (a rotation invariant); the tensor components are given in a
    # molecule-fixed orientation unrelated to these coordinates, so they are deliberately not used.
    info["alpha_iso"] = float(row["Polarizability_bohr3"])
    info["cv"] = float(row["Heatcapacity_Cv_cal_mol_K"])
    info["mulliken_dipole"] = charge_dipole(atoms, "mulliken")
    return atoms


def _qm9_table():
    try:
        import qm9pack
    except ImportError:
        raise InputError(
            "full QM9 needs the optional qm9pack package (about 230 MB); install it with `pip install qm9pack` "
            "or use the bundled 2,000-molecule subset (load_sample('qm9'))."
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qm9pack.get_data("qm9")


def _check_positive_int(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}.")


def load_qm9(n, seed):
    """Draw ``n`` random QM9 molecules (without replacement) from the qm9pack package.

    Parameters
    ----------
    n : int
        Number of molecules, 1 to 130,831.
    seed : int
        Seed of the draw; ``load_qm9(2000, 0)`` reproduces the bundled subset.

    Returns
    -------
    list of ase.Atoms
        In increasing QM9 index, with the info keys and units of the bundled subset
        (``sample_data/README.md``).

    Raises
    ------
    InputError
        When qm9pack is not installed (``pip install qm9pack``) or ``n`` is out of range.

    Notes
    -----
    Loading qm9pack's table takes about 1-2 s and 0.4 GB of memory; keep the returned frames rather than calling again.
    """
    _check_positive_int(n, "the number of QM9 molecules")
    df = _qm9_table()
    total = len(df)
    if n > total:
        raise InputError(f"QM9 has {total} molecules; asked for {n}.")
    rows = np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))
    sub = df.iloc[rows]
    frames = [_qm9_atoms(row) for _, row in sub.iterrows()]
    validate_structures(frames, name="QM9")
    return frames


def load_qm9_split(n_train, n_test, seed):
    """Random QM9 training and test sets: ``n_train + n_test`` molecules drawn as by :func:`load_qm9`, then
    partitioned at random (:func:`random_split` with the same seed).

    Slicing the draw of :func:`load_qm9` would not do: it is in QM9 order, which follows the GDB enumeration
    (small molecules first, fluorinated ones clustered), so its first molecules are not a random subset of it.

    Parameters
    ----------
    n_train, n_test : int
        Sizes of the two sets (``n_train`` ≥ 1, ``n_test`` ≥ 1).
    seed : int

    Returns
    -------
    train, test : list of ase.Atoms
        Each in increasing QM9 index.
    """
    _check_positive_int(n_train, "n_train")
    _check_positive_int(n_test, "n_test")
    frames = load_qm9(int(n_train) + int(n_test), seed)
    train_idx, test_idx = random_split(len(frames), int(n_test), seed)
    return [frames[i] for i in np.sort(train_idx)], [frames[i] for i in test_idx]
