"""wkviz: Wigner kernels with a Numba backend, models on them, and figures for a Streamlit dashboard."""

import os

# Numba's OpenMP threads spin after a parallel kernel and take the cores from the OpenBLAS threads that run next
# (measured: a 200×200 eigh 10–50× slower right after a parallel kernel). Passive waiting removes that. It must be
# set before the OpenMP runtime starts, i.e. before any wkviz kernel runs; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import Cancelled, InputError, MemoryBudgetError, WkvizError
from .hypers import Hypers

__version__ = "0.1.0"

__all__ = ["Hypers", "WkvizError", "InputError", "MemoryBudgetError", "Cancelled", "__version__"]
