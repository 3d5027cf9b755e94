"""Metrics, grouped errors, model comparisons and learning curves for models on Wigner kernels.

Learning curves are computed from ONE kernel matrix over all structures: every training and test set is a
sub-block of it (:meth:`wkviz.models.KernelSet.subset`), so no kernel is recomputed. For every repeat a random
test set is drawn (seeded), and nested random training subsets of increasing size are taken from the rest;
every model's hyperparameters are chosen on its training subset only.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..files import atomic_write
from ..models import KernelSet, TargetData, fit_predict, standard_models
from ..runtime import check_cancel

__all__ = [
    "Metrics",
    "metrics",
    "composition_baseline",
    "score_predictions",
    "errors_by_group",
    "errors_by_size",
    "errors_by_element",
    "errors_by_element_count",
    "log_grid",
    "LearningCurve",
    "learning_curve",
    "learning_curve_splits",
    "loglog_slope",
    "LC_COLUMNS",
    "format_summary",
    "compare_models",
]

LC_COLUMNS = ("model", "n_train", "repeat", "mae", "rmse")


@dataclass(frozen=True)
class Metrics:
    """Errors of a set of predictions, all entries (vector/tensor components, atoms) pooled.

    Attributes
    ----------
    mae, rmse, max_error : float
        In ``unit``.
    r2 : float
        Coefficient of determination of the target itself (NaN when the true values are constant). For total
        energies it is ~1 for any model, composition-only included: their spread is the molecule size.
    n : int
        Number of values compared.
    unit : str
    r2_residual : float
        R² of the target minus the composition baseline fitted on the training set
        (:func:`composition_baseline`): the share of what the composition does not explain that the model
        learned. The errors are the same; only the spread they are compared with changes. NaN without a baseline.
    mae_per_atom : float
        Mean of |error| / atoms per structure, in ``unit``/atom, for extensive structure scalars (NaN otherwise).
    """

    mae: float
    rmse: float
    max_error: float
    r2: float
    n: int
    unit: str = ""
    r2_residual: float = float("nan")
    mae_per_atom: float = float("nan")

    def as_dict(self) -> dict:
        return {"mae": self.mae, "rmse": self.rmse, "max_error": self.max_error, "r2": self.r2, "n": self.n,
                "unit": self.unit, "r2_residual": self.r2_residual, "mae_per_atom": self.mae_per_atom}

    def __str__(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        per_atom = f" ({self.mae_per_atom:.6g}{u}/atom)" if math.isfinite(self.mae_per_atom) else ""
        r2 = f"R² {self.r2:.4f}"
        if math.isfinite(self.r2_residual):
            r2 = f"R² of target − composition baseline {self.r2_residual:.4f} (of the target itself {self.r2:.4f})"
        return (f"MAE {self.mae:.6g}{u}{per_atom}, RMSE {self.rmse:.6g}{u}, max error {self.max_error:.6g}{u}, "
                f"{r2} (n = {self.n})")


def _pair(y_true, y_pred):
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise InputError(f"true values have shape {t.shape} but predictions have shape {p.shape}")
    if t.size == 0:
        raise InputError("no values to compare")
    return t, p


def _r2(true: np.ndarray, err: np.ndarray) -> float:
    ss = float(((true - true.mean()) ** 2).sum())
    return float(1.0 - (err**2).sum() / ss) if ss > 0 else float("nan")


def metrics(y_true, y_pred, unit: str = "", *, baseline=None, n_atoms=None) -> Metrics:
    """MAE, RMSE, max |error| and R² of predictions (same shapes; components pooled).

    Parameters
    ----------
    y_true, y_pred : array_like
    unit : str
    baseline : array_like shaped like ``y_true``, optional
        The composition baseline of the same entries (:func:`composition_baseline`, fitted on the training
        set): gives ``r2_residual``, the R² of ``y_true − baseline``.
    n_atoms : array_like of shape (n,), optional
        Atoms per structure of an extensive structure scalar: gives ``mae_per_atom``.
    """
    t, p = _pair(y_true, y_pred)
    e = (p - t).ravel()
    tt = t.ravel()
    r2_res = float("nan")
    if baseline is not None:
        b = np.asarray(baseline, dtype=np.float64)
        if b.shape != t.shape:
            raise InputError(f"the baseline has shape {b.shape} but the true values have shape {t.shape}")
        r2_res = _r2(tt - b.ravel(), e)
    per_atom = float("nan")
    if n_atoms is not None:
        n_atoms = np.asarray(n_atoms, dtype=np.float64).ravel()
        if t.ndim != 1 or n_atoms.shape != t.shape or np.any(n_atoms <= 0):
            raise InputError(f"per-atom errors need one positive atom count per structure scalar ({t.shape[0]})")
        per_atom = float(np.mean(np.abs(e) / n_atoms))
    return Metrics(
        mae=float(np.abs(e).mean()),
        rmse=float(np.sqrt((e**2).mean())),
        max_error=float(np.abs(e).max()),
        r2=_r2(tt, e),
        n=int(e.size),
        unit=unit,
        r2_residual=r2_res,
        mae_per_atom=per_atom,
    )


def composition_baseline(train: TargetData, test: TargetData, *, intensive: bool = False):
    """The composition baseline of the ``test`` entries, fitted on ``train`` only: what the models subtract
    before the kernel regression (:func:`wkviz.models.ridge.fit_baseline`, least squares with a tiny ridge).

    Structure scalars: Σ_Z n_Z ε_Z (``intensive``: Σ_Z (n_Z/n) ε_Z); tensors: that of the isotropic part times
    the identity; per-atom scalars: the per-element mean ε_Z. Returns an array shaped like ``test.values``
    (entries of ``test`` may be predicted without their values), or None when the target has no baseline
    (vectors) or the composition is unknown.
    """
    from ..models.ridge import fit_baseline

    if train.values is None or train.kind == "vector":
        return None
    if train.kind == "atomic":
        if train.numbers is None or test.numbers is None:
            return None
        species = np.unique(train.numbers)
        coef, _ = fit_baseline((train.numbers[:, None] == species[None]).astype(np.float64), train.values)
        lookup = dict(zip(species.tolist(), coef.tolist()))
        return np.array([lookup.get(int(z), 0.0) for z in test.numbers])
    if train.counts is None or test.counts is None:
        return None
    if train.species is not None and test.species is not None and not np.array_equal(train.species, test.species):
        raise InputError("training and test compositions have different element columns; build both TargetData "
                         "with the same species= (the union of their elements)")

    def features(d: TargetData):
        c = np.asarray(d.counts, dtype=np.float64)
        return c / np.asarray(d.n_atoms, dtype=np.float64)[:, None] if intensive else c

    y = np.asarray(train.values, dtype=np.float64)
    if train.kind == "tensor":
        y = np.trace(y, axis1=1, axis2=2) / 3.0
    coef, _ = fit_baseline(features(train), y)
    b = features(test) @ coef
    if train.kind == "tensor":
        return b[:, None, None] * np.eye(3)[None]
    return b


def score_predictions(train: TargetData, test: TargetData, pred, *, intensive: bool = False) -> Metrics:
    """:func:`metrics` of predictions for ``test`` with everything a target allows: the unit, R² of the target
    minus the composition baseline fitted on ``train`` (:func:`composition_baseline`) and, for extensive
    structure scalars, the per-atom MAE."""
    per_atom = test.n_atoms if (test.kind == "scalar" and not intensive) else None
    return metrics(test.values, pred, unit=test.unit, n_atoms=per_atom,
                   baseline=composition_baseline(train, test, intensive=intensive))


def errors_by_group(y_true, y_pred, labels, *, name: str = "group") -> list[dict]:
    """Errors per group label of the first axis (structures).

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n, ...)
        Extra axes (vector/tensor components) are pooled within each structure.
    labels : array_like of shape (n,)
    name : str
        Key of the label in the returned rows.

    Returns
    -------
    list of dict
        One row per label (sorted): ``{name: label, "n": structures, "mae": …, "rmse": …, "max_error": …}``.
    """
    t, p = _pair(y_true, y_pred)
    labels = np.asarray(labels)
    if labels.shape[0] != t.shape[0]:
        raise InputError(f"{len(labels)} labels for {t.shape[0]} structures")
    e = (p - t).reshape(t.shape[0], -1)
    rows = []
    for label in np.unique(labels):
        sel = e[labels == label]
        rows.append({
            name: label.item() if hasattr(label, "item") else label,
            "n": int(sel.shape[0]),
            "mae": float(np.abs(sel).mean()),
            "rmse": float(np.sqrt((sel**2).mean())),
            "max_error": float(np.abs(sel).max()),
        })
    return rows


def errors_by_size(y_true, y_pred, n_atoms, *, bins=None) -> list[dict]:
    """Errors grouped by number of atoms (exact counts, or ``bins`` edges → label ``"lo–hi"``)."""
    n_atoms = np.asarray(n_atoms)
    if bins is None:
        return errors_by_group(y_true, y_pred, n_atoms, name="n_atoms")
    edges = np.asarray(bins)
    idx = np.clip(np.digitize(n_atoms, edges) - 1, 0, len(edges) - 2)
    labels = np.array([f"{edges[i]}–{edges[i + 1]}" for i in idx])
    return errors_by_group(y_true, y_pred, labels, name="n_atoms")


def errors_by_element(y_true, y_pred, counts, species) -> list[dict]:
    """Errors of the structures that contain each element (a structure counts for each of its elements)."""
    t, p = _pair(y_true, y_pred)
    counts = np.asarray(counts)
    e = (p - t).reshape(t.shape[0], -1)
    rows = []
    for j, z in enumerate(np.asarray(species)):
        sel = e[counts[:, j] > 0]
        if sel.shape[0] == 0:
            continue
        rows.append({"element": int(z), "n": int(sel.shape[0]), "mae": float(np.abs(sel).mean()),
                     "rmse": float(np.sqrt((sel**2).mean())), "max_error": float(np.abs(sel).max())})
    return rows


def errors_by_element_count(y_true, y_pred, counts, species, element: int) -> list[dict]:
    """Errors grouped by how many atoms of ``element`` (atomic number) a structure has."""
    species = [int(z) for z in np.asarray(species)]
    if int(element) not in species:
        raise InputError(f"element {element} is not among the species {species}")
    col = np.asarray(counts)[:, species.index(int(element))].astype(int)
    return errors_by_group(y_true, y_pred, col, name=f"n_Z{int(element)}")


# ----------------------------------------------------------------------------------------------------------------
# learning curves
# ----------------------------------------------------------------------------------------------------------------
def log_grid(n_min: int, n_max: int, n_points: int = 5) -> np.ndarray:
    """Training sizes evenly spaced in log between ``n_min`` and ``n_max`` (integers, unique, increasing)."""
    if not (1 <= n_min <= n_max):
        raise InputError(f"need 1 ≤ n_min ≤ n_max, got {n_min}, {n_max}")
    return np.unique(np.round(np.geomspace(n_min, n_max, max(int(n_points), 1))).astype(int))


def loglog_slope(sizes, errors) -> float:
    """Least-squares slope of log(error) against log(n_train) (NaN with fewer than 2 positive points)."""
    s = np.asarray(sizes, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    ok = (s > 0) & (e > 0) & np.isfinite(e)
    if ok.sum() < 2 or np.ptp(np.log(s[ok])) == 0:
        return float("nan")
    return float(np.polyfit(np.log(s[ok]), np.log(e[ok]), 1)[0])


@dataclass
class LearningCurve:
    """Test errors of every model at every training size and repeat.

    Attributes
    ----------
    rows : list of dict
        ``model, n_train, repeat, mae, rmse`` (the CSV of ``python -m wkviz learning-curve``).
    models : list of str
    sizes : list of int
    n_test : int
    unit : str
    weights : dict
        ``(model, n_train, repeat) → {ν: relative weight}`` chosen on that training subset.
    excluded : dict
        ``(n_train, repeat) → number of test structures left out`` because they contain an element that the
        training subset never has (its baseline energy would be 0); those sizes are scored on the rest.
    """

    rows: list = field(default_factory=list)
    models: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    n_test: int = 0
    unit: str = ""
    weights: dict = field(default_factory=dict)
    excluded: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        """Mean ± standard deviation over repeats: ``model, n_train, mae_mean, mae_std, rmse_mean, rmse_std,
        n_repeats`` (population std; 0 for a single repeat)."""
        out = []
        for model in self.models:
            for n in self.sizes:
                sel = [r for r in self.rows if r["model"] == model and r["n_train"] == n]
                if not sel:
                    continue
                mae = np.array([r["mae"] for r in sel])
                rmse = np.array([r["rmse"] for r in sel])
                out.append({"model": model, "n_train": int(n), "mae_mean": float(mae.mean()),
                            "mae_std": float(mae.std()), "rmse_mean": float(rmse.mean()),
                            "rmse_std": float(rmse.std()), "n_repeats": len(sel)})
        return out

    def slopes(self, metric: str = "mae") -> dict:
        """Log–log slope of the mean ``metric`` against training size, per model."""
        summ = self.summary()
        return {m: loglog_slope([r["n_train"] for r in summ if r["model"] == m],
                                [r[f"{metric}_mean"] for r in summ if r["model"] == m]) for m in self.models}

    def to_csv(self, path) -> None:
        """Write ``model,n_train,repeat,mae,rmse`` (one line per fit), atomically (:func:`wkviz.files.atomic_write`)."""
        with atomic_write(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(LC_COLUMNS)
            for r in self.rows:
                writer.writerow([r["model"], r["n_train"], r["repeat"], repr(float(r["mae"])), repr(float(r["rmse"]))])

    @classmethod
    def from_csv(cls, path, unit: str = "") -> "LearningCurve":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(LC_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path} is not a learning-curve CSV: missing column(s) {', '.join(sorted(missing))}")
            rows = [{"model": r["model"], "n_train": int(r["n_train"]), "repeat": int(r["repeat"]),
                     "mae": float(r["mae"]), "rmse": float(r["rmse"])} for r in reader]
        models = list(dict.fromkeys(r["model"] for r in rows))
        sizes = sorted({r["n_train"] for r in rows})
        return cls(rows=rows, models=models, sizes=sizes, unit=unit)


def _as_task(kernels, target, counts, species):
    if not isinstance(kernels, KernelSet):
        K = np.asarray(kernels, dtype=np.float64)
        if K.ndim != 3 or K.shape[1] != K.shape[2]:
            raise InputError(f"kernels must be a KernelSet or a square stack (nu+1, n, n), got shape {K.shape}")
        kernels = KernelSet(K=K)
    if not isinstance(target, TargetData):
        y = np.asarray(target, dtype=np.float64)
        if y.ndim != 1:
            raise InputError("a plain-array target must be one scalar per structure; use TargetData otherwise")
        n_atoms = np.asarray(counts).sum(axis=1).astype(int) if counts is not None else np.ones(len(y), int)
        target = TargetData(kind="scalar", values=y, n_atoms=n_atoms,
                            counts=None if counts is None else np.asarray(counts, dtype=np.float64),
                            species=None if species is None else np.asarray(species))
    if target.values is None:
        raise InputError("a learning curve needs the target values")
    return kernels, target


def learning_curve_splits(n: int, sizes, repeats: int = 3, test_size: int | None = None, seed: int = 0):
    """The random splits of :func:`learning_curve`: per repeat ``(test_idx, train_order)``.

    Repeat r permutes the n structures with seed ``(seed, r)``: the first ``test_size`` are the test set
    (sorted), the next ``max(sizes)`` the training order, whose prefixes are the nested training sets.
    ``test_size`` defaults to ``n − max(sizes)``.
    """
    sizes = sorted({int(s) for s in np.atleast_1d(sizes)})
    if not sizes or sizes[0] < 2:
        raise InputError("training sizes must be integers ≥ 2, e.g. --sizes 50,100,200")
    if int(repeats) < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    n_test = n - sizes[-1] if test_size is None else int(test_size)
    if n_test < 1 or sizes[-1] + n_test > n:
        raise InputError(
            f"{n} structures cannot hold a training set of {sizes[-1]} plus a test set of {max(n_test, 1)}; "
            f"use smaller --sizes or --test-size (at most {n} structures in total)"
        )
    out = []
    for r in range(int(repeats)):
        perm = np.random.default_rng([int(seed), r]).permutation(n)
        out.append((np.sort(perm[:n_test]), perm[n_test:n_test + sizes[-1]]))
    return out


def learning_curve(kernels, target, sizes, *, models=None, repeats: int = 3, test_size: int | None = None,
                   seed: int = 0, splits=None, intensive: bool = False, counts=None, species=None, progress=None,
                   cancel=None, **model_params) -> LearningCurve:
    """Test error against training-set size for several models, from one precomputed kernel.

    Parameters
    ----------
    kernels : KernelSet or ndarray of shape (nu_max+1, n, n)
        Kernels of all structures with themselves (whatever blocks the target kind needs).
    target : TargetData or ndarray of shape (n,)
        The target over the same structures (plain arrays: structure scalars; pass ``counts``/``species``
        for the per-element baseline, else no baseline is used).
    sizes : sequence of int
        Training sizes (e.g. :func:`log_grid`); each must leave ``test_size`` structures for testing.
    models : sequence of str, optional
        Model names (:func:`wkviz.models.standard_models`: composition, every single ν, mixed).
    repeats : int
        Random splits; repeat r uses the seed ``(seed, r)``; training subsets are nested within a repeat.
    test_size : int, optional
        Test structures per repeat (default: all structures not needed for the largest training set).
    seed : int
    splits : list of (test_idx, train_order), optional
        Explicit splits (overrides ``repeats``/``test_size``), as returned by :func:`learning_curve_splits`.
    intensive : bool
        Mean kernels for structure scalars (see :class:`wkviz.models.ScalarRegressor`).
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every fit (eta None at the start).
    cancel : threading.Event-like or callable, optional
        Checked before every fit and inside every hyperparameter search; raises
        :class:`wkviz.errors.Cancelled`.
    **model_params
        Passed to the estimators (``weights``, ``n_folds``, ``cv_loss``, ``max_iter`` …).

    Returns
    -------
    LearningCurve
    """
    kernels, target = _as_task(kernels, target, counts, species)
    if target.kind == "scalar" and target.counts is None:
        model_params.setdefault("baseline", False)
    n = len(target)
    sizes = sorted({int(s) for s in np.atleast_1d(sizes)})
    if not sizes or sizes[0] < 2:
        raise InputError("training sizes must be integers ≥ 2, e.g. --sizes 50,100,200")
    if splits is None:
        splits = learning_curve_splits(n, sizes, repeats, test_size, seed)
    else:
        splits = [(np.asarray(t, dtype=np.int64), np.asarray(p, dtype=np.int64)) for t, p in splits]
        if not splits or any(len(p) < sizes[-1] or len(t) < 1 for t, p in splits):
            raise InputError(f"every split needs a test set and at least {sizes[-1]} training structures")
        if any(np.intersect1d(t, p[:sizes[-1]]).size for t, p in splits):
            raise InputError("a split uses the same structure for training and testing")
    repeats = len(splits)
    n_test = len(splits[0][0])
    nu_max = kernels.nu_max
    models = standard_models(nu_max, target.kind) if models is None else list(models)

    cost = {s: float(s) ** 2 + 2000.0 for s in sizes}  # hyperparameter search ~ n² per evaluation at these sizes
    total = repeats * len(models) * sum(cost.values())
    done = 0.0
    start = time.perf_counter()
    if progress is not None:
        progress(0.0, None)
    result = LearningCurve(models=models, sizes=sizes, n_test=n_test, unit=target.unit)
    for r, (test_idx, pool) in enumerate(splits):
        test_data = target.subset(test_idx)
        for s in sizes:
            train_idx = np.sort(pool[:s])
            train_k = kernels.subset(train_idx, train_idx)
            test_k = kernels.subset(test_idx, train_idx)
            train_data = target.subset(train_idx)
            for model in models:
                check_cancel(cancel)
                params = dict(model_params)
                params.setdefault("random_state", int(seed) + r)
                pred, est = fit_predict(train_k, train_data, test_k, test_data, model=model, intensive=intensive,
                                        cancel=cancel, **params)
                err = np.asarray(pred) - test_data.values
                keep = _covered(train_data, test_data)
                if keep is not None and not keep.all():
                    # an element never seen in training gets no baseline energy: such test structures say
                    # nothing about the model at this size, so they are left out (and counted)
                    err = err[keep]
                    result.excluded[(s, r)] = int((~keep).sum())
                e = err.ravel()
                # every test structure left out: no error to report (NaN, said by the caller), not a warning
                mae, rmse = (float(np.abs(e).mean()), float(np.sqrt((e**2).mean()))) if e.size else (np.nan, np.nan)
                result.rows.append({"model": model, "n_train": s, "repeat": r, "mae": mae, "rmse": rmse})
                core = est.model_
                result.weights[(model, s, r)] = {int(nu): float(core.weights_[nu]) for nu in core.nus_}
                done += cost[s]
                if progress is not None:
                    frac = done / total
                    elapsed = time.perf_counter() - start
                    progress(min(frac, 1.0), elapsed * (1.0 - frac) / frac if frac > 0 else None)
    return result


def _covered(train: TargetData, test: TargetData):
    """Mask of test structures whose elements all occur in ``train`` (None when it does not apply)."""
    if test.kind not in ("scalar", "tensor") or train.counts is None or test.counts is None:
        return None
    if train.species is not None and test.species is not None and not np.array_equal(train.species, test.species):
        return None
    unseen = np.asarray(train.counts).sum(axis=0) == 0
    if not unseen.any():
        return None
    return ~np.any(np.asarray(test.counts)[:, unseen] > 0, axis=1)


def format_summary(curve: LearningCurve) -> str:
    """Plain-text table of a learning curve: mean ± std per model and size, and log–log slopes."""
    slopes = curve.slopes()
    unit = f" ({curve.unit})" if curve.unit else ""
    lines = [f"{'model':<12} {'n_train':>7}  MAE{unit} mean ± std      RMSE mean ± std"]
    for row in curve.summary():
        lines.append(f"{row['model']:<12} {row['n_train']:>7}  {row['mae_mean']:.5g} ± {row['mae_std']:.2g}"
                     f"      {row['rmse_mean']:.5g} ± {row['rmse_std']:.2g}")
    lines.append("log–log slopes of the MAE: " + ", ".join(
        f"{m} {s:+.2f}" if math.isfinite(s) else f"{m} n/a" for m, s in slopes.items()))
    return "\n".join(lines)


def compare_models(train_kernels: KernelSet, train: TargetData, test_kernels: KernelSet, test: TargetData, *,
                   models=None, intensive: bool = False, cancel=None, **params) -> list[dict]:
    """Fit every baseline and the mixed model on ``train``, score them on ``test``.

    ``models`` defaults to :func:`wkviz.models.standard_models` (composition, each single ν — ν=2 being the
    SOAP-equivalent kernel with the exact normalisation — and mixed). Returns one row per model: ``model``,
    ``mae``, ``rmse``, ``max_error``, ``r2``, ``r2_residual`` (of the target minus the composition baseline),
    ``mae_per_atom``, ``unit`` (test, components pooled, :func:`score_predictions`), ``cv_mae``, ``cv_rmse``
    (training CV), ``weights`` ({ν: relative weight}), ``seconds``.
    """
    if test.values is None:
        raise InputError("comparing models needs the test target values")
    names = standard_models(train_kernels.nu_max, train.kind) if models is None else list(models)
    rows = []
    for name in names:
        check_cancel(cancel)
        start = time.perf_counter()
        pred, est = fit_predict(train_kernels, train, test_kernels, test, model=name, intensive=intensive,
                                cancel=cancel, **params)
        core = est.model_
        m = score_predictions(train, test, pred, intensive=intensive)
        rows.append({
            "model": name, "mae": m.mae, "rmse": m.rmse, "max_error": m.max_error, "r2": m.r2,
            "r2_residual": m.r2_residual, "mae_per_atom": m.mae_per_atom, "unit": m.unit,
            "cv_mae": float(core.cv_mae_), "cv_rmse": float(core.cv_rmse_),
            "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
            "seconds": time.perf_counter() - start,
        })
    return rows
