"""Models on Wigner kernels: mixed-kernel ridge/GP regression, target wrappers, sparse models and tasks."""

from .core import *  # noqa: F401,F403
from . import sparse  # noqa: F401
