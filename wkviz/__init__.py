"""wkviz: Wigner kernels with a Numba backend, models on them, and figures for a Streamlit dashboard.

The sub-packages follow the data flow (ARCHITECTURE.md): :mod:`wkviz.data` (structures) → :mod:`wkviz.engine`
(neighbours → ν=1 → Wigner iteration → structure kernels) → :mod:`wkviz.models` → :mod:`wkviz.evaluation` →
:mod:`wkviz.views`; :mod:`wkviz.scale` (tiles, stores, Dask) and :mod:`wkviz.cli` sit beside the flow.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

# Numba's OpenMP threads spin after a parallel kernel and take the cores from the OpenBLAS threads that run next
# (measured: a 200×200 eigh 10–50× slower right after a parallel kernel). Passive waiting removes that. It must be
# set before the OpenMP runtime starts, i.e. before any wkviz kernel runs; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import Cancelled, InputError, MemoryBudgetError, WkvizError  # noqa: E402
from .hypers import Hypers  # noqa: E402

__version__ = "0.5.0"

__all__ = ["Hypers", "WignerKernel", "KernelResult", "WkvizError", "InputError", "MemoryBudgetError", "Cancelled",
           "__version__"]

#: Modules of the flat 0.1 layout and where they live now (CHANGELOG.md, 0.2.0). ``import wkviz.kernels`` still
#: works and warns; the alias is the new module itself, so state and ``isinstance`` checks are shared.
MOVED_MODULES = {
    "spherical": "wkviz.engine.spherical",
    "neighbors": "wkviz.engine.neighbors",
    "density": "wkviz.engine.density",
    "wigner": "wkviz.engine.wigner",
    "kernels": "wkviz.engine.kernels",
    "features": "wkviz.engine.features",
    "scaling": "wkviz.evaluation.scaling",
    "projection": "wkviz.evaluation.projection",
    "sparse": "wkviz.models.sparse",
    "store": "wkviz.scale.store",
    "distributed": "wkviz.scale.distributed",
    "figures": "wkviz.views.figures",
    "viewer": "wkviz.views.viewer",
    "cli_models": "wkviz.cli",
    "cli_distributed": "wkviz.cli",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``wkviz.<old name>`` to its new module with a :class:`DeprecationWarning`."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module):
        new = MOVED_MODULES[module.__name__.partition(".")[2]]
        warnings.warn(f"{module.__name__} moved to {new} in wkviz 0.2; import it from there", DeprecationWarning,
                      stacklevel=2)
        # the import system returns what sys.modules holds after exec_module, so the old name is the new module
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name):
    # the two names most scripts need, without importing Numba at ``import wkviz``
    if name in ("WignerKernel", "KernelResult"):
        from .engine import kernels

        return getattr(kernels, name)
    if name in MOVED_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
