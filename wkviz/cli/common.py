"""What every sub-command shares: the hyperparameter flags, progress lines on stderr and reading structures.

The hyperparameter flags are generated from :data:`wkviz.hypers.HYPER_SPECS` (name, default, bounds, help), so a
new field of :class:`~wkviz.hypers.Hypers` gets its flag, its reproduce-command entry and its validation from the
one place it is declared.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ..errors import InputError, MemoryBudgetError, WkvizError
from ..hypers import HYPER_SPECS, Hypers
from ..presets import DEFAULT_PRESET, PRESET_NAMES, PRESETS, choose_preset, get_preset
from .reproduce import format_hyper_value

__all__ = ["KIND_HELP", "NOT_GIVEN", "FitProgress", "ProgressLine", "add_hyper_flags", "add_model_flags",
           "check_intensive_hint", "check_model_args", "check_out", "check_tensor_rank", "cost_line",
           "explicit_hypers", "format_bytes", "format_seconds", "hypers_from_args", "kernel_options", "memory_budget_bytes", "note",
           "note_preset", "optional_float", "preset_from_args", "read_data_target", "read_structures",
           "restrict_to_splits"]


def optional_float(text):
    """``float(text)``, or None for ``none``/``off``/empty (the flags of optional hyperparameters)."""
    if text is None or str(text).lower() in ("none", "off", ""):
        return None
    return float(text)


class _NotGiven:
    """The default of every hyperparameter flag: "not on the command line", so the preset's value (or the
    :class:`~wkviz.hypers.Hypers` default) applies; distinct from ``none``, which switches an optional one off."""

    def __repr__(self):
        return "NOT_GIVEN"


#: The argparse default of the hyperparameter flags (see :func:`explicit_hypers`).
NOT_GIVEN = _NotGiven()


def _flag_help(spec) -> str:
    unit = f", {spec.unit}" if spec.unit else ""
    off = f"; 'none' for {spec.none_means}" if spec.allows_none else ""
    by = [f"{p.name} preset {format_hyper_value(p.values[spec.name])}" for p in PRESETS.values()
          if p.values.get(spec.name, spec.default) != spec.default]
    preset = f"; {', '.join(by)}" if by else ""
    # argparse formats help with %, so a literal % in a help text must be doubled
    return f"{spec.help}{unit}{off} (default {format_hyper_value(spec.default)}{preset})".replace("%", "%%")


def _preset_help() -> str:
    names = "; ".join(f"{p.name}: {p.label}" for p in PRESETS.values())
    return (f"starting hyperparameters ({names}); explicit flags win over it. Default: chosen from the data "
            "(metals for periodic cells or metals only, qm9 for molecules of H, C, N, O, F, paper otherwise) and "
            "printed on stderr").replace("%", "%%")


def add_hyper_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset`` and one flag per field of :class:`~wkviz.hypers.Hypers`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Gets an argument group "Wigner-kernel hyperparameters" with ``--preset --nu-max --lambda-max --cutoff
        --cutoff-width --density-width --density-scaling --radial-scale --radial-exponent --species-coupling
        --hydrogen-weight --hydrogen-center-weight --schedule --normalization --nu1-route`` (DESIGN.md §3);
        optional numbers take ``none``. The hyperparameter flags default to :data:`NOT_GIVEN` so that
        :func:`hypers_from_args` can tell a flag given from a default; ``--help`` shows the real defaults.
    """
    g = parser.add_argument_group("Wigner-kernel hyperparameters")
    g.add_argument("--preset", choices=PRESET_NAMES, default=None, help=_preset_help())
    for spec in HYPER_SPECS:
        if spec.choices is not None:
            g.add_argument(spec.flag, choices=spec.choices, default=NOT_GIVEN, help=_flag_help(spec))
        else:
            kind = optional_float if spec.allows_none else spec.type
            g.add_argument(spec.flag, type=kind, default=NOT_GIVEN, help=_flag_help(spec))


def explicit_hypers(args) -> dict:
    """The hyperparameters given as flags on the command line, ``{name: value}`` (``none`` included as None)."""
    return {spec.name: getattr(args, spec.name) for spec in HYPER_SPECS
            if getattr(args, spec.name, NOT_GIVEN) is not NOT_GIVEN}


def preset_from_args(args, frames=None) -> tuple[str, str]:
    """The preset to start from and why: ``--preset`` when given, else :func:`wkviz.presets.choose_preset` of
    ``frames``, else :data:`wkviz.presets.DEFAULT_PRESET` (the :class:`~wkviz.hypers.Hypers` defaults).

    Returns
    -------
    name, reason : str
    """
    name = getattr(args, "preset", None)
    if name is not None:
        return name, "given with --preset"
    if frames is not None:
        return choose_preset(frames)
    return DEFAULT_PRESET, "the default"


