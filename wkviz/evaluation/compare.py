"""Models compared on repeated random splits, with standard errors and paired differences.

One split decides nothing: on QM9 at 500 training molecules the split-to-split spread of the test MAE (~5 meV)
is as large as the differences between the better models. :func:`compare` fits every model on each of K random
splits of one data set, all from ONE kernel over the structures the splits use (sub-blocks by
:meth:`wkviz.models.KernelSet.subset`, never recomputed), so that each split scores every model on the same test
structures. :class:`Comparison` then gives per model the mean ± standard error over splits and the PAIRED
difference to a reference model (per split, so the split-to-split spread that all models share cancels): its mean
± standard error and how many splits each side wins. A difference within 2 standard errors is called a tie.

Every split holds in its training part every element of its test part (:func:`compare_splits`): an element unseen
in training has no baseline energy, and its test structures would measure that, not the model. ``python -m wkviz
compare`` and the Models page both run this module.
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
from .learning import learning_curve_splits, score_predictions

__all__ = ["COMPARE_COLUMNS", "STRATIFY", "REFERENCE_MODEL", "compare_splits", "cover_by_swaps", "score_row",
           "compare", "paired_difference", "Comparison", "format_comparison"]

#: Columns of ``compare.csv`` (one row per model and split). ``r2`` is the R² of the target minus the composition
#: baseline fitted on the split's training part (of the target itself for vectors, which have no baseline),
#: ``r2_total`` that of the target itself; ``mae_per_atom`` is NaN unless the target is an extensive structure
#: scalar; ``unit`` is the target's unit (errors in it, per-atom errors in it per atom).
COMPARE_COLUMNS = ("model", "split", "n_train", "n_test", "mae", "rmse", "r2", "cv_mae", "mae_per_atom", "r2_total",
                   "max_error", "unit", "seconds")

STRATIFY = ("none", "elements")

#: The model every comparison is also paired against: ν=2 is the SOAP-equivalent kernel (exact normalisation).
REFERENCE_MODEL = "nu=2"

_TIE_SE = 2.0  # a paired difference within this many standard errors of zero is a tie
_SAME_RTOL = 1e-6  # below this relative difference two models are the same up to round-off


def _presence(counts) -> np.ndarray:
    return np.asarray(counts) > 0


def cover_by_swaps(train, test, counts, *, seed=0, spare=()):
    """Make every element of the test part occur in the training part, keeping both sizes.

    Unlike :func:`wkviz.data.cover_elements` (which moves such test structures into training, so the sizes
    change), the sizes stay those asked for: every split of a comparison has the same ``n_train`` and ``n_test``.

    A test structure with an element that no training structure has is swapped with a random training structure
    whose every element has another holder in training (so nothing else becomes uncovered). When no training
    structure can go, the test structure is replaced by a covered one from ``spare`` (structures in neither part),
    else the split is refused.

    Parameters
    ----------
    train, test : array_like of int
        Structure indices of the two parts.
    counts : ndarray of shape (n, n_elements)
        Element counts of all structures (:attr:`wkviz.models.TargetData.counts`).
    seed : int or sequence of int
    spare : array_like of int
        Structures used by neither part.

    Returns
    -------
    (train, test) : sorted int arrays
    """
    has = _presence(counts)
    train, test, spare = list(map(int, train)), list(map(int, test)), list(map(int, spare))
    rng = np.random.default_rng(seed)
    while True:
        seen = has[train].any(axis=0)
        bad = [s for s in test if np.any(has[s] & ~seen)]
        if not bad:
            break
        s = bad[0]
        holders = has[train].sum(axis=0)
        safe = np.flatnonzero(~np.any(has[train] & (holders < 2)[None], axis=1))
        test.remove(s)
        if len(safe):
            t = train[int(rng.choice(safe))]
            train.remove(t)
            train.append(s)
            test.append(t)
            continue
        ok = [u for u in spare if not np.any(has[u] & ~seen)]
        if not ok:
            raise InputError("cannot split the data so that every element of the test part is in the training part "
                             "(too few structures hold some element); use a larger --train-size or fewer rare "
                             "elements")
        u = ok[int(rng.integers(len(ok)))]
        spare.remove(u)
        test.append(u)
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _largest_remainder(total: int, weights: np.ndarray, rng) -> np.ndarray:
    """Integers ≤ weights summing to ``total`` (≤ weights.sum()), proportional to ``weights``."""
    weights = np.asarray(weights, dtype=np.float64)
    quota = total * weights / weights.sum()
    out = np.floor(quota).astype(np.int64)
    frac = quota - out + rng.random(len(quota)) * 1e-9  # random tie-break
    for j in np.argsort(-frac)[: total - int(out.sum())]:
        out[j] += 1
    return np.minimum(out, weights.astype(np.int64))


def compare_splits(target: TargetData, train_size: int, test_size: int | None = None, n_splits: int = 5,
                   seed: int = 0, stratify: str = "none") -> list[tuple[np.ndarray, np.ndarray]]:
    """K random ``(train, test)`` splits of ``target``'s structures, every test element present in training.

    ``stratify="none"``: split r is that of :func:`wkviz.evaluation.learning_curve_splits` (seed ``(seed, r)``),
    ``"elements"``: both parts drawn per element set (CHO, CHNO, …) in proportion to its size, so every split
    holds the same mix of chemistries. Either way :func:`cover_by_swaps` then moves structures so that no test
    structure has an element its training part lacks.

    Parameters
    ----------
    target : TargetData
        Only ``counts`` (element counts) and the number of structures are read.
    train_size : int
    test_size : int, optional
        Default: every structure not in training.
    n_splits : int
    seed : int
    stratify : {"none", "elements"}

    Returns
    -------
    list of (train_idx, test_idx), sorted int arrays
    """
    n = len(target)
    if stratify not in STRATIFY:
        raise InputError(f"stratify must be one of {', '.join(STRATIFY)}, got {stratify!r}")
    train_size = int(train_size)
    if train_size < 2:
        raise InputError(f"the training part needs at least 2 structures, got --train-size {train_size}")
    n_test = n - train_size if test_size is None else int(test_size)
    if int(n_splits) < 1:
        raise InputError(f"--splits must be at least 1, got {n_splits}")
    if n_test < 1 or train_size + n_test > n:
        raise InputError(f"{n} structures cannot hold a training part of {train_size} plus a test part of "
                         f"{max(n_test, 1)}; use a smaller --train-size or --test-size (at most {n} in total)")
    base = learning_curve_splits(n, [train_size], int(n_splits), n_test, seed)
    counts = target.counts
    out = []
    for r, (test_idx, train_order) in enumerate(base):
        if stratify == "elements":
            if counts is None:
                raise InputError("stratifying by element set needs the structures' compositions")
            rng = np.random.default_rng([int(seed), r, 2])
            labels = np.unique(_presence(counts), axis=0, return_inverse=True)[1].ravel()
            perm = rng.permutation(n)
            strata = [perm[labels[perm] == k] for k in range(labels.max() + 1)]
            sizes = np.array([len(s) for s in strata])
            n_te = _largest_remainder(n_test, sizes, rng)
            n_tr = _largest_remainder(train_size, sizes - n_te, rng)
            test_idx = np.concatenate([s[:a] for s, a in zip(strata, n_te)])
            train_order = np.concatenate([s[a:a + b] for s, a, b in zip(strata, n_te, n_tr)])
        train_idx = np.sort(train_order)
        if counts is not None:
            spare = np.setdiff1d(np.arange(n), np.concatenate([train_idx, test_idx]))
            train_idx, test_idx = cover_by_swaps(train_idx, test_idx, counts, seed=[int(seed), r, 1], spare=spare)
        out.append((np.sort(train_idx), np.sort(test_idx)))
    return out


def score_row(model: str, split: int, train: TargetData, test: TargetData, pred, est, *, intensive: bool = False,
              seconds: float = float("nan")) -> dict:
    """One row of ``compare.csv`` (:data:`COMPARE_COLUMNS`) for a model fitted on ``train`` that predicted
    ``pred`` for ``test``; also ``weights`` ({ν: relative weight}), which the CSV leaves out."""
    m = score_predictions(train, test, pred, intensive=intensive)
    core = est.model_
    return {
        "model": model, "split": int(split), "n_train": len(train), "n_test": len(test), "mae": m.mae,
        "rmse": m.rmse, "r2": m.r2_residual if math.isfinite(m.r2_residual) else m.r2, "cv_mae": float(core.cv_mae_),
        "mae_per_atom": m.mae_per_atom, "r2_total": m.r2, "max_error": m.max_error, "unit": m.unit,
        "seconds": float(seconds), "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
    }


def paired_difference(a, b, *, rtol: float = _SAME_RTOL) -> dict:
    """Paired comparison of per-split errors ``a`` (a model) and ``b`` (the reference), same splits in order.

    Returns ``mean`` and ``se`` of d = a − b (standard error = sample std / √K; NaN for one split), ``n``, ``wins``
    (splits where a is lower), ``losses`` (where b is lower) and ``verdict``: ``"better"``/``"worse"`` when
    |mean| > 2 se, else ``"tie"``; ``"n/a"`` with a single split (no spread to judge by). Differences below
    ``rtol`` × mean(b) are a tie whatever their spread: two models that are the same up to round-off (a mixed
    model whose weights went to one body order) differ by ~1e-8 relative with an even smaller spread.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InputError("a paired difference needs the same splits for both models")
    d = a - b
    k = d.size
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan")
    if abs(mean) <= rtol * abs(float(b.mean())) or np.all(d == 0):
        verdict = "tie"
    elif not math.isfinite(se):
        verdict = "n/a"
    elif abs(mean) > _TIE_SE * se:
        verdict = "better" if mean < 0 else "worse"
    else:
        verdict = "tie"
    return {"mean": mean, "se": se, "n": int(k), "wins": int((d < 0).sum()), "losses": int((d > 0).sum()),
            "verdict": verdict}


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")


