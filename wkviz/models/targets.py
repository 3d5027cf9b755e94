"""Target-specific estimators on the exact model :class:`~wkviz.models.mixed.MixedKernelRidge`.

* :class:`ScalarRegressor` — structure scalars (energies: sum kernel, per-element baseline Σ_Z n_Z ε_Z;
  ``intensive=True``: mean kernel K/(n_A n_B) and a per-atom baseline on composition fractions).
* :class:`EquivariantRegressor` — λ=1 polar vectors on ``K_vector`` ``[nu+1, n, 3, n, 3]`` or λ=2 targets on
  ``K_tensor`` ``[nu+1, n, 5, n, 5]``; predictions rotate exactly with the structure.
* :class:`TensorRegressor` — symmetric 3×3 tensors as λ=0 (trace, scalar model) ⊕ λ=2 (traceless part), with the
  λ=2 algebra of :mod:`wkviz.engine.spherical`.
* :class:`AtomicRegressor` — per-atom scalars on atom-level kernels ``K_atomic``, per-element mean baseline.

:func:`align_columns` and :func:`warn_unrepresented` (composition columns of the baseline) are shared with the
sparse scalar model, :class:`wkviz.models.sparse.SparseScalarRegressor`.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..engine.spherical import join_symmetric_tensor, split_symmetric_tensor
from ..errors import InputError
from .mixed import MixedKernelRidge
from .ridge import as_kernel_stack, as_target

__all__ = ["ScalarRegressor", "EquivariantRegressor", "TensorRegressor", "AtomicRegressor", "align_columns",
           "warn_unrepresented"]

_CORE_PARAMS = ("nus", "weights", "regularization", "baseline", "selection", "n_folds", "cv_loss", "max_iter",
                "random_state")


class _Wrapper(RegressorMixin, BaseEstimator):
    """Shared plumbing of the target-specific estimators (they hold a fitted :class:`MixedKernelRidge`)."""

    def _core(self, **overrides) -> MixedKernelRidge:
        params = {p: getattr(self, p) for p in _CORE_PARAMS}
        params.update(overrides)
        return MixedKernelRidge(**params)

    def _expose(self, model: MixedKernelRidge):
        for attr in ("kernel_scales_", "nus_", "coef_weights_", "weights_", "regularization_",
                     "relative_regularization_", "cv_mae_", "cv_rmse_", "cv_n_evals_", "gp_variance_",
                     "noise_std_", "log_marginal_likelihood_"):
            setattr(self, attr, getattr(model, attr))

    def summary(self) -> dict:
        check_is_fitted(self, "model_")
        return self.model_.summary()


def align_columns(counts, species, species_fit, what="element"):
    """Re-order composition columns to the species seen in fit; elements new at predict time get a baseline
    of 0 (with a warning), since nothing was learned about them."""
    counts = np.asarray(counts, dtype=np.float64)
    if species is None or species_fit is None:
        if species_fit is not None and counts.shape[1] != len(species_fit):
            raise InputError(
                f"counts have {counts.shape[1]} columns but the model was fitted on {len(species_fit)} elements; "
                "pass species= to align them"
            )
        return counts
    species = np.asarray(species).ravel()
    if counts.ndim != 2 or counts.shape[1] != len(species):
        raise InputError(f"counts must have one column per species ({len(species)}), got shape {counts.shape}")
    out = np.zeros((counts.shape[0], len(species_fit)))
    index = {int(z): j for j, z in enumerate(species_fit)}
    unseen = []
    for k, z in enumerate(species):
        j = index.get(int(z))
        if j is None:
            if np.any(counts[:, k] != 0):
                unseen.append(int(z))
        else:
            out[:, j] = counts[:, k]
    if unseen:
        warnings.warn(
            f"{what}(s) with atomic number {unseen} were not in the training set; their baseline contribution "
            "is taken as 0 and predictions for structures containing them are unreliable",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


def warn_unrepresented(counts, species):
    """Elements listed but absent from every training structure get ε = 0 from the ridge; say so."""
    missing = np.flatnonzero(np.all(counts == 0, axis=0))
    if len(missing):
        names = [int(species[j]) for j in missing] if species is not None else [int(j) for j in missing]
        warnings.warn(
            f"element(s) {names} do not occur in the training set; their baseline energy is set to 0",
            RuntimeWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------------------------
# structure scalars
# ----------------------------------------------------------------------------------------------------------------
class ScalarRegressor(_Wrapper):
    """Structure-level scalar targets (energies, gaps, …) on stacked invariant kernels ``[nu+1, n, n]``.

    Extensive (default): sum kernels as given, baseline ``y ≈ Σ_Z n_Z ε_Z``. ``intensive=True``: mean kernels
    ``K^ν(A,B) / (n_A n_B)`` and a baseline on composition fractions ``y ≈ Σ_Z (n_Z/n) ε_Z`` (per-atom ε_Z).
    Other parameters as :class:`MixedKernelRidge`.
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=True,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def _n_atoms(self, counts, n_atoms, n):
        if n_atoms is None:
            if counts is None:
                raise InputError("an intensive model needs the number of atoms: pass counts= or n_atoms=")
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        n_atoms = np.asarray(n_atoms, dtype=np.float64).ravel()
        if n_atoms.shape != (n,) or np.any(n_atoms <= 0):
            raise InputError(f"n_atoms must be {n} positive numbers, got shape {n_atoms.shape}")
        return n_atoms

    def _features(self, counts, n_atoms, n):
        if counts is None:
            return None
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] != n:
            raise InputError(f"counts must have shape ({n}, n_species), got {counts.shape}")
        return counts / n_atoms[:, None] if self.intensive else counts

    def fit(self, K, y, *, counts=None, species=None, n_atoms=None, cancel=None):
        """Fit on the training kernel.

        Parameters
        ----------
        K : ndarray of shape (nu_max+1, n, n)
            Sum kernels of the training structures (``KernelResult.K``).
        y : ndarray of shape (n,)
        counts : ndarray of shape (n, n_species), optional
            Element counts (``wkviz.data.composition_counts``); needed for the baseline and for
            ``intensive``.
        species : ndarray of shape (n_species,), optional
            Atomic numbers of the ``counts`` columns; lets :meth:`predict` align different species lists.
        n_atoms : ndarray of shape (n,), optional
            Atoms per structure (default ``counts.sum(1)``).
        cancel : optional
            Cancel flag checked during the hyperparameter search.
        """
        K = as_kernel_stack(K, "K")
        n = K.shape[1]
        y = as_target(y, n)
        if self.baseline and counts is None:
            raise InputError("the per-element baseline needs counts= (wkviz.data.composition_counts); "
                             "or use baseline=False")
        self.n_atoms_train_ = self._n_atoms(counts, n_atoms, n) if (self.intensive or counts is not None) else None
        if self.intensive:
            K = K / np.outer(self.n_atoms_train_, self.n_atoms_train_)[None]
        features = self._features(counts, self.n_atoms_train_, n) if self.baseline else None
        if features is not None:
            warn_unrepresented(np.asarray(counts), species)
        self.species_ = None if species is None else np.asarray(species).ravel().copy()
        self.model_ = self._core().fit(K, y, features=features, cancel=cancel)
        self._expose(self.model_)
        self.baseline_coef_ = self.model_.baseline_coef_
        return self

    def predict(self, K, *, counts=None, species=None, n_atoms=None, K_diag=None, return_std=False):
        """Predict test structures from test-vs-train kernels ``[nu_max+1, n_test, n_train]``.

        ``K_diag`` ``[nu_max+1, n_test]`` (self-kernels K^ν(x, x), sum kernels) is needed for ``return_std``.
        """
        check_is_fitted(self, "model_")
        K = as_kernel_stack(K, "K")
        m = K.shape[1]
        if counts is not None:
            counts = align_columns(counts, species, self.species_ if species is not None else None)
        features = None
        if self.intensive:
            n_atoms = self._n_atoms(counts, n_atoms, m)
            K = K / np.outer(n_atoms, self.n_atoms_train_)[None]
            if K_diag is not None:
                K_diag = np.asarray(K_diag, dtype=np.float64) / (n_atoms**2)[None]
        else:
            n_atoms = None if counts is None else counts.sum(axis=1)
        if self.model_.baseline_coef_ is not None:
            if counts is None:
                raise InputError("this model has a per-element baseline: pass counts= of the test structures")
            features = self._features(counts, n_atoms, m)
        return self.model_.predict(K, features=features, K_diag=K_diag, return_std=return_std)


