"""Command-line interface: ``python -m wkviz kernels|fit|learning-curve|compare|store`` (DESIGN.md §3, §3b).

Every sub-command takes the hyperparameter flags, prints progress on stderr and exits non-zero with a single
``error: ...`` line on bad input. One module per sub-command (:mod:`~wkviz.cli.kernels`, :mod:`~wkviz.cli.fit`,
:mod:`~wkviz.cli.learning_curve`, :mod:`~wkviz.cli.compare`, :mod:`~wkviz.cli.store`), what they share in
:mod:`~wkviz.cli.common`, the command line that reproduces a result in :mod:`~wkviz.cli.reproduce`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from ..errors import Cancelled, WkvizError
from ..files import describe_os_error
from .common import add_hyper_flags, hypers_from_args
from .compare import add_compare_parser, run_compare
from .distributed import add_distributed_flags, compute_distributed
from .fit import add_fit_parser, run_fit
from .kernels import add_kernels_parser, run_kernels
from .learning_curve import add_learning_curve_parser, run_learning_curve
from .md import add_md_parser
from .reproduce import cli_command
from .store import add_store_parser

# the sub-command functions are here too because the 0.1 modules wkviz.cli_models and wkviz.cli_distributed
# resolve to this package (wkviz.MOVED_MODULES)
__all__ = ["add_compare_parser", "add_distributed_flags", "add_fit_parser", "add_hyper_flags", "add_kernels_parser",
           "add_learning_curve_parser", "build_parser", "cli_command", "compute_distributed", "hypers_from_args",
           "main", "run_compare", "run_fit", "run_kernels", "run_learning_curve"]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m wkviz`` parser with its sub-commands; each sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(prog="python -m wkviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_kernels_parser(sub)
    add_fit_parser(sub)
    add_learning_curve_parser(sub)
    add_compare_parser(sub)
    add_store_parser(sub)
    add_md_parser(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (run records, worker shutdown) runs on the way out."""


@contextlib.contextmanager
def _sigterm_interrupts():
    # only the main thread may install handlers (main() is also called from tests and other threads)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Run ``python -m wkviz`` with ``argv`` (default ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad input (one ``error: ...`` line on stderr), 130 when cancelled or
        interrupted (Ctrl-C), 143 on SIGTERM; ``store verify`` returns 1 when it found damaged tiles.
        argparse's own usage errors exit with 2 as well.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_interrupts():
            return int(args.func(args) or 0)
    except WkvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except _Terminated:
        print("\nerror: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename}; check the path", file=sys.stderr)
        return 2
    except OSError as exc:  # permission denied, a full disk, a folder where a file was expected, ...
        print(f"error: {describe_os_error(exc, action='access')}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use fewer structures or a smaller --memory-budget", file=sys.stderr)
        return 2