@dataclass
class Comparison:
    """Every model's scores on every split (the rows of ``compare.csv``) and their statistics.

    Attributes
    ----------
    rows : list of dict
        :data:`COMPARE_COLUMNS` (+ ``weights``), one per (model, split).
    models : list of str
    unit, key : str
        Unit and name of the target.
    """

    rows: list = field(default_factory=list)
    models: list = field(default_factory=list)
    unit: str = ""
    key: str = ""

    @property
    def splits(self) -> list[int]:
        return sorted({int(r["split"]) for r in self.rows})

    def values(self, model: str, metric: str = "mae") -> np.ndarray:
        """``metric`` of ``model`` on every split, in split order."""
        by_split = {int(r["split"]): float(r[metric]) for r in self.rows if r["model"] == model}
        return np.array([by_split[s] for s in sorted(by_split)])

    def summary(self) -> list[dict]:
        """Per model: ``mae``, ``rmse``, ``r2``, ``cv_mae``, ``mae_per_atom`` as ``<name>_mean``/``<name>_se``
        (standard error over splits; NaN for one split) and ``n_splits``."""
        out = []
        for model in self.models:
            sel = [r for r in self.rows if r["model"] == model]
            if not sel:
                continue
            row = {"model": model, "n_splits": len(sel)}
            for metric in ("mae", "rmse", "r2", "cv_mae", "mae_per_atom"):
                row[f"{metric}_mean"], row[f"{metric}_se"] = _mean_se([float(r[metric]) for r in sel])
            out.append(row)
        return out

    def best(self, metric: str = "mae") -> str:
        """The model with the lowest mean ``metric``."""
        summ = self.summary()
        if not summ:
            raise InputError("the comparison holds no results")
        return min(summ, key=lambda r: r[f"{metric}_mean"])["model"]

    def paired(self, reference: str | None = None, metric: str = "mae") -> list[dict]:
        """:func:`paired_difference` of every model against ``reference`` (default: the best), one dict per model
        with ``model`` and ``reference`` added (the reference against itself included: a zero difference)."""
        reference = self.best(metric) if reference is None else reference
        if reference not in self.models:
            raise InputError(f"reference model {reference!r} is not among the compared models {self.models}")
        ref = self.values(reference, metric)
        out = []
        for model in self.models:
            vals = self.values(model, metric)
            if len(vals) != len(ref):
                raise InputError(f"{model} and {reference} were not scored on the same splits")
            out.append({"model": model, "reference": reference, **paired_difference(vals, ref)})
        return out

    def to_csv(self, path) -> None:
        """Write :data:`COMPARE_COLUMNS`, one line per (model, split), atomically (:func:`wkviz.files.atomic_write`);
        floats as ``repr`` (round-trip exact)."""
        with atomic_write(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COMPARE_COLUMNS)
            for r in self.rows:
                writer.writerow([repr(float(r[c])) if isinstance(r[c], (float, np.floating)) else r[c]
                                 for c in COMPARE_COLUMNS])

    @classmethod
    def from_csv(cls, path) -> "Comparison":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(COMPARE_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path} is not a compare CSV: missing column(s) {', '.join(sorted(missing))}")
            rows = []
            for r in reader:
                row = {c: r[c] for c in COMPARE_COLUMNS}
                for c in ("split", "n_train", "n_test"):
                    row[c] = int(row[c])
                for c in ("mae", "rmse", "r2", "cv_mae", "mae_per_atom", "r2_total", "max_error", "seconds"):
                    row[c] = float(row[c])
                rows.append(row)
        return cls(rows=rows, models=list(dict.fromkeys(r["model"] for r in rows)),
                   unit=rows[0]["unit"] if rows else "")


