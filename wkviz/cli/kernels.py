"""``python -m wkviz kernels``: compute Wigner kernels and save them as ``.npz`` (contract: DESIGN.md §3)."""

from __future__ import annotations

import sys

from .common import (ProgressLine, add_hyper_flags, check_out, check_tensor_rank, cost_line, hypers_from_args,
                     memory_budget_bytes, note_preset, preset_from_args, read_structures)
from .distributed import add_distributed_flags, tile_options

__all__ = ["add_kernels_parser", "run_kernels"]


def add_kernels_parser(subparsers):
    """Register ``kernels`` on an ``argparse`` sub-parser collection; returns the parser."""
    k = subparsers.add_parser("kernels", help="compute Wigner kernels and save them as .npz")
    k.add_argument("structures", help="structures A (any file ase can read)")
    k.add_argument("--other", help="structures B (default: B = A)")
    k.add_argument("--atomic", action="store_true", help="also save atom-level kernels K_atomic")
    k.add_argument("--tensor-rank", type=int, choices=(0, 1, 2), action="append",
                   help="1: also K_vector (λ=1); 2: also K_tensor (λ=2); repeat for both")
    k.add_argument("--memory-budget", type=float, default=2.0, help="GiB (default %(default)s)")
    k.add_argument("--out", required=True, help="output .npz")
    add_hyper_flags(k)
    add_distributed_flags(k)
    k.set_defaults(func=run_kernels)
    return k


def run_kernels(args) -> int:
    """Run ``kernels`` from parsed arguments (as tiles with ``--scheduler`` or ``--store``); returns the exit code."""
    from ..engine.kernels import WignerKernel

    budget = memory_budget_bytes(args.memory_budget)
    tile_options(args)  # --workers, --tile-size checked before anything is read
    check_out(args.out, "K.npz", inputs=[args.structures, args.other])
    frames_a = read_structures(args.structures, "structures")
    frames_b = read_structures(args.other, "--other") if args.other else None
    preset, reason = preset_from_args(args, frames_a + (frames_b or []))
    hypers = hypers_from_args(args, preset=preset)
    ranks = tuple(sorted(set(args.tensor_rank or [0]) - {0}))
    check_tensor_rank(ranks, hypers.lambda_max)
    if getattr(args, "scheduler", None) or getattr(args, "store", None):
        from .distributed import compute_distributed

        note_preset(preset, reason, args)
        return compute_distributed(args, frames_a, frames_b, hypers)
    engine = WignerKernel(hypers, memory_budget=budget)
    est = engine.estimate(frames_a, frames_b, atomic=args.atomic, tensor_rank=ranks)
    cost = cost_line(est)  # refuses an over-budget request before anything else is said
    note_preset(preset, reason, args)
    print(f"wkviz kernels: {len(frames_a)} × {len(frames_b) if frames_b else len(frames_a)} structures, "
          f"{est['n_pairs']:,} centre pairs; {cost}", file=sys.stderr)
    res = engine.compute(frames_a, frames_b, atomic=args.atomic, tensor_rank=ranks,
                         progress=ProgressLine("kernels"))
    res.to_npz(args.out)
    rate = res.n_pairs / res.seconds if res.seconds > 0 else float("nan")
    print(f"wrote {args.out}: K {res.K.shape} in {res.seconds:.2f} s ({rate:,.0f} pairs/s)", file=sys.stderr)
    return 0
