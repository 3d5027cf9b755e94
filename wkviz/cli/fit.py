"""``python -m wkviz fit`` and ``python -m wkviz learning-curve`` (contract: DESIGN.md §3).

``fit`` computes K(train, train) and K(test, train) — never test × test — chooses the model's hyperparameters
on the training set (GP evidence by default, or k-fold cross-validation), predicts the test set once, and ends stdout with
``MAE=<float> RMSE=<float>``. ``learning-curve`` computes one kernel over the structures its splits use and
fits every model on sub-blocks of it. Progress goes to stderr; user errors are raised as
:class:`wkviz.errors.WkvizError` and printed by ``main()`` as one ``error: ...`` line.
"""

from __future__ import annotations

import csv
import sys
import time

import numpy as np

from ..errors import InputError

__all__ = ["add_fit_parser", "add_learning_curve_parser", "run_fit", "run_learning_curve"]

_KIND_HELP = ("target kind is detected from the data: atoms.info scalar → structure scalar (sum kernel, "
              "--intensive for the mean), 3-vector → λ=1 model, 3×3 (or 9 numbers) → λ=0 ⊕ λ=2, "
              "atoms.arrays per-atom scalar → atomic model")


class _Progress:
    """Self-overwriting progress line on stderr, at most two updates per second."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._last = -1.0

    def __call__(self, fraction, eta_seconds=None):
        now = time.monotonic()
        done = fraction >= 1.0
        if not done and now - self._last < 0.5:
            return
        self._last = now
        eta = "" if eta_seconds is None or done else f"  ETA {eta_seconds:5.0f} s"
        self.stream.write(f"\r{self.label}: {100.0 * min(fraction, 1.0):5.1f}%{eta}" + ("\n" if done else ""))
        self.stream.flush()


def _model_flags(parser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--weights", choices=("free", "exponential"), default="free",
                   help="body-order weight law: a free positive weight per ν (default, as in the app; every single-ν "
                        "model is a corner of it), or the kernel exponential c_ν = C α^ν/ν! plus c_0")
    g.add_argument("--selection", choices=("evidence", "cv"), default="evidence",
                   help="how the body-order weights and regularisation are chosen on the training set: the GP "
                        "marginal likelihood (default; on QM9 2 meV more accurate than CV and 4× faster, BENCHMARKS.md §6) "
                        "or k-fold cross-validation; CV errors are reported either way")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds on the training set (default 5)")
    g.add_argument("--cv-loss", choices=("mae", "rmse"), default="mae", help="loss minimised by the CV search")
    g.add_argument("--intensive", action="store_true",
                   help="intensive target: mean kernels K/(n_A n_B) and a per-atom composition baseline")
    g.add_argument("--memory-budget", type=float, default=2.0, help="GiB for the kernel computation (default 2)")


def add_fit_parser(subparsers):
    """Register ``fit`` on an ``argparse`` sub-parser collection; returns the parser."""
    from ..__main__ import add_hyper_flags  # the shared hyperparameter flags live with main()

    p = subparsers.add_parser(
        "fit",
        help="fit a model on TRAIN (hyperparameters chosen on TRAIN only) and predict TEST",
        description="Fit a Wigner-kernel model and predict a test set; " + _KIND_HELP + ". The last stdout line "
                    "is 'MAE=<float> RMSE=<float>' in the target's units.",
    )
    p.add_argument("--train", required=True, help="training structures (any file ase can read)")
    p.add_argument("--test", required=True, help="test structures, with the target (for the errors)")
    p.add_argument("--target", required=True, metavar="KEY", help="atoms.info or atoms.arrays key to learn")
    p.add_argument("--out", metavar="CSV", help="write predictions: structure,atom,component,true,predicted")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    p.add_argument("--model", default="mixed",
                   help="mixed (default), composition, or nu=<k> for a single body order")
    _model_flags(p)
    add_hyper_flags(p)
    p.set_defaults(func=run_fit)
    return p


def add_learning_curve_parser(subparsers):
    """Register ``learning-curve``; returns the parser."""
    from ..__main__ import add_hyper_flags

    p = subparsers.add_parser(
        "learning-curve",
        help="test error against training size for the mixed kernel, each single ν and composition",
        description="Learning curves from one kernel matrix (sub-blocks, never recomputed); " + _KIND_HELP + ".",
    )
    p.add_argument("--data", required=True, help="structures with the target (any file ase can read)")
    p.add_argument("--target", required=True, metavar="KEY", help="atoms.info or atoms.arrays key to learn")
    p.add_argument("--sizes", required=True, help="comma-separated training sizes, e.g. 50,100,200")
    p.add_argument("--repeats", type=int, default=3, help="random splits per size (default 3)")
    p.add_argument("--test-size", type=int, default=None,
                   help="test structures per repeat (default: all structures beyond the largest size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and folds (default 0)")
    p.add_argument("--models", default=None,
                   help="comma-separated models (default: composition, nu=1..nu_max, mixed)")
    p.add_argument("--out", required=True, metavar="CSV", help="output CSV: model,n_train,repeat,mae,rmse")
    _model_flags(p)
    add_hyper_flags(p)
    p.set_defaults(func=run_learning_curve)
    return p


# ----------------------------------------------------------------------------------------------------------------
def _read(path, what):
    from ..data import read_structures

    frames = read_structures(path)
    if not frames:
        raise InputError(f"{what} file {path} holds no structures")
    return frames


def _kernel_options(kind):
    return {"atomic": kind == "atomic", "tensor_rank": {"vector": 1, "tensor": 2}.get(kind, 0)}


def _check_model_args(args, models, nu_max):
    """Refuse bad model options before any kernel is computed."""
    from ..models import model_nus

    for name in models:
        model_nus(name, nu_max)
    if args.folds < 2:
        raise InputError(f"--folds must be at least 2, got {args.folds}")


def _note(text):
    print(text, file=sys.stderr, flush=True)


def _check_intensive_hint(target, intensive):
    if target.kind == "scalar" and not intensive and not target.extensive:
        _note(f"note: '{target.key}' looks intensive (it does not grow with the number of atoms); "
              "consider --intensive")


def _write_predictions(path, test, pred):
    structure, atom, component = test.row_labels()
    true = np.asarray(test.values, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    try:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["structure", "atom", "component", "true", "predicted"])
            for row in zip(structure, atom, component, true, pred):
                w.writerow([int(row[0]), int(row[1]), int(row[2]), repr(float(row[3])), repr(float(row[4]))])
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; check the directory exists and is writable") from None


def run_fit(args) -> int:
    """Run ``fit`` from parsed arguments; returns the exit code (0)."""
    from ..__main__ import hypers_from_args
    from ..evaluation import metrics
    from ..engine.kernels import WignerKernel
    from ..models import KernelSet, TargetData, fit_predict

    hypers = hypers_from_args(args)
    _check_model_args(args, [args.model], hypers.nu_max)
    train_frames = _read(args.train, "training")
    test_frames = _read(args.test, "test")
    species = np.unique(np.concatenate([a.numbers for a in train_frames] + [a.numbers for a in test_frames]))
    train = TargetData.from_frames(train_frames, args.target, species=species)
    test = TargetData.from_frames(test_frames, args.target, species=species)
    if test.kind != train.kind:
        raise InputError(f"target '{args.target}' is a {train.kind} in the training file but a {test.kind} in the "
                         "test file; use files with the same kind of target")
    if len(train) < 2:
        raise InputError("the training file needs at least 2 structures")
    _check_intensive_hint(train, args.intensive)
    opts = _kernel_options(train.kind)
    engine = WignerKernel(hypers, memory_budget=int(args.memory_budget * 2**30))
    est_tt = engine.estimate(train_frames, **opts)
    est_vt = engine.estimate(test_frames, train_frames, **opts)
    _note(f"wkviz fit: {train.kind} target '{args.target}', {len(train)} training and {len(test)} test structures; "
          f"kernels need about {est_tt['seconds'] + est_vt['seconds']:.0f} s")
    res_tt = engine.compute(train_frames, progress=_Progress("kernels train×train"), **opts)
    res_vt = engine.compute(test_frames, train_frames, progress=_Progress("kernels test×train"), **opts)

    how = "the GP evidence" if args.selection == "evidence" else "cross-validation"
    _note(f"fitting: choosing body-order weights and regularisation by {how} on the training set")
    start = time.perf_counter()
    pred, est = fit_predict(
        KernelSet.from_result(res_tt), train, KernelSet.from_result(res_vt), test,
        model=args.model, intensive=args.intensive, random_state=args.seed, weights=args.weights,
        selection=args.selection, n_folds=args.folds, cv_loss=args.cv_loss,
    )
    _note(f"model fitted in {time.perf_counter() - start:.1f} s")
    m = metrics(test.values, pred, unit=train.unit)
    if args.out:
        _write_predictions(args.out, test, pred)
        _note(f"wrote {args.out}")
    summary = est.summary()
    parts = summary.items() if train.kind == "tensor" else [("", summary)]
    for name, s in parts:
        label = f" ({name})" if name else ""
        weights = ", ".join(f"ν={nu}: {w:.3g}" for nu, w in s["weights"].items()) or "none"
        print(f"model {args.model}{label}: weights {weights}; relative regularisation "
              f"{s['relative_regularization']:.3g}; CV MAE {s['cv_mae']:.6g}")
    print(f"test: {m}")
    print(f"MAE={m.mae:.8g} RMSE={m.rmse:.8g}")
    return 0


def _parse_sizes(text):
    try:
        sizes = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise InputError(f"--sizes must be comma-separated integers such as 50,100,200, got {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise InputError(f"--sizes must be integers ≥ 2 such as 50,100,200, got {text!r}")
    return sorted(set(sizes))


def run_learning_curve(args) -> int:
    """Run ``learning-curve`` from parsed arguments; returns the exit code (0)."""
    from ..__main__ import hypers_from_args
    from ..evaluation import format_summary, learning_curve, learning_curve_splits
    from ..engine.kernels import WignerKernel
    from ..models import KernelSet, TargetData, standard_models

    hypers = hypers_from_args(args)
    sizes = _parse_sizes(args.sizes)
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    frames = _read(args.data, "data")
    target = TargetData.from_frames(frames, args.target)
    _check_intensive_hint(target, args.intensive)
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = standard_models(hypers.nu_max, target.kind)
    _check_model_args(args, models, hypers.nu_max)

    # Only the structures some split uses enter the kernel (the union over repeats).
    splits = learning_curve_splits(len(target), sizes, args.repeats, args.test_size, args.seed)
    used = np.unique(np.concatenate([np.concatenate([t, p]) for t, p in splits]))
    remap = np.full(len(target), -1)
    remap[used] = np.arange(len(used))
    splits = [(remap[t], remap[p]) for t, p in splits]
    frames_used = [frames[i] for i in used]
    target = target.subset(used)

    opts = _kernel_options(target.kind)
    engine = WignerKernel(hypers, memory_budget=int(args.memory_budget * 2**30))
    est = engine.estimate(frames_used, **opts)
    _note(f"wkviz learning-curve: {target.kind} target '{args.target}', {len(used)} structures in the kernel "
          f"(about {est['seconds']:.0f} s), sizes {sizes}, {args.repeats} repeat(s), models {', '.join(models)}")
    res = engine.compute(frames_used, progress=_Progress("kernels"), **opts)
    curve = learning_curve(
        KernelSet.from_result(res), target, sizes, models=models, repeats=args.repeats, seed=args.seed,
        splits=splits, intensive=args.intensive, progress=_Progress("fits"), weights=args.weights,
        selection=args.selection, n_folds=args.folds, cv_loss=args.cv_loss,
    )
    try:
        curve.to_csv(args.out)
    except OSError as exc:
        raise InputError(f"cannot write {args.out}: {exc.strerror}; check the directory exists") from None
    print(format_summary(curve))
    print(f"wrote {args.out}")
    return 0
