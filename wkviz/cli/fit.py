"""``python -m wkviz fit`` (contract: DESIGN.md §3).

``fit`` computes K(train, train) and K(test, train) — never test × test — chooses the model's hyperparameters
on the training set (GP evidence by default, or k-fold cross-validation), predicts the test set once, and ends stdout with
``MAE=<float> RMSE=<float>``. Progress goes to stderr; user errors are raised as
:class:`wkviz.errors.WkvizError` and printed by ``main()`` as one ``error: ...`` line.
"""

from __future__ import annotations

import csv
import time

import numpy as np

from ..errors import InputError
from ..files import atomic_write
from .common import (KIND_HELP, FitProgress, add_hyper_flags, add_model_flags, check_intensive_hint,
                     check_model_args, check_out, check_tensor_rank, cost_line, hypers_from_args, kernel_options,
                     memory_budget_bytes, note, note_preset, preset_from_args, read_structures)
from .distributed import add_distributed_flags, tile_options
from .forces import add_force_flags, run_force_fit
from .sparse import add_sparse_flags, sparse_fit_predict

__all__ = ["add_fit_parser", "run_fit"]


def add_fit_parser(subparsers):
    """Register ``fit`` on an ``argparse`` sub-parser collection; returns the parser."""
    p = subparsers.add_parser(
        "fit",
        help="fit a model on TRAIN (hyperparameters chosen on TRAIN only) and predict TEST",
        description="Fit a Wigner-kernel model and predict a test set; " + KIND_HELP + ". The last stdout line "
                    "is 'MAE=<float> RMSE=<float>' in the target's units.",
    )
    p.add_argument("--train", required=True, help="training structures (any file ase can read)")
    p.add_argument("--test", required=True, help="test structures, with the target (for the errors)")
    p.add_argument("--target", required=True, metavar="KEY", help="atoms.info or atoms.arrays key to learn")
    p.add_argument("--out", metavar="CSV", help="write predictions: structure,atom,component,true,predicted")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    p.add_argument("--model", default="mixed",
                   help="mixed (default), composition, or nu=<k> for a single body order")
    add_model_flags(p)
    add_sparse_flags(p)
    add_force_flags(p)  # after the sparse flags: it shares --active-environments
    add_distributed_flags(p)  # the sparse model's environment kernels as tiles into a resumable store
    add_hyper_flags(p)
    p.set_defaults(func=run_fit)
    return p


def _write_predictions(path, test, pred):
    structure, atom, component = test.row_labels()
    true = np.asarray(test.values, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    with atomic_write(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["structure", "atom", "component", "true", "predicted"])
        for row in zip(structure, atom, component, true, pred):
            w.writerow([int(row[0]), int(row[1]), int(row[2]), repr(float(row[3])), repr(float(row[4]))])


def run_fit(args) -> int:
    """Run ``fit`` from parsed arguments; returns the exit code (0)."""
    from ..evaluation import score_predictions
    from ..engine.kernels import WignerKernel
    from ..models import KernelSet, TargetData, fit_predict

    if getattr(args, "forces", None):
        if tile_options(args) is not None:
            raise InputError("--store and --scheduler compute the kernels of energy fits; an energy-and-force fit "
                             "(--forces) computes its kernels and gradients in memory: drop --store/--scheduler")
        return run_force_fit(args)
    # the tiled route is the sparse model's (an exact model's kernels: `python -m wkviz kernels --store`)
    tiles = tile_options(args, None if args.active_environments is not None else "--active-environments M")
    budget = memory_budget_bytes(args.memory_budget)
    check_out(args.out, "predictions.csv", inputs=[args.train, args.test])
    train_frames = read_structures(args.train, "training")
    test_frames = read_structures(args.test, "test")
    preset, reason = preset_from_args(args, train_frames + test_frames)
    hypers = hypers_from_args(args, preset=preset)
    check_model_args(args, [args.model], hypers.nu_max)
    species = np.unique(np.concatenate([a.numbers for a in train_frames] + [a.numbers for a in test_frames]))
    train = TargetData.from_frames(train_frames, args.target, species=species)
    test = TargetData.from_frames(test_frames, args.target, species=species)
    if test.kind != train.kind:
        raise InputError(f"target '{args.target}' is a {train.kind} in the training file but a {test.kind} in the "
                         "test file; use files with the same kind of target")
    if len(train) < 2:
        raise InputError("the training file needs at least 2 structures")
    check_intensive_hint(train, args.intensive)
    if args.active_environments is not None:
        note_preset(preset, reason, args)
        note(f"wkviz fit: sparse model, {train.kind} target '{args.target}', {len(train)} training and {len(test)} "
             f"test structures, {args.active_environments} active environments")
        pred, est = sparse_fit_predict(args, train_frames, test_frames, train, test, hypers, tiles)
    else:
        opts = kernel_options(train.kind)
        check_tensor_rank([opts["tensor_rank"]], hypers.lambda_max, train)
        engine = WignerKernel(hypers, memory_budget=budget)
        est_tt = engine.estimate(train_frames, **opts)
        est_vt = engine.estimate(test_frames, train_frames, **opts)
        cost = cost_line(est_tt, est_vt)  # refuses an over-budget request before anything else is said
        note_preset(preset, reason, args)
        note(f"wkviz fit: {train.kind} target '{args.target}', {len(train)} training and {len(test)} test "
             f"structures; {cost}")
        res_tt = engine.compute(train_frames, progress=FitProgress("kernels train×train"), **opts)
        res_vt = engine.compute(test_frames, train_frames, progress=FitProgress("kernels test×train"), **opts)

        how = "the GP evidence" if args.selection == "evidence" else "cross-validation"
        note(f"fitting: choosing body-order weights and regularisation by {how} on the training set")
        start = time.perf_counter()
        pred, est = fit_predict(
            KernelSet.from_result(res_tt), train, KernelSet.from_result(res_vt), test,
            model=args.model, intensive=args.intensive, random_state=args.seed, weights=args.weights,
            selection=args.selection, n_folds=args.folds, cv_loss=args.cv_loss,
        )
        note(f"model fitted in {time.perf_counter() - start:.1f} s")
    # with R² of the target minus the training set's composition baseline and, if extensive, the per-atom MAE
    m = score_predictions(train, test, pred, intensive=args.intensive)
    if args.out:
        _write_predictions(args.out, test, pred)
        note(f"wrote {args.out}")
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

