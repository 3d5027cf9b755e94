"""The ``python -m wkviz ...`` command line that reproduces a result (DESIGN.md §3).

The hyperparameter flags are generated from :data:`wkviz.hypers.HYPER_SPECS`, the same place the parser's flags
come from, so a command written here always parses back to the same :class:`~wkviz.hypers.Hypers`; the preset
the values started from is written too (``--preset NAME``), for the reader.
"""

from __future__ import annotations

import shlex

from ..hypers import HYPER_SPECS
from ..presets import closest_preset

__all__ = ["cli_command", "format_hyper_value"]


def format_hyper_value(value) -> str:
    """A hyperparameter's value as the text of its flag: ``none`` for None, ``%g`` for floats where it is exact.

    Parameters
    ----------
    value : int, float, str or None

    Returns
    -------
    str
        ``%g`` keeps the familiar short form (``5``, ``0.95``); a float that ``%g`` would round (more than six
        significant digits) is written with ``repr`` so the command reproduces it exactly.
    """
    if value is None:  # written out: an omitted flag would mean the (possibly non-None) default
        return "none"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def cli_command(subcommand: str, hypers=None, *args: str, preset: str | None = None, **options) -> str:
    """The ``python -m wkviz ...`` command line that reproduces a result (DESIGN.md §3).

    Parameters
    ----------
    subcommand : {"kernels", "fit", "learning-curve", ...}
    hypers : wkviz.Hypers, optional
        Every hyperparameter flag is written out, defaults included, so the command does not depend on
        defaults that might change.
    *args : str
        Positional arguments (input files).
    preset : str, optional
        The preset the hyperparameters started from (:data:`wkviz.presets.PRESETS`), written as ``--preset NAME``
        before the hyperparameter flags; default (with ``hypers``) the preset they differ from least
        (:func:`wkviz.presets.closest_preset`). The hyperparameter flags are all written out as well and win over
        it, so the command gives the same :class:`~wkviz.hypers.Hypers` even if a preset's values change.
    **options
        ``name=value`` → ``--name value`` (underscores become dashes); ``True`` → bare flag; ``None``/``False``
        omitted; lists are joined with commas.

    Returns
    -------
    str
    """
    parts = ["python", "-m", "wkviz", subcommand, *[str(a) for a in args]]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    if hypers is not None:
        parts += ["--preset", str(preset) if preset is not None else closest_preset(hypers)]
        for spec in HYPER_SPECS:
            parts += [spec.flag, format_hyper_value(getattr(hypers, spec.name))]
    return " ".join(shlex.quote(p) for p in parts)
