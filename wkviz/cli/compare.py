"""``python -m wkviz compare`` (contract: DESIGN.md §3b).

``compare`` computes ONE kernel over the structures its splits use, fits every model on the training part of K
random splits (every element of a test part present in its training part) and scores it on the test part. It
writes ``compare.csv`` (one row per model and split, :data:`wkviz.evaluation.compare.COMPARE_COLUMNS`) and prints
per model the mean ± standard error over splits and the paired differences of the test MAE to the best model and
to ν=2. The last stdout line is ``BEST=<model> MAE=<float> SE=<float> SPLITS=<int>``: the model with the lowest
mean test MAE, that mean and its standard error over splits (``nan`` for one split), in the target's unit.
"""

from __future__ import annotations


from ..errors import InputError
from .common import (FitProgress, KIND_HELP, add_hyper_flags, add_model_flags, cost_line, kernel_options, note,
                     note_preset, read_data_target, restrict_to_splits)

__all__ = ["add_compare_parser", "run_compare"]


def add_compare_parser(subparsers):
    """Register ``compare``; returns the parser."""
    p = subparsers.add_parser(
        "compare",
        help="compare models on K random splits: mean ± standard error and paired differences",
        description="Fit every model (composition, each single ν, mixed) on K random splits of one data set, "
                    "from one kernel, and compare them with standard errors and paired differences; " + KIND_HELP
                    + ". The last stdout line is 'BEST=<model> MAE=<float> SE=<float> SPLITS=<int>'.",
    )
    p.add_argument("--data", required=True, help="structures with the target (any file ase can read)")
    p.add_argument("--target", required=True, metavar="KEY", help="atoms.info or atoms.arrays key to learn")
    p.add_argument("--train-size", type=int, required=True, metavar="N", help="training structures per split")
    p.add_argument("--test-size", type=int, default=None, metavar="M",
                   help="test structures per split (default: every structure not in training)")
    p.add_argument("--splits", type=int, default=5, metavar="K", help="random splits (default 5)")
    p.add_argument("--stratify", choices=("none", "elements"), default="none",
                   help="'elements': draw both parts per element set (CHO, CHNO, …) in proportion to its size "
                        "(default none: plain random). Either way every element of a test part is in its training "
                        "part")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    p.add_argument("--models", default=None,
                   help="comma-separated models (default: composition, nu=1..nu_max, mixed)")
    p.add_argument("--out", required=True, metavar="CSV",
                   help="output CSV: model,split,n_train,n_test,mae,rmse,r2,cv_mae,mae_per_atom,r2_total,max_error,"
                        "unit,seconds (r2 of the target minus the composition baseline)")
    add_model_flags(p)
    add_hyper_flags(p)
    p.set_defaults(func=run_compare)
    return p


def run_compare(args) -> int:
    """Run ``compare`` from parsed arguments; returns the exit code (0)."""
    from ..engine.kernels import WignerKernel
    from ..evaluation.compare import compare, compare_splits, format_comparison
    from ..models import KernelSet

    if args.splits < 1:
        raise InputError(f"--splits must be at least 1, got {args.splits}")
    frames, preset, reason, hypers, target, models, budget = read_data_target(args, "compare.csv")
    splits = compare_splits(target, args.train_size, args.test_size, args.splits, args.seed, args.stratify)
    # one kernel, over the structures some split uses
    frames_used, target, splits = restrict_to_splits(frames, target, splits)

    opts = kernel_options(target.kind)
    engine = WignerKernel(hypers, memory_budget=budget)
    est = engine.estimate(frames_used, **opts)
    cost = cost_line(est)  # refuses an over-budget request before anything else is said
    note_preset(preset, reason, args)
    note(f"wkviz compare: {target.kind} target '{args.target}', {len(frames_used)} structures in the kernel ("
         f"{cost}), {args.splits} split(s) of {len(splits[0][0])}/{len(splits[0][1])}, models "
         f"{', '.join(models)}")
    res = engine.compute(frames_used, progress=FitProgress("kernels"), **opts)
    comp = compare(KernelSet.from_result(res), target, splits, models=models, intensive=args.intensive,
                   progress=FitProgress("fits"), weights=args.weights, selection=args.selection,
                   n_folds=args.folds, cv_loss=args.cv_loss)
    comp.to_csv(args.out)
    print(format_comparison(comp))
    print(f"wrote {args.out}")
    best = comp.best()
    row = next(r for r in comp.summary() if r["model"] == best)
    print(f"BEST={best} MAE={row['mae_mean']:.8g} SE={row['mae_se']:.8g} SPLITS={row['n_splits']}")
    return 0