def hypers_from_args(args, frames=None, *, preset: str | None = None) -> Hypers:
    """The :class:`~wkviz.hypers.Hypers` described by parsed hyperparameter flags.

    Explicit flags win over the preset, the preset over the :class:`~wkviz.hypers.Hypers` defaults.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser that went through :func:`add_hyper_flags`.
    frames : sequence of ase.Atoms, optional
        The structures, to choose the preset from when neither ``preset`` nor ``--preset`` names one.
    preset : str, optional
        The preset's name (e.g. from :func:`preset_from_args`); default ``--preset``, else chosen from
        ``frames``, else the default preset.

    Returns
    -------
    Hypers

    Raises
    ------
    WkvizError
        An invalid value, as the one sentence ``main`` prints after ``error:``.
    """
    name = preset if preset is not None else preset_from_args(args, frames)[0]
    try:
        return get_preset(name).hypers(**explicit_hypers(args))
    except ValueError as exc:
        raise WkvizError(str(exc)) from None


def memory_budget_bytes(gib) -> int:
    """``--memory-budget`` (GiB) in bytes; refuses a value that is not a positive finite number."""
    gib = float(gib)
    if not math.isfinite(gib) or gib <= 0:
        raise InputError(f"--memory-budget must be a positive number of GiB such as 2, got {gib:g}")
    return int(gib * 2**30)


def check_out(path, example: str, inputs=()) -> None:
    """Refuse an ``--out`` path that cannot be written (a folder, a missing or read-only directory) or that is
    one of the ``inputs``, up front: before any structure is read or kernel computed. ``None`` passes."""
    if path is None:
        return
    from ..files import check_output_path

    target = check_output_path(path, "--out", example)
    for source in inputs:
        if source is not None and target.exists() and os.path.exists(source) and os.path.samefile(target, source):
            raise InputError(f"--out {path} is also the input file {source}; writing it would destroy the input, "
                             "so choose another output name")


def check_tensor_rank(ranks, lambda_max: int, target=None) -> None:
    """Refuse tensor kernels of an order above ``--lambda-max``, naming both flags and the fix.

    Parameters
    ----------
    ranks : iterable of int
        The tensor orders requested (1, 2).
    lambda_max : int
    target : TargetData, optional
        The target whose kind asks for them (``fit``, ``learning-curve``); without it they come from
        ``--tensor-rank``.
    """
    top = max([int(r) for r in ranks] or [0])
    if top <= lambda_max:
        return
    if target is None:
        raise InputError(f"--tensor-rank {top} needs --lambda-max {top} or more, got --lambda-max {lambda_max}; "
                         f"raise --lambda-max to {top} or drop --tensor-rank {top}")
    what = {"vector": "a 3-vector, learnt from λ=1 kernels",
            "tensor": "a 3×3 tensor, whose anisotropic part is learnt from λ=2 kernels"}.get(target.kind,
                                                                                        f"a {target.kind}")
    raise InputError(f"target '{target.key}' is {what}, which need --lambda-max {top} or more, got --lambda-max "
                     f"{lambda_max}; raise --lambda-max to {top}")


def note_preset(name: str, reason: str, args=None) -> None:
    """The stderr line naming the preset in use, why, and how to override it; call it once the inputs are
    checked, so a bad input still gives a single ``error:`` line."""
    p = get_preset(name)
    given = sorted(spec.flag for spec in HYPER_SPECS if spec.name in explicit_hypers(args)) if args is not None else []
    flags = f"; explicit flags win: {' '.join(given)}" if given else ""
    others = "|".join(n for n in PRESET_NAMES if n != name)
    note(f"preset: {p.name} — {p.label}: {reason}{flags}. Override with --preset {others} or single flags.")


class ProgressLine:
    """A single self-overwriting progress line on stderr: ``label  42.0% ETA   12.0 s`` (``kernels``, tiles)."""

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


class FitProgress:
    """The progress line of ``fit`` and ``learning-curve``: ``label:  42.0%  ETA    12 s``, no ETA once done.

    It differs from :class:`ProgressLine` only in format; both are kept so that stderr stays as it was.
    """

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


def read_structures(path, what: str | None = None):
    """The structures of ``path`` (any file ase can read).

    Parameters
    ----------
    path : str
    what : str, optional
        ``"training"``, ``"test"``, ...: when given, a file without structures is refused with that word in
        the message.

    Returns
    -------
    list of ase.Atoms
    """
    from ..data import read_structures as read

    frames = read(path)
    if what is not None and not frames:
        raise InputError(f"{what} file {path} holds no structures")
    return frames


