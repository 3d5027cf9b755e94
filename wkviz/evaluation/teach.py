"""The Teach page's first two experiments as data: what a body order can see (the kernels of a teaching pair, ν by
ν) and what equivariance means (kernels and a λ=1 dipole model of a rotated molecule).

Every function takes plain inputs (structures, :class:`~wkviz.hypers.Hypers`, angles) and returns arrays, a
DataFrame or a fitted estimator; the page only caches and draws them. The engine is called under
:class:`wkviz.runtime.engine_lock`, so several sessions of the app can run the demos at once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data.targets import get_target
from ..engine.kernels import KernelResult, WignerKernel
from ..engine.spherical import rotation_matrix
from ..errors import InputError
from ..hypers import Hypers
from ..models.tasks import make_regressor
from ..runtime import engine_lock

__all__ = [
    "kernel_distance",
    "teaching_pair",
    "pair_kernel_table",
    "molecule_indices",
    "fit_dipole_model",
    "rotate_about_center_of_mass",
    "rotated_kernels",
    "predict_vector",
    "equivariance_check",
]


def kernel_distance(k_ab: float, k_aa: float, k_bb: float) -> float:
    """Kernel-induced distance between normalised feature vectors, √(2 − 2 k_ab/√(k_aa k_bb)), in [0, 2].

    Parameters
    ----------
    k_ab, k_aa, k_bb : float
        The cross kernel and the two self-kernels.

    Returns
    -------
    float
        0 when the two environments are indistinguishable at this order; 0 as well when both self-kernels are
        zero (neither has any density), NaN when only one of them is.
    """
    denom = math.sqrt(max(k_aa, 0.0) * max(k_bb, 0.0))
    if denom == 0.0:
        return 0.0 if k_aa == k_bb else float("nan")
    cos = min(max(k_ab / denom, -1.0), 1.0)
    return math.sqrt(max(2.0 - 2.0 * cos, 0.0))


def teaching_pair(frames, pair: int) -> list:
    """The two environments of one teaching pair, A first.

    Parameters
    ----------
    frames : list of ase.Atoms
        The bundled teaching set (``load_sample("teaching")``): every structure has ``info["pair"]``,
        ``info["label"]`` ("A" or "B") and ``info["center"]``.
    pair : int
        The pair id.

    Returns
    -------
    list of two ase.Atoms
        Sorted by label.
    """
    chosen = sorted((a for a in frames if int(a.info.get("pair", -1)) == int(pair)), key=lambda a: a.info["label"])
    if len(chosen) != 2:
        ids = sorted({int(a.info["pair"]) for a in frames if "pair" in a.info})
        raise InputError(f"teaching pair {pair} has {len(chosen)} structures instead of 2; choose one of {ids}")
    return chosen


def pair_kernel_table(frames, hypers: Hypers) -> pd.DataFrame:
    """Atom-level kernels between the central atoms of two environments, one row per body order ν ≥ 1.

    Parameters
    ----------
    frames : sequence of two ase.Atoms
        Environments A and B, each with its central atom's index in ``info["center"]`` (the teaching set's
        convention, see :func:`teaching_pair`).
    hypers : Hypers
        Up to ``hypers.nu_max``.

    Returns
    -------
    pandas.DataFrame
        Columns ``nu``, ``k(A,A)``, ``k(B,B)``, ``k(A,B)``, ``cosine`` (k(A,B)/√(k(A,A)·k(B,B))) and
        ``distance`` (:func:`kernel_distance`). For a teaching pair the distance is 0 up to ν=2 and positive
        from ν=3 on.
    """
    frames = list(frames)
    if len(frames) != 2:
        raise InputError(f"a pair table needs exactly two structures, got {len(frames)}")
    centers = []
    for label, atoms in zip("AB", frames):
        if "center" not in atoms.info:
            raise InputError(f"structure {label} has no info['center']; give the index of its central atom")
        c = int(atoms.info["center"])
        if not 0 <= c < len(atoms):
            raise InputError(f"structure {label}'s centre {c} is not one of its {len(atoms)} atoms")
        centers.append(c)
    with engine_lock():
        res = WignerKernel(hypers).compute(frames, atomic=True)
    i, j = centers[0], len(frames[0]) + centers[1]
    rows = []
    for nu in range(1, res.K_atomic.shape[0]):
        K = res.K_atomic[nu]
        rows.append({"nu": nu, "k(A,A)": K[i, i], "k(B,B)": K[j, j], "k(A,B)": K[i, j],
                     "cosine": K[i, j] / np.sqrt(K[i, i] * K[j, j]),
                     "distance": kernel_distance(K[i, j], K[i, i], K[j, j])})
    return pd.DataFrame(rows)


def molecule_indices(frames) -> list[int]:
    """Indices of the non-periodic structures (molecules) of ``frames``."""
    return [i for i, a in enumerate(frames) if not a.pbc.any()]


def fit_dipole_model(frames, key: str, hypers: Hypers, n_train: int):
    """A mixed λ=1 kernel ridge model of a vector target, fitted on the last ``n_train`` molecules.

    Parameters
    ----------
    frames : list of ase.Atoms
        Periodic structures are skipped (the demo rotates a molecule).
    key : str
        A vector target (shape (3,) per structure), e.g. QM9's ``"mulliken_dipole"``; see
        :func:`wkviz.data.get_target`.
    hypers : Hypers
    n_train : int
        How many molecules, taken from the end of the data set (the page shows earlier ones as unseen).

    Returns
    -------
    estimator : wkviz.models.EquivariantRegressor
        Fitted on ``K_vector`` of the training molecules (extensive: a sum over atoms); predict with
        :func:`predict_vector`.
    train_idx : list of int
        Indices into ``frames`` of the training molecules, in data-set order.
    """
    if int(n_train) < 1:
        raise InputError(f"n_train must be at least 1, got {n_train}")
    idx = molecule_indices(frames)[-int(n_train):]
    if not idx:
        raise InputError("the dipole model needs non-periodic molecules; load a molecular data set such as QM9")
    train = [frames[i] for i in idx]
    y = get_target(train, key)
    with engine_lock():
        res = WignerKernel(hypers).compute(train, tensor_rank=1)
    est = make_regressor("vector", "mixed", nu_max=res.K.shape[0] - 1, intensive=False)
    est.fit(res.K_vector, y, n_atoms=res.n_atoms_A)
    return est, idx


def rotate_about_center_of_mass(atoms, rotation):
    """A copy of ``atoms`` turned by ``rotation`` (3×3, acting on column vectors) about its centre of mass."""
    R = np.asarray(rotation, dtype=float)
    if R.shape != (3, 3):
        raise InputError(f"a rotation must be a 3×3 matrix, got shape {R.shape}")
    out = atoms.copy()
    com = out.get_center_of_mass()
    out.positions = (out.positions - com) @ R.T + com
    return out


def rotated_kernels(atoms, train, angles, hypers: Hypers) -> tuple:
    """Kernels, up to λ=1, of a rotated copy of ``atoms`` against the original and the training structures.

    Parameters
    ----------
    atoms : ase.Atoms
        A molecule.
    train : sequence of ase.Atoms
        The dipole model's training structures (may be empty).
    angles : tuple of three floats
        ZYZ Euler angles in degrees (:func:`wkviz.engine.spherical.rotation_matrix`); the rotation is about the
        centre of mass.
    hypers : Hypers

    Returns
    -------
    rotated : ase.Atoms
        The rotated copy R·A.
    result : wkviz.engine.kernels.KernelResult
        ``compute([R·A], [A] + train, tensor_rank=1)``: column 0 is the original structure, columns 1… the
        training structures. Hence ``result.K[:, 0, 0]`` = k(A, A) (rotation invariance) and
        ``result.K_vector[ν, 0, :, 0, :]`` = R·K_vector(A, A) (equivariance).
    """
    rotated = rotate_about_center_of_mass(atoms, rotation_matrix(*angles))
    with engine_lock():
        result = WignerKernel(hypers).compute([rotated], [atoms] + list(train), tensor_rank=1)
    return rotated, result


def predict_vector(model, result: KernelResult) -> np.ndarray:
    """The fitted λ=1 model's prediction for the rotated structure of a :func:`rotated_kernels` result.

    Parameters
    ----------
    model : wkviz.models.EquivariantRegressor
        From :func:`fit_dipole_model`, trained on the structures that follow the original in ``result``.
    result : KernelResult
        From :func:`rotated_kernels` with the same training structures.

    Returns
    -------
    ndarray of shape (3,)
    """
    # column 0 is the unrotated original, not a training structure
    return model.predict(result.K_vector[:, :, :, 1:, :], n_atoms=result.n_atoms_A)[0]


def equivariance_check(result: KernelResult, reference: KernelResult, rotation, nu: int) -> dict:
    """How exactly the kernels of a rotated molecule obey invariance (λ=0) and equivariance (λ=1).

    Parameters
    ----------
    result, reference : KernelResult
        :func:`rotated_kernels` at the rotation and at zero angles (K(A, A)).
    rotation : array of shape (3, 3)
        The rotation R of ``result``.
    nu : int
        Body order of the λ=1 block to compare (1 … nu_max).

    Returns
    -------
    dict
        ``invariant``: {ν: k(R·A, A) / k(A, A)} for ν ≥ 1 (1 for an invariant kernel); ``block`` and
        ``reference_block``: the 3×3 λ=1 blocks K(R·A, A) and K(A, A) at ``nu``; ``scale``: max |K(A, A)| of that
        block (1 if it is zero); ``deviation``: max |K(R·A, A) − R·K(A, A)| / scale (0 for an equivariant kernel).
    """
    n_nu = result.K.shape[0]
    if not 1 <= int(nu) < n_nu:
        raise InputError(f"the λ=1 block exists for ν = 1 … {n_nu - 1}, got ν = {nu}")
    R = np.asarray(rotation, dtype=float)
    k_aa = reference.K[:, 0, 0]
    invariant = {v: float(result.K[v, 0, 0] / k_aa[v]) for v in range(1, n_nu)}
    block = result.K_vector[int(nu), 0, :, 0, :]
    block0 = reference.K_vector[int(nu), 0, :, 0, :]
    scale = float(np.abs(block0).max()) or 1.0
    return {"invariant": invariant, "block": block, "reference_block": block0, "scale": scale,
            "deviation": float(np.abs(block - R @ block0).max()) / scale}