def compare(kernels: KernelSet, target: TargetData, splits, *, models=None, intensive: bool = False,
            split_ids=None, progress=None, cancel=None, **params) -> Comparison:
    """Fit every model on the training part of every split and score it on the test part.

    Parameters
    ----------
    kernels : KernelSet or KernelResult
        Kernels of all structures of ``target`` with themselves (the blocks the target kind needs).
    target : TargetData
    splits : list of (train_idx, test_idx)
        E.g. :func:`compare_splits`.
    models : sequence of str, optional
        Default :func:`wkviz.models.standard_models` (composition, each ν, mixed).
    intensive : bool
    split_ids : sequence of int, optional
        The ``split`` column of each split (default 0, 1, …).
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every fit.
    cancel : threading.Event-like or callable, optional
        Checked before every fit and inside every hyperparameter search.
    **params
        Estimator parameters (``weights``, ``selection``, ``n_folds``, ``cv_loss`` …); ``random_state`` defaults
        to the split's id.

    Returns
    -------
    Comparison
    """
    kernels = KernelSet.of(kernels)
    if target.values is None:
        raise InputError("comparing models needs the target values")
    models = standard_models(kernels.nu_max, target.kind) if models is None else list(models)
    split_ids = list(range(len(splits))) if split_ids is None else [int(s) for s in split_ids]
    result = Comparison(models=models, unit=target.unit, key=target.key)
    total = len(splits) * len(models)
    start = time.perf_counter()
    if progress is not None:
        progress(0.0, None)
    done = 0
    for sid, (train_idx, test_idx) in zip(split_ids, splits):
        train_idx, test_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
        if np.intersect1d(train_idx, test_idx).size:
            raise InputError(f"split {sid} uses the same structure for training and testing")
        train_k, test_k = kernels.subset(train_idx, train_idx), kernels.subset(test_idx, train_idx)
        train, test = target.subset(train_idx), target.subset(test_idx)
        for model in models:
            check_cancel(cancel)
            t0 = time.perf_counter()
            p = dict(params)
            p.setdefault("random_state", sid)
            pred, est = fit_predict(train_k, train, test_k, test, model=model, intensive=intensive, cancel=cancel,
                                    **p)
            result.rows.append(score_row(model, sid, train, test, pred, est, intensive=intensive,
                                         seconds=time.perf_counter() - t0))
            done += 1
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress(done / total, elapsed * (total - done) / done)
    return result


