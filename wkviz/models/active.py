"""Active points of the sparse models and the kernels they need: farthest-point sampling of structures or atomic
environments, the training/active/test kernel blocks, and what those cost next to the exact N × N kernel.

Active points are structures (K_NM = structure kernel to M structures) or atomic environments (K_NM[A, m] =
Σ_{i∈A} k(i, m), the sum kernel between a structure and one environment, K_MM the atom kernel among the active
environments; :func:`sparse_kernels`). They are chosen by farthest-point sampling (:func:`fps`) in the metric of
explicit ν = 2 (power-spectrum, SOAP-equivalent) features per atom (:func:`selection_features`), which costs O(N)
and no kernel. skmatter's FPS works on explicit feature matrices too, but skmatter 0.4 pins scikit-learn < 1.9 (it
would downgrade this project's scikit-learn) and gives nothing the 20 lines of :func:`fps` do not; the kernel
metric variant (``K=``) covers precomputed kernels, which skmatter does not take.

Everything here is re-exported by :mod:`wkviz.models.sparse`, its documented home.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.splits import fps
from ..errors import InputError

__all__ = [
    "ACTIVE_KINDS",
    "fps",
    "selection_features",
    "environment_features",
    "select_active",
    "select_active_environments",
    "sparse_kernels",
    "sparse_estimate",
]

#: Kinds of active points: ``"structures"`` or ``"environments"`` (atomic environments).
ACTIVE_KINDS = ("structures", "environments")


def selection_features(frames, hypers, *, n_radial: int = 4, per_atom: bool = True, batch: int = 1000,
                       species=None) -> np.ndarray:
    """Explicit structure features for choosing active structures: ν = 2 power spectra of every centre,
    summed per structure and centre element (``per_atom``: divided by the number of atoms).

    Their dot product is the ν = 2 (SOAP-equivalent) sum kernel of :mod:`wkviz.engine.kernels` up to the constant 8π²
    and the radial truncation (``n_radial`` optimal functions per l), which is all a selection needs; the cost
    is linear in the number of structures.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    hypers : Hypers
    n_radial : int
        Optimal radial functions kept per l.
    per_atom : bool
        Mean instead of sum over atoms, so that the selection spreads over chemistry rather than size.
    batch : int
        Structures per batch (bounds the memory of the per-atom features).
    species : sequence of int, optional
        Elements to use as channels and centre blocks (default: all present).

    Returns
    -------
    ndarray of shape (n_structures, n_features)
    """
    from ..engine.features import body_ordered_features, density_features

    frames = list(frames)
    if species is None:
        species = np.unique(np.concatenate([np.asarray(a.numbers) for a in frames]))
    species = np.asarray(species, dtype=np.int64)
    blocks = []
    for s in range(0, len(frames), batch):
        part = frames[s:s + batch]
        dens = density_features(part, hypers, n_radial=n_radial, species=species)
        inv = body_ordered_features(dens, 2).invariants[2]
        X = np.zeros((len(part), len(species), inv.shape[1]))
        zpos = np.searchsorted(species, dens.numbers)
        np.add.at(X, (dens.structure, zpos), inv)
        X = X.reshape(len(part), -1)
        if per_atom:
            X /= np.array([len(a) for a in part], dtype=np.float64)[:, None]
        blocks.append(X)
    return np.concatenate(blocks, axis=0)


def select_active(frames, n_active: int, hypers, *, seed: int = 0, method: str = "fps", n_radial: int = 4):
    """Indices of ``n_active`` active structures among ``frames``.

    ``method="fps"``: farthest-point sampling on :func:`selection_features`; ``"random"``: a seeded random
    draw (the baseline FPS is compared with in ``benchmarks/bench_sparse.py``).
    """
    n = len(frames)
    n_active = int(n_active)
    if not 1 <= n_active <= n:
        raise InputError(f"n_active must be between 1 and the {n} training structures, got {n_active}")
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=n_active, replace=False))
    if method != "fps":
        raise InputError(f"active-set method must be 'fps' or 'random', got {method!r}")
    idx, _ = fps(selection_features(frames, hypers, n_radial=n_radial), n_active, seed=seed)
    return idx


def environment_features(frames, hypers, *, n_radial: int = 4, batch: int = 1000):
    """ν = 2 power spectrum of every atomic environment (atoms of all structures in order) and its element.

    Returns
    -------
    X : ndarray of shape (n_atoms_total, n_features)
    numbers : ndarray of int, shape (n_atoms_total,)
    """
    from ..engine.features import body_ordered_features, density_features

    frames = list(frames)
    species = np.unique(np.concatenate([np.asarray(a.numbers) for a in frames]))
    X, Z = [], []
    for s in range(0, len(frames), batch):
        dens = density_features(frames[s:s + batch], hypers, n_radial=n_radial, species=species)
        X.append(body_ordered_features(dens, 2).invariants[2])
        Z.append(dens.numbers)
    return np.concatenate(X, axis=0), np.concatenate(Z)


def _allocate(n_active, sizes):
    """Split n_active over groups proportionally to their sizes (largest remainder), ≥ 1 per group, ≤ size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if n_active < len(sizes):
        raise InputError(f"{n_active} active environments cannot cover the {len(sizes)} elements present; "
                         f"use at least {len(sizes)}")
    share = n_active * sizes / sizes.sum()
    alloc = np.maximum(1, np.floor(share).astype(np.int64))
    alloc = np.minimum(alloc, sizes)
    while alloc.sum() < n_active:
        room = alloc < sizes
        k = int(np.argmax(np.where(room, share - alloc, -np.inf)))
        alloc[k] += 1
    while alloc.sum() > n_active:
        k = int(np.argmax(np.where(alloc > 1, alloc - share, -np.inf)))
        alloc[k] -= 1
    return alloc


