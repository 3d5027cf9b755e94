"""``python -m wkviz``: the command line lives in :mod:`wkviz.cli`."""

import sys

from .cli import main
# re-exported for one release (issue 14): import them from wkviz.cli.common
from .cli.common import ProgressLine, add_hyper_flags, hypers_from_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