# ---------------------------------------------------------------------------------------------------------------
# shared by the model sub-commands, ``fit`` and ``learning-curve``

#: The ``--help`` sentence on how the target kind is detected.
KIND_HELP = ("target kind is detected from the data: atoms.info scalar → structure scalar (sum kernel, "
             "--intensive for the mean), 3-vector → λ=1 model, 3×3 (or 9 numbers) → λ=0 ⊕ λ=2, "
             "atoms.arrays per-atom scalar → atomic model")


def add_model_flags(parser) -> None:
    """Add the model flags of ``fit`` and ``learning-curve`` (``--weights --selection --folds --cv-loss
    --intensive --memory-budget``)."""
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


def kernel_options(kind):
    """The ``compute`` options a target kind needs: atom-level kernels, tensor rank."""
    return {"atomic": kind == "atomic", "tensor_rank": {"vector": 1, "tensor": 2}.get(kind, 0)}


def check_model_args(args, models, nu_max):
    """Refuse bad model options before any kernel is computed."""
    from ..models import model_nus

    for name in models:
        model_nus(name, nu_max)
    if args.folds < 2:
        raise InputError(f"--folds must be at least 2, got {args.folds}")
    if getattr(args, "seed", 0) < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")


def read_data_target(args, example_out: str):
    """What ``learning-curve`` and ``compare`` share before their splits: ``--models`` and ``--out`` checked up
    front, the structures of ``--data`` read, the preset chosen from them, the hyperparameters, the target and the
    models to fit (checked against ``nu_max``, ``lambda_max`` and the target kind).

    Returns
    -------
    frames, preset, reason, hypers, target, models, budget
        ``preset``/``reason`` for :func:`note_preset`; ``budget`` the memory budget in bytes.
    """
    from ..models import TargetData, standard_models

    if args.models is not None and not [m for m in args.models.split(",") if m.strip()]:
        raise InputError(f"--models names no model, got {args.models!r}; give e.g. mixed,nu=2,composition")
    budget = memory_budget_bytes(args.memory_budget)
    check_out(args.out, example_out, inputs=[args.data])
    frames = read_structures(args.data, "data")
    preset, reason = preset_from_args(args, frames)
    hypers = hypers_from_args(args, preset=preset)
    target = TargetData.from_frames(frames, args.target)
    check_intensive_hint(target, args.intensive)
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = standard_models(hypers.nu_max, target.kind)
    check_model_args(args, models, hypers.nu_max)
    check_tensor_rank([kernel_options(target.kind)["tensor_rank"]], hypers.lambda_max, target)
    return frames, preset, reason, hypers, target, models, budget


def restrict_to_splits(frames, target, splits):
    """Only the structures some split uses enter the kernel (their union): ``(frames, target, splits)`` of those
    structures, the splits' indices renumbered into them."""
    import numpy as np

    used = np.unique(np.concatenate([np.concatenate([t, p]) for t, p in splits]))
    remap = np.full(len(target), -1)
    remap[used] = np.arange(len(used))
    return [frames[i] for i in used], target.subset(used), [(remap[t], remap[p]) for t, p in splits]


def note(text):
    """One line on stderr (progress notes; stdout keeps the results)."""
    print(text, file=sys.stderr, flush=True)


def check_intensive_hint(target, intensive):
    """Suggest ``--intensive`` for a scalar target that does not grow with the number of atoms."""
    if target.kind == "scalar" and not intensive and not target.extensive:
        note(f"note: '{target.key}' looks intensive (it does not grow with the number of atoms); "
             "consider --intensive")



def cost_line(*estimates) -> str:
    """"kernels need about X s and Y GiB" for one or more :meth:`~wkviz.engine.kernels.WignerKernel.estimate`
    results of one run (their times add up, the memory is the largest), refusing with
    :class:`~wkviz.errors.MemoryBudgetError` (the estimate's sentence) a request over the memory budget."""
    for est in estimates:
        if not est["fits"]:
            raise MemoryBudgetError(est["reason"])
    seconds = sum(est["seconds"] for est in estimates)
    memory = max(est["memory_bytes"] for est in estimates)
    return f"kernels need about {format_seconds(seconds)} and {memory / 2**30:.2f} GiB"


def format_seconds(s: float) -> str:
    """Seconds for a progress note: 0.4 s, 12 s, 15 min."""
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min"


def format_bytes(b: float) -> str:
    """Bytes for a progress note: kiB below 1 MiB, MiB below 1 GiB, else GiB."""
    if b < 2**20:
        return f"{b / 2**10:.0f} kiB"
    return f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"
