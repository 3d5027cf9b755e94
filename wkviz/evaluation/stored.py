"""Stored results: learning curves measured once, recorded in BENCHMARKS.md and shipped with wkviz, so that the app
can draw them beside the user's own curves.

A stored curve is two files in :data:`STORED_DIR`:

- ``<name>.csv``: the benchmark's own output, unchanged (``benchmarks/bench_sparse_curve.py``: columns ``model,
  n_train, repeat, mae, rmse, n_active, n_test, fit_seconds, ..., load``; errors in the unit of the metadata);
- ``<name>.json``: what it is (target, unit, data, model, hyperparameters, command, machine, date, BENCHMARKS
  section).

Re-measuring replaces the CSV only: the sizes, numbers of active environments, test-set size, FPS pool, the
command line and (when the CSV has a ``date`` column) the date are read from it; the JSON's text may name them as
``{sizes}``, ``{active}``, ``{n_test}``, ``{n_max}``, ``{pool_option}`` (`` --pool N`` or nothing), ``{fps_pool}``
(words for the pool, or nothing) and ``{section}``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..hypers import Hypers

__all__ = ["STORED_DIR", "QM9_U0_SPARSE", "StoredCurve", "load_stored_curve"]

#: Where the stored curves live (package data: ``[tool.setuptools.package-data]`` in pyproject.toml).
STORED_DIR = Path(__file__).resolve().parent / "stored_results"

#: The measured QM9 U0 learning curve of the sparse Wigner-kernel model (BENCHMARKS.md §13, issue 17).
QM9_U0_SPARSE = "qm9_u0_sparse_curve"

_COLUMNS = ("model", "n_train", "mae", "rmse", "n_active", "n_test")
_META = ("label", "title", "target", "quantity", "unit", "dataset", "model", "hypers", "command", "machine", "date",
         "section")
_TEXT = ("label", "title", "dataset", "model", "command", "machine")
# Energies in eV that are not total energies: the zero-point vibrational energy is a small correction whose errors
# are ~100× below a total energy's, so its curve next to a U0 curve would only look like a triumph.
_NOT_TOTAL_ENERGIES = frozenset({"zpve"})


@dataclass(frozen=True, eq=False)
class StoredCurve:
    """A learning curve measured once and shipped with wkviz: one point per training size (mean over repeats).

    Attributes
    ----------
    name : str
        File stem in :data:`STORED_DIR`.
    label : str
        Legend entry (``"QM9 U0, sparse Wigner kernel (stored, BENCHMARKS §13)"``).
    title : str
    target : str
        Target key (``"U0"``).
    quantity : str
        What kind of quantity the target is (``"total energy"``): decides :meth:`comparable_to`.
    unit : str
        Unit of ``mae`` and ``rmse`` (``"eV"``).
    dataset, model, machine : str
        Where the data came from, the model fitted, the machine it was measured on.
    hypers : Hypers
        The kernel hyperparameters of the measurement.
    command : str
        The command line that measured it.
    date : str
        When (ISO date).
    section : int
        Its section of BENCHMARKS.md.
    n_test : int
        Held-out test structures (the same set at every size).
    n_train, n_active : numpy.ndarray of int
        Training structures and active environments (M) of each point, in increasing ``n_train``.
    mae, rmse, mae_std, rmse_std : numpy.ndarray
        Test errors, mean and standard deviation over repeats (0 for one repeat), in ``unit``.
    n_repeats : numpy.ndarray of int
    fit_seconds, fit_cpu_seconds : numpy.ndarray
        Wall and CPU time of the fit at each size (kernels excluded: they were computed once for all sizes); NaN
        when not recorded. On a shared machine the CPU time is the comparable one.
    load : tuple of str
        Load average (1, 5, 15 min) when each size was fitted ("" when not recorded): wall times grow with it.
    path : pathlib.Path
        The CSV.
    """

    name: str
    label: str
    title: str
    target: str
    quantity: str
    unit: str
    dataset: str
    model: str
    hypers: Hypers
    command: str
    machine: str
    date: str
    section: int
    n_test: int
    n_train: np.ndarray
    n_active: np.ndarray
    mae: np.ndarray
    rmse: np.ndarray
    mae_std: np.ndarray
    rmse_std: np.ndarray
    n_repeats: np.ndarray
    fit_seconds: np.ndarray
    fit_cpu_seconds: np.ndarray
    load: tuple
    path: Path

    @property
    def benchmarks(self) -> str:
        """``"BENCHMARKS.md §13"``."""
        return f"BENCHMARKS.md §{self.section}"

    def errors(self, metric: str = "mae") -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over repeats) of ``metric`` (``"mae"`` or ``"rmse"``) at each size, in :attr:`unit`."""
        if metric not in ("mae", "rmse"):
            raise InputError(f"a stored curve has the errors 'mae' and 'rmse', not {metric!r}; pick one of them.")
        return getattr(self, metric), getattr(self, f"{metric}_std")

    def comparable_to(self, key: str, unit: str, *, kind: str = "scalar", extensive: bool = True) -> bool:
        """Whether a learning curve of the target ``key`` in ``unit`` may share this curve's axes.

        Only errors of the same kind of quantity in the same unit: for a stored total-energy curve, a
        per-structure total energy in eV (QM9's U0, U, H, G; an uploaded ``energy``). Not a target in another
        unit (or one the user re-labelled), not an intensive one (the HOMO-LUMO gap is in eV too, but its errors
        are of another size and meaning), not the zero-point energy.

        Parameters
        ----------
        key, unit : str
            The user's target and its unit.
        kind : str
            ``TargetInfo.kind`` (``"scalar"``, ``"vector"``, ...).
        extensive : bool
            Whether the target grows with the number of atoms.
        """
        if (unit or "").strip() != self.unit or kind != "scalar":
            return False
        if self.quantity == "total energy":
            return bool(extensive) and key not in _NOT_TOTAL_ENERGIES
        return key == self.target

    def provenance(self) -> str:
        """One paragraph: what was measured, on what, when and with which command."""
        h = self.hypers
        return (f"Stored, not computed here: the {self.title} ({self.model}; ν_max {h.nu_max}, λ_max {h.lambda_max}, "
                f"cutoff {h.cutoff:g} Å); {self.dataset}. Measured on {self.date} on {self.machine} with "
                f"`{self.command}`. Details in {self.benchmarks}.")


