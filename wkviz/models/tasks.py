"""Data-set-level model tasks used by the CLI, the app and :mod:`wkviz.evaluation`: the kernels and the target
of a set of structures (:class:`KernelSet`, :class:`TargetData`), the named models compared everywhere
(:func:`standard_models`, :func:`model_nus`, :func:`make_regressor`) and one fit-and-predict
(:func:`fit_predict`). Scoring predictions is :mod:`wkviz.evaluation`'s job (``compare_models`` lives there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .targets import AtomicRegressor, EquivariantRegressor, ScalarRegressor, TensorRegressor

__all__ = ["TARGET_KINDS", "KERNEL_BLOCKS", "KernelSet", "TargetData", "standard_models", "model_nus",
           "make_regressor", "fit_predict"]

TARGET_KINDS = ("scalar", "vector", "tensor", "atomic")


def _offsets(n_atoms) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(n_atoms, dtype=np.int64))])


def _atom_rows(n_atoms, idx) -> np.ndarray:
    off = _offsets(n_atoms)
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])


#: The kernel blocks a model may need, with the axes that index structures (or atoms, for ``K_atomic``) of A and
#: of B. The one list of kernel kinds: :class:`KernelSet` is built, sliced and asked for its ``nu_max`` from it.
KERNEL_BLOCKS = {"K": (1, 2), "K_atomic": (1, 2), "K_vector": (1, 3), "K_tensor": (1, 3)}


@dataclass
class KernelSet:
    """Every kernel block between structures A (rows) and B (columns) that a model may need.

    Attributes carry the names and layouts of :class:`wkviz.engine.kernels.KernelResult`: ``K`` ``[nu+1, nA, nB]``,
    ``K_atomic`` ``[nu+1, atomsA, atomsB]``, ``K_vector`` ``[nu+1, nA, 3, nB, 3]``, ``K_tensor``
    ``[nu+1, nA, 5, nB, 5]`` (any may be None) and the atom counts per structure.

    Why a class of its own and not the engine's ``KernelResult``: a ``KernelSet`` is only the arrays, so models
    take kernels from anywhere (an engine result, a kernel store, a file, a test fixture) without the engine's
    bookkeeping (hypers, species, timings), and :meth:`subset` can hand out sub-blocks. It duplicates nothing:
    :meth:`from_result` takes a ``KernelResult``'s arrays as they are (no copy), the list of kernel kinds is
    :data:`KERNEL_BLOCKS`, and :func:`fit_predict` accepts a ``KernelResult`` directly (:meth:`of`).
    """

    K: np.ndarray | None = None
    K_atomic: np.ndarray | None = None
    K_vector: np.ndarray | None = None
    K_tensor: np.ndarray | None = None
    n_atoms_A: np.ndarray | None = None
    n_atoms_B: np.ndarray | None = None

    @classmethod
    def from_result(cls, result) -> "KernelSet":
        """From a :class:`wkviz.engine.kernels.KernelResult` (or anything with the same attributes); the arrays
        are shared, not copied."""
        return cls(**{name: getattr(result, name, None) for name in (*KERNEL_BLOCKS, "n_atoms_A", "n_atoms_B")})

    @classmethod
    def of(cls, kernels) -> "KernelSet":
        """``kernels`` itself if it is a :class:`KernelSet`, else :meth:`from_result` of it."""
        return kernels if isinstance(kernels, cls) else cls.from_result(kernels)

    @property
    def nu_max(self) -> int:
        for name in KERNEL_BLOCKS:
            K = getattr(self, name)
            if K is not None:
                return K.shape[0] - 1
        raise InputError("this KernelSet holds no kernels")

    def subset(self, rows, cols) -> "KernelSet":
        """Sub-block between structures ``rows`` of A and ``cols`` of B (no kernel is recomputed)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = KernelSet(
            n_atoms_A=None if self.n_atoms_A is None else np.asarray(self.n_atoms_A)[rows],
            n_atoms_B=None if self.n_atoms_B is None else np.asarray(self.n_atoms_B)[cols],
        )
        for name, (ax_a, ax_b) in KERNEL_BLOCKS.items():
            K = getattr(self, name)
            if K is None:
                continue
            r, c = rows, cols
            if name == "K_atomic":
                if self.n_atoms_A is None or self.n_atoms_B is None:
                    raise InputError("slicing atomic kernels needs n_atoms_A and n_atoms_B")
                r, c = _atom_rows(self.n_atoms_A, rows), _atom_rows(self.n_atoms_B, cols)
            # the same indexing expressions as K[:, r][:, :, c]: the same memory layout, so the same round-off
            setattr(out, name, K[(slice(None),) * ax_a + (r,)][(slice(None),) * ax_b + (c,)])
        return out

    def diagonal(self, kind: str) -> np.ndarray:
        """Self-kernels k^ν(x, x) of the rows that the estimator of a target ``kind`` needs for the GP predictive
        standard deviation; this set must hold the kernels of a set of structures with itself.

        Returns ``[nu+1, n]`` (scalar: from ``K``), ``[nu+1, n, 3]`` (vector: from ``K_vector``),
        ``[nu+1, atoms]`` (atomic: from ``K_atomic``) or ``[nu+1, n, 5]`` (tensor: the λ=2 part, from
        ``K_tensor``; the isotropic part is ``diagonal("scalar")``).
        """
        attr = {"scalar": "K", "vector": "K_vector", "tensor": "K_tensor", "atomic": "K_atomic"}.get(kind)
        if attr is None:
            raise InputError(f"target kind must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")
        K = _need(self, attr, kind)
        if attr in ("K", "K_atomic"):
            if K.shape[1] != K.shape[2]:
                raise InputError(f"self-kernels need the kernels of a set with itself, got {attr} of shape {K.shape}")
            return np.einsum("vii->vi", K)
        if K.shape[1] != K.shape[3]:
            raise InputError(f"self-kernels need the kernels of a set with itself, got {attr} of shape {K.shape}")
        return np.einsum("viaia->via", K)


