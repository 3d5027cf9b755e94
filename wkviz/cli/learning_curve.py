"""``python -m wkviz learning-curve`` (contract: DESIGN.md §3).

``learning-curve`` computes one kernel over the structures its splits use and fits every model on sub-blocks of
it, then writes the CSV ``model,n_train,repeat,mae,rmse``. Progress goes to stderr; user errors are raised as
:class:`wkviz.errors.WkvizError` and printed by ``main()`` as one ``error: ...`` line.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .common import (FitProgress, KIND_HELP, add_hyper_flags, add_model_flags, cost_line, kernel_options, note,
                     note_preset, read_data_target, restrict_to_splits)
from .distributed import add_distributed_flags, tile_options
from .sparse import add_sparse_flags, run_sparse_learning_curve

__all__ = ["MAX_REPEATS", "add_learning_curve_parser", "run_learning_curve"]

#: Most random splits per size: beyond this the spread of the mean error no longer changes what a curve shows,
#: and a typo (``--repeats 30000000``) would run for days.
MAX_REPEATS = 1000


def add_learning_curve_parser(subparsers):
    """Register ``learning-curve``; returns the parser."""
    p = subparsers.add_parser(
        "learning-curve",
        help="test error against training size for the mixed kernel, each single ν and composition",
        description="Learning curves from one kernel matrix (sub-blocks, never recomputed); " + KIND_HELP + ". "
                    "With --active-environments and --store PATH, each repeat's kernel tiles go to its own store "
                    "PATH/repeat-<r>.",
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
    add_model_flags(p)
    add_sparse_flags(p)
    add_distributed_flags(p)  # the sparse model's environment kernels as tiles into resumable stores
    add_hyper_flags(p)
    p.set_defaults(func=run_learning_curve)
    return p


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
    from ..evaluation import format_summary, learning_curve, learning_curve_splits
    from ..engine.kernels import WignerKernel
    from ..models import KernelSet

    sizes = _parse_sizes(args.sizes)
    tiles = tile_options(args, None if args.active_environments is not None else "--active-environments M")
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise InputError(f"--repeats must be between 1 and {MAX_REPEATS:,} random splits per size, got "
                         f"{args.repeats:,}")
    if args.test_size is not None and args.test_size < 1:
        raise InputError(f"--test-size must be at least 1 structure, got {args.test_size}; leave it out to test on "
                         "every structure beyond the largest size")
    frames, preset, reason, hypers, target, models, budget = read_data_target(args, "lc.csv")
    splits = learning_curve_splits(len(target), sizes, args.repeats, args.test_size, args.seed)
    # one kernel, over the structures some split uses (the union over repeats)
    frames_used, target, splits = restrict_to_splits(frames, target, splits)
    if args.active_environments is not None:
        note_preset(preset, reason, args)
        # one active set and one kernel per repeat, for the largest size; smaller sizes use prefixes of its rows
        note(f"wkviz learning-curve: sparse model on {args.active_environments} active environments, target "
             f"'{args.target}', sizes {sizes}, {args.repeats} repeat(s)")
        rows = run_sparse_learning_curve(args, frames_used, target, sizes, splits, hypers, tiles)
        for n in sizes:
            maes = [r["mae"] for r in rows if r["n_train"] == n]
            print(f"sparse-mixed n_train={n}: MAE {np.mean(maes):.6g} ({len(maes)} repeat(s))")
        print(f"wrote {args.out}")
        return 0

    opts = kernel_options(target.kind)
    engine = WignerKernel(hypers, memory_budget=budget)
    est = engine.estimate(frames_used, **opts)
    cost = cost_line(est)  # refuses an over-budget request before anything else is said
    note_preset(preset, reason, args)
    note(f"wkviz learning-curve: {target.kind} target '{args.target}', {len(frames_used)} structures in the kernel "
          f"({cost}), sizes {sizes}, {args.repeats} repeat(s), models {', '.join(models)}")
    res = engine.compute(frames_used, progress=FitProgress("kernels"), **opts)
    curve = learning_curve(
        KernelSet.from_result(res), target, sizes, models=models, repeats=args.repeats, seed=args.seed,
        splits=splits, intensive=args.intensive, progress=FitProgress("fits"), weights=args.weights,
        selection=args.selection, n_folds=args.folds, cv_loss=args.cv_loss,
    )
    curve.to_csv(args.out)
    empty = sorted({r["n_train"] for r in curve.rows if not np.isfinite(r["mae"])})
    if empty:
        note(f"note: at n_train={', '.join(map(str, empty))} some splits had no usable test structure (each holds an "
             f"element missing from the training set), so their errors are NaN in {args.out}; use larger --sizes "
             "or more structures")
    print(format_summary(curve))
    print(f"wrote {args.out}")
    return 0