def _spread(values) -> float:
    # the sample standard deviation, as the learning-curve figure's error bars of the user's repeats
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _number(row: dict, column: str, where: str, *, integer: bool = False, positive: bool = True):
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: column {column!r} is {text!r}, not a number; rewrite the file with "
                         "benchmarks/bench_sparse_curve.py.") from None
    if not math.isfinite(value) or (positive and value <= 0) or (integer and value != int(value)):
        kind = "a positive whole number" if integer else "a positive number"
        raise InputError(f"{where}: column {column!r} is {text!r}, not {kind}; rewrite the file with "
                         "benchmarks/bench_sparse_curve.py.")
    return int(value) if integer else value


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise InputError(f"the stored curve {path} is missing; reinstall wkviz (it ships with the package).") from None
    missing = [c for c in _COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{path.name} has no column {', '.join(map(repr, missing))}; a stored curve is the CSV "
                         "that benchmarks/bench_sparse_curve.py writes.")
    if not rows:
        raise InputError(f"{path.name} has a header but no rows; copy a finished benchmark CSV in its place.")
    return rows


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"the metadata {path} of a stored curve is missing; reinstall wkviz.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name} is not valid JSON ({exc.msg}, line {exc.lineno}); fix it.") from None
    missing = [k for k in _META if k not in meta]
    if missing:
        raise InputError(f"{path.name} lacks {', '.join(map(repr, missing))}; add them (see its 'about').")
    return meta


