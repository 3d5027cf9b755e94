"""Models on Wigner kernels: mixed-kernel ridge/GP regression, target wrappers, sparse models and tasks.

Modules, each importing only those before it:

* :mod:`~wkviz.models.ridge` — the ridge core the exact and sparse estimators share (one parameter check, the
  weight families, folds, the guarded solver);
* :mod:`~wkviz.models.mixed` — :class:`MixedKernelRidge` and its CV / evidence objectives;
* :mod:`~wkviz.models.targets` — :class:`ScalarRegressor`, :class:`EquivariantRegressor`,
  :class:`TensorRegressor`, :class:`AtomicRegressor`;
* :mod:`~wkviz.models.tasks` — :class:`KernelSet`, :class:`TargetData`, :func:`standard_models`,
  :func:`model_nus`, :func:`make_regressor`, :func:`fit_predict`;
* :mod:`~wkviz.models.active` and :mod:`~wkviz.models.sparse` — active points and the projected-process model;
* :mod:`~wkviz.models.forces` — :class:`EnergyForceModel`, the projected-process potential on energies and forces.

Scoring (``compare_models``, metrics) is :mod:`wkviz.evaluation`'s, which imports this package, never the
reverse. The λ=2 tensor algebra lives with the spherical harmonics in :mod:`wkviz.engine.spherical` and is
re-exported here, as is :func:`wkviz.runtime.check_cancel`, for the code written against the flat module.
"""

from ..engine.spherical import join_symmetric_tensor, lambda2_to_tensor, split_symmetric_tensor, tensor_to_lambda2
from ..runtime import check_cancel  # re-exported for one release; use wkviz.runtime.check_cancel
from . import sparse  # noqa: F401
from .forces import EnergyForceModel
from .mixed import MixedKernelRidge
from .targets import AtomicRegressor, EquivariantRegressor, ScalarRegressor, TensorRegressor
from .tasks import KernelSet, TargetData, fit_predict, make_regressor, model_nus, standard_models

__all__ = [
    "EnergyForceModel",
    "MixedKernelRidge",
    "ScalarRegressor",
    "EquivariantRegressor",
    "TensorRegressor",
    "AtomicRegressor",
    "KernelSet",
    "TargetData",
    "tensor_to_lambda2",
    "lambda2_to_tensor",
    "split_symmetric_tensor",
    "join_symmetric_tensor",
    "standard_models",
    "model_nus",
    "make_regressor",
    "fit_predict",
    "check_cancel",
]

