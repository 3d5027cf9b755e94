"""wkviz: Wigner kernels with a Numba backend, models on them, and figures for a Streamlit dashboard."""

from .errors import Cancelled, InputError, MemoryBudgetError, WkvizError
from .hypers import Hypers

__version__ = "0.1.0"

__all__ = ["Hypers", "WkvizError", "InputError", "MemoryBudgetError", "Cancelled", "__version__"]