@dataclass
class TargetData:
    """A target over a list of structures with what the models need besides kernels.

    Attributes
    ----------
    kind : {"scalar", "vector", "tensor", "atomic"}
    values : ndarray or None
        ``(n,)``, ``(n, 3)``, ``(n, 3, 3)`` or ``(total_atoms,)``; None for structures to be predicted.
    n_atoms : ndarray of int, shape (n,)
    counts : ndarray of shape (n, n_species)
        Element counts (columns = ``species``).
    species : ndarray of int
    numbers : ndarray of int, shape (total_atoms,)
        Atomic number of every atom, structures in order.
    key, unit : str
    """

    kind: str
    values: np.ndarray | None
    n_atoms: np.ndarray
    counts: np.ndarray | None = None
    species: np.ndarray | None = None
    numbers: np.ndarray | None = None
    key: str = ""
    unit: str = ""
    extensive: bool = True

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise InputError(f"target kind must be one of {', '.join(TARGET_KINDS)}, got {self.kind!r}")
        self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @classmethod
    def from_frames(cls, frames, key: str, *, species=None, require_values: bool = True) -> "TargetData":
        """Read target ``key`` of ``frames`` (via :mod:`wkviz.data`): kind, unit, values, composition.

        ``species`` fixes the composition columns (use the union of training and test species).
        """
        from .. import data  # lazy: models sit downstream of data and most users pass arrays

        infos = {info.key: info for info in data.describe_targets(frames)}
        if key not in infos:
            available = ", ".join(sorted(infos)) or "none"
            raise InputError(f"target {key!r} not found in the structures; available targets: {available}")
        info = infos[key]
        values = data.get_target(frames, key) if require_values else None
        counts, species = data.composition_counts(frames, species=species)
        numbers = np.concatenate([np.asarray(a.numbers) for a in frames]) if len(frames) else np.zeros(0, int)
        return cls(
            kind=info.kind, values=None if values is None else np.asarray(values, dtype=np.float64),
            n_atoms=np.array([len(a) for a in frames]), counts=np.asarray(counts, dtype=np.float64),
            species=np.asarray(species), numbers=numbers, key=key, unit=info.unit or "",
            extensive=bool(getattr(info, "extensive", True)),
        )

    def subset(self, idx) -> "TargetData":
        """The same target restricted to structures ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        atoms = _atom_rows(self.n_atoms, idx)
        values = None
        if self.values is not None:
            values = self.values[atoms] if self.kind == "atomic" else self.values[idx]
        return TargetData(
            kind=self.kind, values=values, n_atoms=self.n_atoms[idx],
            counts=None if self.counts is None else self.counts[idx], species=self.species,
            numbers=None if self.numbers is None else self.numbers[atoms], key=self.key, unit=self.unit,
            extensive=self.extensive,
        )

    def structure_of_atom(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)

    def row_labels(self):
        """(structure, atom, component) of every entry of ``values.ravel()`` — the CSV layout of
        ``python -m wkviz fit`` (atom = −1 for structure targets, component 0..8 row-major for tensors)."""
        n = len(self.n_atoms)
        if self.kind == "atomic":
            structure = self.structure_of_atom()
            atom = np.arange(len(structure)) - _offsets(self.n_atoms)[structure]
            return structure, atom, np.zeros(len(structure), dtype=np.int64)
        d = {"scalar": 1, "vector": 3, "tensor": 9}[self.kind]
        return np.repeat(np.arange(n), d), np.full(n * d, -1), np.tile(np.arange(d), n)


def standard_models(nu_max: int, kind: str = "scalar") -> list[str]:
    """Names of the models compared everywhere: composition only (ν=0), every single ν, and the mixed
    kernel. With the exact normalisation ``"nu=2"`` is the SOAP-equivalent model. Vectors have no
    composition model (``K_vector[0] = 0``).

    A single-ν model ``"nu=k"`` uses the composition kernel K^0 next to K^k (``nus=(0, k)``), exactly as the
    mixed model does, so that comparisons isolate the body-ordered part: with the composition kernel
    the linear composition part is fitted jointly with the rest (a GP with a linear kernel on the
    counts), which alone is worth ~5–25 % on QM9 energies and would otherwise be credited to the mixing.
    """
    names = [] if kind == "vector" else ["composition"]
    return names + [f"nu={nu}" for nu in range(1, nu_max + 1)] + ["mixed"]


def model_nus(model: str, nu_max: int):
    """``nus`` parameter of a named model: ``"mixed"`` → None (all), ``"composition"`` → (0,),
    ``"nu=k"`` → (0, k) (see :func:`standard_models`)."""
    name = model.strip().lower().replace(" ", "")
    if name == "mixed":
        return None
    if name in ("composition", "nu=0", "nu0"):
        return (0,)
    for prefix in ("nu=", "nu"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            nu = int(name[len(prefix):])
            if nu == 0:
                return (0,)
            if 1 <= nu <= nu_max:
                return (0, nu)
            raise InputError(f"model {model!r} needs body order {nu} but the kernels stop at nu_max={nu_max}")
    raise InputError(f"unknown model {model!r}; use 'mixed', 'composition' or 'nu=<k>'")


def make_regressor(kind: str, model: str = "mixed", *, nu_max: int, intensive: bool = False, **params):
    """The estimator for a target ``kind`` restricted to a named ``model`` (see :func:`model_nus`)."""
    nus = model_nus(model, nu_max)
    if kind == "scalar":
        return ScalarRegressor(intensive=intensive, nus=nus, **params)
    if kind == "vector":
        params.pop("baseline", None)
        return EquivariantRegressor(intensive=intensive, nus=nus, **params)
    if kind == "tensor":
        return TensorRegressor(intensive=intensive, nus=nus, **params)
    if kind == "atomic":
        return AtomicRegressor(nus=nus, **params)
    raise InputError(f"target kind must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")


def _need(kernels: KernelSet, attr: str, kind: str):
    K = getattr(kernels, attr)
    if K is None:
        raise InputError(f"a {kind} target needs {attr}; compute the kernels with the matching option "
                         f"(--atomic for atomic targets, --tensor-rank 1 for vectors, 2 for tensors)")
    return K


def fit_predict(train_kernels: KernelSet, train: TargetData, test_kernels: KernelSet, test: TargetData, *,
                model: str = "mixed", intensive: bool = False, cancel=None, return_std: bool = False,
                test_self_kernels=None, **params):
    """Fit a model on ``train`` and predict the structures of ``test``.

    ``test.values`` is never read (the test set is touched once, for the final prediction, through its
    kernels and composition only).

    Parameters
    ----------
    train_kernels : KernelSet or KernelResult
        Training-vs-training blocks.
    train, test : TargetData
    test_kernels : KernelSet or KernelResult
        Test-vs-training blocks.
    model : str
        A name of :func:`standard_models` (see :func:`model_nus`).
    intensive : bool
        Mean kernels (not for atomic targets).
    cancel : threading.Event-like or callable, optional
        Checked inside the hyperparameter search.
    return_std : bool
        Also return the GP predictive standard deviation of every prediction (of the latent function). Needs
        ``test_self_kernels``. Tensor targets give None: their two parts (λ=0, λ=2) have separate standard
        deviations, which :meth:`TensorRegressor.predict` returns.
    test_self_kernels : KernelSet or KernelResult, optional
        Kernels of the test structures with themselves; only their diagonal is read (:meth:`KernelSet.diagonal`).
    **params
        Estimator parameters (``weights``, ``selection``, ``n_folds`` …).

    Returns
    -------
    pred : ndarray shaped like the target (``(n_test,)``, ``(n_test, 3)``, ``(n_test, 3, 3)``, ``(atoms,)``)
    std : ndarray shaped like ``pred`` or None, only if ``return_std``
    estimator : the fitted estimator
    """
    kind = train.kind
    if train.values is None:
        raise InputError("the training set has no target values")
    train_kernels, test_kernels = KernelSet.of(train_kernels), KernelSet.of(test_kernels)
    std_kw = {}
    if return_std and kind != "tensor":
        if test_self_kernels is None:
            raise InputError("return_std needs test_self_kernels, the kernels of the test structures with themselves")
        std_kw = {"K_diag": KernelSet.of(test_self_kernels).diagonal(kind), "return_std": True}
    nu_max = train_kernels.nu_max
    est = make_regressor(kind, model, nu_max=nu_max, intensive=intensive, **params)
    if kind == "scalar":
        est.fit(_need(train_kernels, "K", kind), train.values, counts=train.counts, species=train.species,
                n_atoms=train.n_atoms, cancel=cancel)
        out = est.predict(_need(test_kernels, "K", kind), counts=test.counts, species=test.species,
                          n_atoms=test.n_atoms, **std_kw)
    elif kind == "vector":
        est.fit(_need(train_kernels, "K_vector", kind), train.values, n_atoms=train.n_atoms, cancel=cancel)
        out = est.predict(_need(test_kernels, "K_vector", kind), n_atoms=test.n_atoms, **std_kw)
    elif kind == "tensor":
        est.fit(_need(train_kernels, "K", kind), _need(train_kernels, "K_tensor", kind), train.values,
                counts=train.counts, species=train.species, n_atoms=train.n_atoms, cancel=cancel)
        out = est.predict(_need(test_kernels, "K", kind), _need(test_kernels, "K_tensor", kind),
                          counts=test.counts, species=test.species, n_atoms=test.n_atoms)
    else:
        est.fit(_need(train_kernels, "K_atomic", kind), train.values, numbers=train.numbers,
                structure_index=train.structure_of_atom(), cancel=cancel)
        out = est.predict(_need(test_kernels, "K_atomic", kind), numbers=test.numbers, **std_kw)
    if not return_std:
        return out, est
    pred, std = out if std_kw else (out, None)
    return pred, std, est