def _pm(mean: float, se: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {se:.2g}" if math.isfinite(se) else f"{mean:.{digits}g}"


def format_comparison(comp: Comparison, reference: str = REFERENCE_MODEL) -> str:
    """The plain-text report of ``python -m wkviz compare``: mean ± standard error per model, then the paired
    differences of the test MAE to the best model and to ``reference`` (when compared)."""
    u = f" {comp.unit}" if comp.unit else ""
    summ = comp.summary()
    k = len(comp.splits)
    lines = [f"test errors over {k} split{'s' if k != 1 else ''}, mean ± standard error (unit:{u or ' none'}); "
             "R² of the target minus the composition baseline fitted on each training part",
             f"{'model':<12} {'MAE':>20} {'RMSE':>20} {'R² (residual)':>18} {'CV MAE':>20} {'MAE/atom':>20}"]
    for r in summ:
        lines.append(f"{r['model']:<12} {_pm(r['mae_mean'], r['mae_se']):>20} {_pm(r['rmse_mean'], r['rmse_se']):>20} "
                     f"{_pm(r['r2_mean'], r['r2_se']):>18} {_pm(r['cv_mae_mean'], r['cv_mae_se']):>20} "
                     f"{_pm(r['mae_per_atom_mean'], r['mae_per_atom_se']):>20}")
    refs = [comp.best()]
    if reference in comp.models and reference != refs[0]:
        refs.append(reference)
    for ref in refs:
        what = "the best model" if ref == refs[0] else "ν=2 (SOAP-equivalent)"
        lines.append(f"paired difference of the test MAE to {what}, {ref} (model − {ref}, per split; "
                     f"wins: splits where the model – {ref} is lower; within 2 se: tie):")
        for p in comp.paired(ref):
            if p["model"] == ref:
                continue
            verdict = {"better": f"{p['model']} better", "worse": f"{ref} better", "tie": "tie",
                       "n/a": "one split: no standard error"}[p["verdict"]]
            lines.append(f"  {p['model']:<12} {p['mean']:>+11.4g} ± {p['se']:<8.2g}{u}   wins {p['wins']}–{p['losses']} "
                         f"of {p['n']}   {verdict}")
    return "\n".join(lines)