# ----------------------------------------------------------------------------------------------------------------
# tensorial targets
# ----------------------------------------------------------------------------------------------------------------

class EquivariantRegressor(_Wrapper):
    """Equivariant targets on tensorial kernels: λ=1 vectors (``K_vector``) or λ=2 components (``K_tensor``).

    The kernel ``[nu+1, n, d, n, d]`` is flattened to ``(n·d, n·d)`` (row ``i·d + c``) and regressed without
    a baseline (an equivariant target has no invariant offset). Since ``K(QA, B) = D(Q) K(A, B)``, the
    prediction for a rotated (or, for polar vectors, inverted) structure is exactly the rotated (inverted)
    prediction. Zero slices (``K_vector[0]``) are skipped. CV folds hold out whole structures and the MAE is
    the mean Euclidean norm of the per-structure error, so it does not depend on the frame.
    ``intensive=True`` divides the kernels by n_A n_B (needs ``n_atoms``).
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=False,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    @staticmethod
    def _flatten(K, name):
        K = as_kernel_stack(K, name, ndim=5)
        nk, n, d, m, d2 = K.shape
        if d != d2 or d not in (3, 5):
            raise InputError(f"{name} must have shape (nu+1, n, d, m, d) with d = 3 (λ=1) or 5 (λ=2), got {K.shape}")
        return K.reshape(nk, n * d, m * d), n, d, m

    def _scale(self, K, n_a, n_b, d):
        ra = np.repeat(np.asarray(n_a, dtype=np.float64), d)
        rb = np.repeat(np.asarray(n_b, dtype=np.float64), d)
        return K / np.outer(ra, rb)[None]

    def fit(self, K, y, *, n_atoms=None, cancel=None):
        """Fit on ``K`` ``(nu+1, n, d, n, d)`` and targets ``y`` ``(n, d)`` (Cartesian x, y, z for d = 3;
        λ=2 components m = −2 … 2 for d = 5, see :func:`wkviz.engine.spherical.tensor_to_lambda2`)."""
        Kf, n, d, m = self._flatten(K, "K")
        if m != n:
            raise InputError(f"the training kernel must be square, got shape {np.shape(K)}")
        y = as_target(y, n)
        if y.shape != (n, d):
            raise InputError(f"y must have shape ({n}, {d}), got {y.shape}")
        if self.intensive:
            if n_atoms is None:
                raise InputError("an intensive equivariant model needs n_atoms=")
            self.n_atoms_train_ = np.asarray(n_atoms, dtype=np.float64).ravel()
            Kf = self._scale(Kf, self.n_atoms_train_, self.n_atoms_train_, d)
        self.n_components_ = d
        self.model_ = self._core(baseline=False).fit(
            Kf, y.reshape(-1), groups=np.repeat(np.arange(n), d), block_size=d, cancel=cancel
        )
        self._expose(self.model_)
        return self

    def predict(self, K, *, n_atoms=None, K_diag=None, return_std=False):
        """Predict ``(n_test, d)`` from ``K`` ``(nu+1, n_test, d, n_train, d)``; ``K_diag`` ``(nu+1, n_test, d)``
        holds the diagonal entries K^ν(x, c; x, c) for ``return_std``."""
        check_is_fitted(self, "model_")
        Kf, m, d, _ = self._flatten(K, "K")
        if d != self.n_components_:
            raise InputError(f"test kernel has {d} components per structure, the model was fitted with "
                             f"{self.n_components_}")
        if self.intensive:
            if n_atoms is None:
                raise InputError("an intensive equivariant model needs n_atoms= of the test structures")
            n_atoms = np.asarray(n_atoms, dtype=np.float64).ravel()
            Kf = self._scale(Kf, n_atoms, self.n_atoms_train_, d)
        if K_diag is not None:
            K_diag = np.asarray(K_diag, dtype=np.float64).reshape(Kf.shape[0], m * d)
            if self.intensive:
                K_diag = K_diag / np.repeat(n_atoms**2, d)[None]
        out = self.model_.predict(Kf, K_diag=K_diag, return_std=return_std)
        if return_std:
            return out[0].reshape(m, d), out[1].reshape(m, d)
        return out.reshape(m, d)


class TensorRegressor(_Wrapper):
    """Symmetric 3×3 tensors (polarisabilities, …) as λ=0 ⊕ λ=2.

    The isotropic part tr(T)/3 is a :class:`ScalarRegressor` on the invariant kernel (with the per-element
    baseline), the symmetric traceless part an :class:`EquivariantRegressor` on ``K_tensor``'s 5 real-SH
    components (:func:`wkviz.engine.spherical.tensor_to_lambda2`). Any antisymmetric part of the targets is dropped (with a
    warning). Predictions transform as Q T Qᵀ.
    """

    def __init__(self, *, intensive=False, nus=None, weights="exponential", regularization=None, baseline=True,
                 selection="cv", n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.intensive = intensive
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def _params(self):
        return {p: getattr(self, p) for p in ("intensive",) + _CORE_PARAMS}

    def fit(self, K, K_tensor, y, *, counts=None, species=None, n_atoms=None, cancel=None):
        """Fit on invariant ``K`` ``(nu+1, n, n)``, ``K_tensor`` ``(nu+1, n, 5, n, 5)`` and ``y`` ``(n, 3, 3)``."""
        y = as_target(y, None)
        if y.ndim != 3 or y.shape[1:] != (3, 3):
            raise InputError(f"tensor targets must have shape (n, 3, 3), got {y.shape}")
        asym = np.abs(y - np.swapaxes(y, 1, 2)).max()
        if asym > 1e-8 * max(np.abs(y).max(), 1e-300):
            warnings.warn("tensor targets are not symmetric; only their symmetric part is learned",
                          RuntimeWarning, stacklevel=2)
        iso, t2 = split_symmetric_tensor(y)
        if n_atoms is None and counts is not None:
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        self.iso_model_ = ScalarRegressor(**self._params()).fit(K, iso, counts=counts, species=species,
                                                                n_atoms=n_atoms, cancel=cancel)
        eq_params = self._params()
        eq_params["baseline"] = False
        self.aniso_model_ = EquivariantRegressor(**eq_params).fit(K_tensor, t2, n_atoms=n_atoms, cancel=cancel)
        self.model_ = self.iso_model_.model_
        return self

    def predict(self, K, K_tensor, *, counts=None, species=None, n_atoms=None, K_diag=None, K_tensor_diag=None,
                return_std=False):
        """Predict ``(n_test, 3, 3)`` from test-vs-train ``K`` and ``K_tensor``.

        With ``return_std`` (needs ``K_diag`` ``(nu+1, n_test)`` and ``K_tensor_diag`` ``(nu+1, n_test, 5)``, the
        self-kernels of the test structures) also returns the GP standard deviations of the isotropic part
        ``(n_test,)`` and of the 5 λ=2 components ``(n_test, 5)`` (the two models are independent).
        """
        check_is_fitted(self, "aniso_model_")
        if n_atoms is None and counts is not None:
            n_atoms = np.asarray(counts, dtype=np.float64).sum(axis=1)
        if not return_std:
            iso = self.iso_model_.predict(K, counts=counts, species=species, n_atoms=n_atoms)
            t2 = self.aniso_model_.predict(K_tensor, n_atoms=n_atoms)
            return join_symmetric_tensor(iso, t2)
        iso, iso_std = self.iso_model_.predict(K, counts=counts, species=species, n_atoms=n_atoms, K_diag=K_diag,
                                               return_std=True)
        t2, t2_std = self.aniso_model_.predict(K_tensor, n_atoms=n_atoms, K_diag=K_tensor_diag, return_std=True)
        return join_symmetric_tensor(iso, t2), iso_std, t2_std

    def summary(self) -> dict:
        check_is_fitted(self, "aniso_model_")
        return {"lambda0": self.iso_model_.summary(), "lambda2": self.aniso_model_.summary()}


# ----------------------------------------------------------------------------------------------------------------
# atomic targets
# ----------------------------------------------------------------------------------------------------------------
class AtomicRegressor(_Wrapper):
    """Per-atom scalars (Mulliken charges, …) on atom-level kernels ``K_atomic`` ``[nu+1, atoms, atoms]``.

    The baseline is the per-element mean of the training targets (one-hot element features with a tiny
    ridge); an element unseen in training gets 0 with a warning. CV folds hold out whole structures when
    ``structure_index`` is given.
    """

    def __init__(self, *, nus=None, weights="exponential", regularization=None, baseline=True, selection="cv",
                 n_folds=5, cv_loss="mae", max_iter=50, random_state=0):
        self.nus = nus
        self.weights = weights
        self.regularization = regularization
        self.baseline = baseline
        self.selection = selection
        self.n_folds = n_folds
        self.cv_loss = cv_loss
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, K, y, *, numbers, structure_index=None, cancel=None):
        """Fit on ``K`` ``(nu+1, atoms, atoms)``, ``y`` ``(atoms,)``, ``numbers`` (atomic number per atom) and
        ``structure_index`` (structure of each atom, for grouped CV)."""
        K = as_kernel_stack(K, "K")
        n = K.shape[1]
        y = as_target(y, n)
        numbers = np.asarray(numbers).ravel().astype(np.int64)
        if numbers.shape != (n,):
            raise InputError(f"numbers must give one atomic number per atom ({n}), got shape {numbers.shape}")
        self.species_ = np.unique(numbers)
        features = (numbers[:, None] == self.species_[None, :]).astype(np.float64) if self.baseline else None
        self.model_ = self._core().fit(K, y, features=features, groups=structure_index, cancel=cancel)
        self._expose(self.model_)
        self.element_baseline_ = (
            dict(zip(self.species_.tolist(), self.model_.baseline_coef_.tolist())) if self.baseline else {}
        )
        return self

    def predict(self, K, *, numbers, K_diag=None, return_std=False):
        """Predict ``(atoms_test,)`` from ``K`` ``(nu+1, atoms_test, atoms_train)``; ``K_diag``
        ``(nu+1, atoms_test)`` for ``return_std``."""
        check_is_fitted(self, "model_")
        numbers = np.asarray(numbers).ravel().astype(np.int64)
        features = None
        if self.model_.baseline_coef_ is not None:
            test_species = np.unique(numbers)
            onehot = (numbers[:, None] == test_species[None, :]).astype(np.float64)
            features = align_columns(onehot, test_species, self.species_)
        return self.model_.predict(K, features=features, K_diag=K_diag, return_std=return_std)