def select_active_environments(frames, n_active: int, hypers, *, seed: int = 0, method: str = "fps",
                               n_radial: int = 4, pool: int | None = None):
    """Global atom indices (atoms of all ``frames`` in order) of ``n_active`` active environments.

    Environments of different elements never share a kernel, so the active set is split over the elements in
    proportion to their number of atoms (at least one each) and each element's share is chosen by FPS on the
    ν = 2 power spectra (:func:`environment_features`) or at random (``method="random"``).

    Parameters
    ----------
    frames : sequence of ase.Atoms
    n_active : int
    hypers : Hypers
    seed : int
        Chooses the first FPS point of every element (and the pool).
    method : {"fps", "random"}
    n_radial : int
        Optimal radial functions per l of the selection features.
    pool : int, optional
        FPS among the environments of a seeded random subset of the structures holding about ``pool``
        environments (structures are added until every element has at least its share of the active set)
        instead of among all of them. FPS costs (environments × M) and its features (environments × d) memory:
        on full QM9 (≈ 2 million environments, M = 5,000) that is hours and tens of GB, while a pool of a few
        times M per element already covers the space FPS samples. Default: all environments.
    """
    frames = list(frames)
    n_total = sum(len(a) for a in frames)
    n_active = int(n_active)
    if not 1 <= n_active <= n_total:
        raise InputError(f"n_active must be between 1 and the {n_total} training environments, got {n_active}")
    if method not in ("fps", "random"):
        raise InputError(f"active-set method must be 'fps' or 'random', got {method!r}")
    if pool is not None and int(pool) < n_active:
        raise InputError(f"the FPS pool ({int(pool)} environments) must hold at least the {n_active} active "
                         "environments; use a larger pool or none")
    numbers = np.concatenate([np.asarray(a.numbers) for a in frames])
    elements, sizes = np.unique(numbers, return_counts=True)
    alloc = _allocate(n_active, sizes)
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.concatenate([np.sort(rng.choice(np.flatnonzero(numbers == z), size=int(m), replace=False))
                               for z, m in zip(elements, alloc)])
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    use = np.arange(len(frames))
    if pool is not None and int(pool) < n_total:
        use = _pool_structures(frames, elements, alloc, int(pool), np.random.default_rng([seed, 1]))
    # global atom index of every row of the pooled features (the pool's atoms in structure order)
    rows = np.concatenate([np.arange(offsets[f], offsets[f + 1]) for f in use])
    X = environment_features([frames[f] for f in use], hypers, n_radial=n_radial)[0]
    pooled = numbers[rows]
    out = []
    for z, m in zip(elements, alloc):
        idx = np.flatnonzero(pooled == z)
        out.append(rows[idx[fps(X[idx], int(m), seed=seed)[0]]])
    return np.concatenate(out)


