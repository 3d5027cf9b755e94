"""Command-line interface: ``python -m wkviz kernels|fit|learning-curve`` (contract in DESIGN.md §3).

Every sub-command takes the hyperparameter flags, prints progress on stderr and exits non-zero with a single
``error: ...`` line on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .errors import Cancelled, WkvizError
from .hypers import NORMALIZATIONS, SCHEDULES, Hypers


def add_hyper_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--nu-max --lambda-max --cutoff --cutoff-width --density-width --density-scaling --radial-scale
    --radial-exponent --species-coupling --schedule --normalization`` (defaults of :class:`~wkviz.hypers.Hypers`)."""
    d = Hypers()
    g = parser.add_argument_group("Wigner-kernel hyperparameters")
    g.add_argument("--nu-max", type=int, default=d.nu_max, help="highest body order ν (default %(default)s)")
    g.add_argument("--lambda-max", type=int, default=d.lambda_max, help="highest angular order (default %(default)s)")
    g.add_argument("--cutoff", type=float, default=d.cutoff, help="cutoff radius, Å (default %(default)s)")
    g.add_argument("--cutoff-width", type=float, default=d.cutoff_width,
                   help="width of the smooth cutoff region, Å (default %(default)s)")
    g.add_argument("--density-width", type=float, default=d.density_width,
                   help="Gaussian width σ (σ₀ with --density-scaling), Å (default %(default)s)")
    g.add_argument("--density-scaling", type=_optional_float, default=d.density_scaling,
                   help="r_s of σ(r) = σ₀·exp(r/r_s), Å; 'none' for a constant width (default %(default)s)")
    g.add_argument("--radial-scale", type=_optional_float, default=d.radial_scale,
                   help="r₀ of the radial weight 1/(1+(r/r₀)^m), Å; 'none' to switch it off (default %(default)s)")
    g.add_argument("--radial-exponent", type=float, default=d.radial_exponent,
                   help="m of the radial weight (default %(default)s)")
    g.add_argument("--species-coupling", type=float, default=d.species_coupling,
                   help="overlap (0 ≤ a < 1) between neighbours of different heavy elements; 0 keeps every element "
                        "apart (default %(default)s)")
    g.add_argument("--hydrogen-weight", type=float, default=d.hydrogen_weight,
                   help="weight of hydrogen neighbours relative to heavy ones (default %(default)s)")
    g.add_argument("--hydrogen-center-weight", type=float, default=d.hydrogen_center_weight,
                   help="weight of hydrogen centres in the structure kernels, relative to heavy ones; 1 is the "
                        "paper's plain sum (default %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="default %(default)s")
    g.add_argument("--normalization", choices=NORMALIZATIONS, default=d.normalization, help="default %(default)s")
    g.add_argument("--nu1-route", choices=("basis", "exact"), default=d.nu1_route,
                   help="ν=1 kernels from the optimal radial basis (fast) or the exact pair sum")


def _optional_float(text):
    if text is None or str(text).lower() in ("none", "off", ""):
        return None
    return float(text)


def hypers_from_args(args) -> Hypers:
    """The :class:`Hypers` described by parsed hyperparameter flags (ValueError → one ``error:`` line)."""
    try:
        return Hypers(nu_max=args.nu_max, lambda_max=args.lambda_max, cutoff=args.cutoff,
                      cutoff_width=args.cutoff_width, density_width=args.density_width,
                      density_scaling=args.density_scaling, radial_scale=args.radial_scale,
                      radial_exponent=args.radial_exponent, species_coupling=args.species_coupling,
                      hydrogen_weight=args.hydrogen_weight,
                      hydrogen_center_weight=args.hydrogen_center_weight, schedule=args.schedule,
                      normalization=args.normalization, nu1_route=args.nu1_route)
    except ValueError as exc:
        raise WkvizError(str(exc)) from None


class ProgressLine:
    """A single self-overwriting progress line on stderr: ``label  42% ETA 12 s``."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._last = 0.0

    def __call__(self, fraction, eta_seconds=None):
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.5:
            return
        self._last = now
        eta = "" if eta_seconds is None else f" ETA {eta_seconds:6.1f} s"
        end = "\n" if fraction >= 1.0 else ""
        self.stream.write(f"\r{self.label} {100 * fraction:5.1f}%{eta}{end}")
        self.stream.flush()


def _read(path):
    from .data import read_structures

    return read_structures(path)


def cmd_kernels(args) -> int:
    from .engine.kernels import WignerKernel

    hypers = hypers_from_args(args)
    frames_a = _read(args.structures)
    frames_b = _read(args.other) if args.other else None
    if getattr(args, "scheduler", None):
        from .cli.distributed import compute_distributed

        return compute_distributed(args, frames_a, frames_b, hypers)
    ranks = tuple(sorted(set(args.tensor_rank or [0]) - {0}))
    engine = WignerKernel(hypers, memory_budget=int(args.memory_budget * 2**30))
    est = engine.estimate(frames_a, frames_b, atomic=args.atomic, tensor_rank=ranks)
    print(f"wkviz kernels: {len(frames_a)} × {len(frames_b) if frames_b else len(frames_a)} structures, "
          f"{est['n_pairs']:,} centre pairs, about {est['seconds']:.1f} s", file=sys.stderr)
    res = engine.compute(frames_a, frames_b, atomic=args.atomic, tensor_rank=ranks,
                         progress=ProgressLine("kernels"))
    res.to_npz(args.out)
    rate = res.n_pairs / res.seconds if res.seconds > 0 else float("nan")
    print(f"wrote {args.out}: K {res.K.shape} in {res.seconds:.2f} s ({rate:,.0f} pairs/s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wkviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    k = sub.add_parser("kernels", help="compute Wigner kernels and save them as .npz")
    k.add_argument("structures", help="structures A (any file ase can read)")
    k.add_argument("--other", help="structures B (default: B = A)")
    k.add_argument("--atomic", action="store_true", help="also save atom-level kernels K_atomic")
    k.add_argument("--tensor-rank", type=int, choices=(0, 1, 2), action="append",
                   help="1: also K_vector (λ=1); 2: also K_tensor (λ=2); repeat for both")
    k.add_argument("--memory-budget", type=float, default=2.0, help="GiB (default %(default)s)")
    k.add_argument("--out", required=True, help="output .npz")
    add_hyper_flags(k)
    from .cli.distributed import add_distributed_flags

    add_distributed_flags(k)
    k.set_defaults(func=cmd_kernels)

    try:
        from .cli import fit as cli_models
    except ImportError:
        cli_models = None
    if cli_models is not None:
        cli_models.add_fit_parser(sub)
        cli_models.add_learning_curve_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        func = getattr(args, "func", None)
        if func is None:
            from .cli import fit as cli_models

            func = {"fit": cli_models.run_fit, "learning-curve": cli_models.run_learning_curve}[args.command]
        return int(func(args) or 0)
    except WkvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename}; check the path", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use fewer structures or a smaller --memory-budget", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
