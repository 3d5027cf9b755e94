"""What every sub-command shares: the hyperparameter flags, progress lines on stderr and reading structures.

The hyperparameter flags are generated from :data:`wkviz.hypers.HYPER_SPECS` (name, default, bounds, help), so a
new field of :class:`~wkviz.hypers.Hypers` gets its flag, its reproduce-command entry and its validation from the
one place it is declared.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import InputError, MemoryBudgetError, WkvizError
from ..hypers import HYPER_SPECS, Hypers

__all__ = ["KIND_HELP", "FitProgress", "ProgressLine", "add_hyper_flags", "add_model_flags", "check_intensive_hint",
           "check_model_args", "cost_line", "format_bytes", "format_seconds", "hypers_from_args", "kernel_options",
           "note", "optional_float", "read_structures"]


def optional_float(text):
    """``float(text)``, or None for ``none``/``off``/empty (the flags of optional hyperparameters)."""
    if text is None or str(text).lower() in ("none", "off", ""):
        return None
    return float(text)


def _flag_help(spec) -> str:
    unit = f", {spec.unit}" if spec.unit else ""
    off = f"; 'none' for {spec.none_means}" if spec.allows_none else ""
    return f"{spec.help}{unit}{off} (default %(default)s)"


def add_hyper_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per field of :class:`~wkviz.hypers.Hypers`, with that field's default.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Gets an argument group "Wigner-kernel hyperparameters" with ``--nu-max --lambda-max --cutoff
        --cutoff-width --density-width --density-scaling --radial-scale --radial-exponent --species-coupling
        --hydrogen-weight --hydrogen-center-weight --schedule --normalization --nu1-route`` (DESIGN.md §3);
        optional numbers take ``none``.
    """
    g = parser.add_argument_group("Wigner-kernel hyperparameters")
    for spec in HYPER_SPECS:
        if spec.choices is not None:
            g.add_argument(spec.flag, choices=spec.choices, default=spec.default, help=_flag_help(spec))
        else:
            kind = optional_float if spec.allows_none else spec.type
            g.add_argument(spec.flag, type=kind, default=spec.default, help=_flag_help(spec))


def hypers_from_args(args) -> Hypers:
    """The :class:`~wkviz.hypers.Hypers` described by parsed hyperparameter flags.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser that went through :func:`add_hyper_flags`.

    Returns
    -------
    Hypers

    Raises
    ------
    WkvizError
        An invalid value, as the one sentence ``main`` prints after ``error:``.
    """
    try:
        return Hypers(**{spec.name: getattr(args, spec.name) for spec in HYPER_SPECS})
    except ValueError as exc:
        raise WkvizError(str(exc)) from None


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