def _pool_structures(frames, elements, alloc, pool, rng):
    """Sorted indices of a random subset of the structures with about ``pool`` atoms and, per element, at
    least ``alloc`` of its atoms (the structures are taken in one random order until both hold)."""
    counts = np.array([[np.count_nonzero(np.asarray(a.numbers) == z) for z in elements] for a in frames])
    order = rng.permutation(len(frames))
    cum = np.cumsum(counts[order], axis=0)
    enough_atoms = int(np.searchsorted(cum.sum(axis=1), pool))
    enough_each = max(int(np.searchsorted(cum[:, k], alloc[k])) for k in range(len(elements)))
    return np.sort(order[: max(enough_atoms, enough_each) + 1])


def sparse_kernels(frames, active, hypers, *, kind: str = "structures", frames_test=None, engine=None,
                   batch: int | None = None, progress=None, cancel=None):
    """The kernels a sparse model needs: training-vs-active, active-vs-active and test-vs-active.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Training structures (N).
    active : array of int
        ``kind="structures"``: indices of active structures in ``frames``; ``"environments"``: global atom
        indices (atoms of ``frames`` in order, :func:`select_active_environments`).
    hypers : Hypers
    kind : {"structures", "environments"}
    frames_test : sequence of ase.Atoms, optional
        Also the test-vs-active kernel.
    engine : WignerKernel, optional
        Engine to use (memory budget); a default one otherwise.
    batch : int, optional
        Environments only: training structures per engine call. By default the calls are as large as the
        engine's memory budget allows for their atom kernels (atoms × M, half the budget).
    progress : callable, optional
        ``progress(fraction_done, None)``.
    cancel : threading.Event or callable, optional

    Returns
    -------
    dict
        ``K_NM`` ``[nu+1, N, M]``, ``K_MM`` ``[nu+1, M, M]`` and, with ``frames_test``, ``K_TM``; ``seconds``.
        For environments ``K_NM[ν, A, m] = Σ_{i ∈ A} k^ν(i, m)`` (sum kernel between a structure and an
        environment) and ``K_MM`` is the atom kernel among the active environments.

    Notes
    -----
    For environments the engine computes only the columns of the active centres
    (``WignerKernel.compute(..., centers_B=active)``, each active centre with its full neighbourhood), so the
    cost is (training + test atoms) × M centre pairs of the same element. ``K_MM`` is the rows of the active
    atoms in the training calls' atom kernels, so it costs nothing extra; the test rows need no atom kernels.
    """
    from ..engine.kernels import WignerKernel

    engine = engine or WignerKernel(hypers)
    active = np.asarray(active, dtype=np.int64)
    frames = list(frames)
    t0 = time.perf_counter()
    if kind == "structures":
        B = [frames[i] for i in active]
        K_NM = engine.compute(frames, B, progress=progress, cancel=cancel).K
        out = {"K_NM": K_NM, "K_MM": K_NM[:, active, :]}
        if frames_test is not None:
            out["K_TM"] = engine.compute(list(frames_test), B, cancel=cancel).K
        out["seconds"] = time.perf_counter() - t0
        return out
    if kind != "environments":
        raise InputError(f"kind must be 'structures' or 'environments', got {kind!r}")
    sizes = np.array([len(a) for a in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    if active.ndim != 1 or active.size == 0 or active.min() < 0 or active.max() >= offsets[-1]:
        raise InputError(f"active environments must be atom indices in 0..{offsets[-1] - 1}")
    m = len(active)
    nu1 = engine.hypers.nu_max + 1
    if batch is None:
        # atoms per call whose atom kernels (atoms × M) take at most half the budget
        cap = max(1, int(engine.memory_budget // 2 // (8 * nu1 * m)))
        bounds = [0]
        for k in range(1, len(frames)):
            if offsets[k + 1] - offsets[bounds[-1]] > cap:
                bounds.append(k)
        bounds.append(len(frames))
    else:
        if int(batch) < 1:
            raise InputError(f"batch must be a positive number of structures, got {batch!r}")
        bounds = list(range(0, len(frames), int(batch))) + [len(frames)]
    test = None if frames_test is None else list(frames_test)
    total = float(offsets[-1] + (0 if test is None else sum(len(a) for a in test)))
    done = [0.0]

    def call_progress(n_atoms):
        """Engine progress of a call over ``n_atoms`` rows, as a fraction of all rows."""
        if progress is None:
            return None
        return lambda frac, eta: progress(min(1.0, (done[0] + frac * n_atoms) / total), None)

    blocks = []
    K_MM = np.empty((nu1, m, m))
    for s, e in zip(bounds[:-1], bounds[1:]):
        inside = np.flatnonzero((active >= offsets[s]) & (active < offsets[e]))
        n_rows = float(offsets[e] - offsets[s])
        res = engine.compute(frames[s:e], frames, centers_B=active, atomic=inside.size > 0,
                             progress=call_progress(n_rows), cancel=cancel)
        blocks.append(res.K)
        if inside.size:
            K_MM[:, inside, :] = res.K_atomic[:, active[inside] - offsets[s], :]
        done[0] += n_rows
    out = {"K_NM": np.concatenate(blocks, axis=1), "K_MM": K_MM}
    if test is not None:
        out["K_TM"] = engine.compute(test, frames, centers_B=active, cancel=cancel,
                                     progress=call_progress(total - done[0])).K
    if progress is not None:
        progress(1.0, None)
    out["seconds"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------------------------------------------


def _check_active_kind(kind):
    if kind not in ACTIVE_KINDS:
        raise InputError(f"active points must be one of {', '.join(ACTIVE_KINDS)}, got {kind!r}")


def sparse_estimate(frames_train, frames_test, n_active: int, active_kind: str, hypers, *, engine=None) -> dict:
    """Estimated cost of a sparse model's kernels (training × M and test × M) against the exact N × N kernel.

    No kernel is computed (:meth:`wkviz.engine.kernels.WignerKernel.estimate`). M active structures are stood in
    for by the first M training structures (a random sample when the split is random); M active environments by
    the first M atoms, estimated as restricted centres like the real computation.

    Parameters
    ----------
    frames_train, frames_test : sequence of ase.Atoms
    n_active : int
    active_kind : {"structures", "environments"}
    hypers : Hypers
    engine : WignerKernel, optional
        Engine to estimate with (its memory budget); a default one otherwise.

    Returns
    -------
    dict
        ``n_train``, ``n_test``, ``n_active``, ``pairs_sparse``, ``seconds_sparse`` (training and test rows
        against the active points), ``pairs_exact``, ``seconds_exact`` (the training kernel).
    """
    from ..engine.kernels import WignerKernel

    _check_active_kind(active_kind)
    engine = engine or WignerKernel(hypers)
    tr, te = list(frames_train), list(frames_test)
    none = {"n_pairs": 0, "seconds": 0.0}
    if active_kind == "environments":
        n_atoms = sum(len(a) for a in tr)
        centers = np.arange(max(1, min(int(n_active), n_atoms)))
        nm = engine.estimate(tr, tr, centers_B=centers)
        tm = engine.estimate(te, tr, centers_B=centers) if te else none
    else:
        proxy = tr[:max(1, min(int(n_active), len(tr)))]
        nm = engine.estimate(tr, proxy)
        tm = engine.estimate(te, proxy) if te else none
    nn = engine.estimate(tr)
    return {"n_train": len(tr), "n_test": len(te), "n_active": int(n_active),
            "pairs_sparse": int(nm["n_pairs"] + tm["n_pairs"]), "seconds_sparse": nm["seconds"] + tm["seconds"],
            "pairs_exact": int(nn["n_pairs"]), "seconds_exact": nn["seconds"]}