def load_stored_curve(name: str = QM9_U0_SPARSE, directory: str | Path | None = None) -> StoredCurve:
    """Read a stored learning curve (its benchmark CSV and the JSON beside it).

    Parameters
    ----------
    name : str
        File stem (default: the QM9 U0 curve of the sparse model, :data:`QM9_U0_SPARSE`).
    directory : path, optional
        Where ``<name>.csv`` and ``<name>.json`` are (default :data:`STORED_DIR`).

    Returns
    -------
    StoredCurve
        One point per training size, in increasing size; repeats averaged.

    Raises
    ------
    InputError
        A file is missing or malformed, the rows mix models or test sets, or an error is not a positive number.
    """
    directory = Path(directory) if directory is not None else STORED_DIR
    csv_path = directory / f"{name}.csv"
    rows = _read_rows(csv_path)
    meta = _read_meta(directory / f"{name}.json")

    models = sorted({r["model"] for r in rows})
    if len(models) != 1:
        raise InputError(f"{csv_path.name} holds the models {', '.join(models)}; a stored curve is one model.")
    by_size: dict[int, list[dict]] = {}
    n_tests, pools = set(), set()
    for i, row in enumerate(rows, start=2):  # line numbers as an editor shows them (line 1 is the header)
        where = f"{csv_path.name}, line {i}"
        parsed = {"n_train": _number(row, "n_train", where, integer=True),
                  "n_active": _number(row, "n_active", where, integer=True),
                  "mae": _number(row, "mae", where), "rmse": _number(row, "rmse", where),
                  **{key: (_number(row, key, where, positive=False) if (row.get(key) or "").strip()
                           else float("nan")) for key in ("fit_seconds", "fit_cpu_seconds")},
                  "load": (row.get("load") or "").strip(), "date": (row.get("date") or "").strip()}
        pool = (row.get("pool") or "all").strip()
        if pool != "all":
            pools.add(_number(row, "pool", where, integer=True))
        n_tests.add(_number(row, "n_test", where, integer=True))
        by_size.setdefault(parsed["n_train"], []).append(parsed)
    if len(n_tests) != 1:
        raise InputError(f"{csv_path.name} mixes test sets of {sorted(n_tests)} structures; a curve has one test set.")
    if len(pools) > 1:
        raise InputError(f"{csv_path.name} mixes FPS pools {sorted(pools)}; one selection of active environments "
                         "per curve.")
    pool = pools.pop() if pools else None
    sizes = sorted(by_size)
    for n in sizes:
        if len({p["n_active"] for p in by_size[n]}) != 1:
            raise InputError(f"{csv_path.name}: the repeats at n_train = {n} have different n_active; one M per size.")

    def column(key, reduce=np.mean, dtype=float):
        return np.array([reduce([p[key] for p in by_size[n]]) for n in sizes], dtype=dtype)

    n_train = np.array(sizes, dtype=np.int64)
    n_active = column("n_active", reduce=lambda v: v[0], dtype=np.int64)
    fields = {"sizes": ",".join(str(n) for n in n_train), "active": ",".join(str(m) for m in n_active),
              "n_test": n_tests.pop(), "n_max": int(n_train[-1]), "section": meta["section"],
              "pool_option": f" --pool {pool}" if pool else "",
              "fps_pool": f" (among the environments of random structures holding about {pool:,})" if pool else ""}
    text = {}
    for key in _TEXT:
        try:
            text[key] = str(meta[key]).format_map(fields)
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(f"{name}.json: {key!r} has a placeholder other than "
                             f"{', '.join('{' + f + '}' for f in fields)} ({exc}); fix it.") from None
    try:
        hypers = Hypers.from_dict(meta["hypers"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}.json: 'hypers' are not valid hyperparameters ({exc}); fix them.") from None
    dates = sorted(p["date"] for n in sizes for p in by_size[n] if p["date"])
    return StoredCurve(
        name=name, label=text["label"], title=text["title"], target=str(meta["target"]),
        quantity=str(meta["quantity"]), unit=str(meta["unit"]), dataset=text["dataset"], model=text["model"],
        hypers=hypers, command=text["command"], machine=text["machine"],
        date=dates[-1] if dates else str(meta["date"]), section=int(meta["section"]), n_test=int(fields["n_test"]),
        n_train=n_train, n_active=n_active, mae=column("mae"), rmse=column("rmse"),
        mae_std=column("mae", reduce=_spread), rmse_std=column("rmse", reduce=_spread),
        n_repeats=column("mae", reduce=len, dtype=np.int64), fit_seconds=column("fit_seconds"),
        fit_cpu_seconds=column("fit_cpu_seconds"),
        load=tuple(by_size[n][0]["load"] for n in sizes), path=csv_path,
    )
