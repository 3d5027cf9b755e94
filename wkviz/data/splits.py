"""Train/test splits (random, farthest-point sampling, element coverage) and the farthest-point sampling of wkviz,
:func:`fps`, which the sparse models' active sets (:mod:`wkviz.models.sparse`) use too."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["fps", "random_split", "fps_split", "cover_elements"]


def fps(X=None, n_select: int = 10, *, K=None, seed: int = 0, first: int | None = None):
    """Farthest-point sampling: each new point is the one farthest from those already chosen.

    Parameters
    ----------
    X : ndarray of shape (n, d), optional
        Explicit features (Euclidean distance).
    n_select : int
        Points to select (1..n).
    K : ndarray of shape (n, n), optional
        Kernel instead of features: d²(i, j) = K_ii + K_jj − 2 K_ij.
    seed : int
        Chooses the first point when ``first`` is not given.
    first : int, optional
        Index of the first point.

    Returns
    -------
    idx : ndarray of int, shape (n_select,)
        Selected indices in selection order (every prefix is an FPS subset).
    radius : ndarray of shape (n_select,)
        Distance of each selected point to the earlier ones when it was chosen (non-increasing after the first,
        which gets ``inf``): the covering radius of the prefix.
    """
    if (X is None) == (K is None):
        raise InputError("fps needs exactly one of X (features) or K (kernel)")
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise InputError(f"fps features must be a 2-D array (n, d), got shape {X.shape}")
        n = X.shape[0]
        sq = np.einsum("ij,ij->i", X, X)

        def dist2(j):
            return sq + sq[j] - 2.0 * (X @ X[j])
    else:
        K = np.asarray(K, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise InputError(f"fps needs a square kernel (n, n), got shape {K.shape}")
        n = K.shape[0]
        diag = np.diag(K).copy()

        def dist2(j):
            return diag + diag[j] - 2.0 * K[j]
    n_select = int(n_select)
    if not 1 <= n_select <= n:
        raise InputError(f"cannot select {n_select} points out of {n}; choose between 1 and {n}")
    if not np.all(np.isfinite(X if X is not None else K)):
        raise InputError("fps input contains NaN or infinite values")
    j = int(np.random.default_rng(seed).integers(n)) if first is None else int(first)
    idx = np.empty(n_select, dtype=np.int64)
    radius = np.empty(n_select)
    idx[0], radius[0] = j, np.inf
    mind = np.maximum(dist2(j), 0.0)
    mind[j] = -1.0
    for k in range(1, n_select):
        j = int(np.argmax(mind))
        idx[k], radius[k] = j, math.sqrt(max(mind[j], 0.0))
        mind = np.minimum(mind, np.maximum(dist2(j), 0.0))
        mind[idx[: k + 1]] = -1.0
    return idx, radius


def _n_test(n, test_size):
    if isinstance(test_size, (bool, np.bool_)):
        raise InputError("test_size must be a fraction in (0, 1) or a number of structures, not a bool.")
    if isinstance(test_size, (float, np.floating)) and 0 < test_size < 1:
        k = int(round(test_size * n))
    elif isinstance(test_size, (int, np.integer)):
        k = int(test_size)
    else:
        raise InputError(f"test_size must be a fraction in (0, 1) or a number of structures, got {test_size!r}.")
    if not 1 <= k <= n - 1:
        raise InputError(
            f"a test set of {k} out of {n} structures leaves no training or no test data; choose between 1 and {n - 1}."
        )
    return k


def random_split(n, test_size, seed):
    """Random train/test split, reproducible from the seed.

    Parameters
    ----------
    n : int
        Number of structures (at least 2).
    test_size : float or int
        Fraction in (0, 1) or number of test structures.
    seed : int

    Returns
    -------
    train_idx, test_idx : ndarray of int
        ``train_idx`` is in random order, so its prefixes are nested random subsets (learning curves);
        ``test_idx`` is sorted.
    """
    n = int(n)
    if n < 2:
        raise InputError(f"a split needs at least 2 structures, got {n}.")
    k = _n_test(n, test_size)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[k:].copy(), np.sort(perm[:k])


def fps_split(K, n_train, seed=0):
    """Farthest-point-sampling train/test split on a kernel matrix.

    The distance between structures i and j is the kernel-induced distance
    d²(i, j) = K_ii + K_jj − 2 K_ij. Starting from one structure chosen with ``seed``, each step adds the
    structure farthest from those already chosen, so the training set spreads over the data: :func:`fps` with
    ``K=``, once the kernel is checked to be one square, finite, symmetric matrix.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Symmetric positive semi-definite kernel (one body order, or a mixture).
    n_train : int or float
        Number (or fraction in (0, 1)) of training structures.
    seed : int
        Chooses the first point.

    Returns
    -------
    train_idx, test_idx : ndarray of int
        ``train_idx`` in selection order (its prefixes are FPS subsets); ``test_idx`` sorted.
    """
    K = np.asarray(K, dtype=float)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise InputError(
            f"FPS needs a square (n, n) kernel, got shape {K.shape}; pick one body order, e.g. K[2], or a mixture."
        )
    n = K.shape[0]
    if n < 2:
        raise InputError(f"a split needs at least 2 structures, got {n}.")
    if not np.all(np.isfinite(K)):
        raise InputError("the kernel for FPS contains NaN or infinite values; recompute it.")
    scale = max(float(np.max(np.abs(K))), 1e-300)
    if np.max(np.abs(K - K.T)) > 1e-8 * scale:
        raise InputError("the kernel for FPS is not symmetric; use the train-train kernel K(A, A).")
    if isinstance(n_train, (float, np.floating)) and 0 < n_train < 1:
        n_train = int(round(n_train * n))
    n_train = int(n_train)
    if not 1 <= n_train <= n - 1:
        raise InputError(f"n_train={n_train} leaves no training or no test data; choose between 1 and {n - 1}.")
    train = fps(K=K, n_select=n_train, seed=seed)[0].astype(int)
    return train, np.setdiff1d(np.arange(n), train)


def cover_elements(frames, train, test):
    """Move test structures holding an element that no training structure has into the training set.

    A model has no coefficient for an element it never saw (a per-element baseline gives it 0), so a single
    such test structure can dominate the test error: a fluorine molecule in a 300-molecule QM9 draw costs
    thousands of eV on a total energy. The rule is one pass against the *given* training set: every test
    structure with an element absent from ``train`` moves, even if another moved structure would then cover
    it. The result is deterministic (no randomness), and which structures move does not depend on the order of
    ``train``. When *every* test structure would move, nothing moves: an empty test set is worse than a test
    set with unseen elements.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        The whole data set (indices refer to it).
    train, test : sequence of int
        Training and test indices into ``frames``.

    Returns
    -------
    train : ndarray of int
        The given training indices in their order (so prefixes stay nested subsets), then the moved ones.
    test : ndarray of int
        The test indices that stay, in their given order.
    moved : ndarray of int
        The moved indices, in their order in ``test`` (empty when nothing moved).
    """
    train = np.asarray(train, dtype=int).ravel()
    test = np.asarray(test, dtype=int).ravel()
    n = len(frames)
    for name, idx in (("train", train), ("test", test)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(f"{name} indices must lie in 0..{n - 1} for {n} structures.")
    seen = set(np.concatenate([np.asarray(frames[i].numbers) for i in train]).tolist()) if train.size else set()
    unseen = np.array([not set(np.asarray(frames[i].numbers).tolist()) <= seen for i in test], dtype=bool)
    if not unseen.any() or unseen.all():
        return train.copy(), test.copy(), np.zeros(0, dtype=int)
    moved = test[unseen]
    return np.concatenate([train, moved]), test[~unseen], moved

