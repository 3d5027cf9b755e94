"""Body-order cost, measured on the user's structures: Wigner kernels against explicit body-ordered features.

The live, small-scale counterpart of ``benchmarks/bench_body_order.py`` (the Teach page runs it): on the same
structures and the same density expansion,

(a) the Wigner route: ``WignerKernel(hypers(nu_max=ν)).compute(frames, atomic=True)`` — products of Wigner-D
    coefficient blocks, the kernel trick over rotations;
(b) the feature route: :func:`wkviz.engine.features.feature_kernels` — every ν-fold Clebsch–Gordan product of the density
    coefficients (the explicit invariant features), then their linear kernel;

both giving every order up to ν and the atom-level kernels. For each ν it records wall time, peak memory and
the invariant features per environment of (b), stops (b) *before* it would exceed a memory budget (the estimate
is exact bookkeeping of the arrays, :func:`wkviz.engine.features.estimate_memory`), and checks where (b) ran that the
two kernels agree, k^ν_Wigner = 8π² · (linear kernel of the features). A second experiment varies the radial
basis size (the optimal basis truncated to its first n functions per l, used by *both* routes) at a fixed ν,
plus the engine's basis-free ν=1 route.

Notes
-----
* Peak memory is what ``tracemalloc`` sees (every NumPy buffer), above the level at the start of the run;
  scratch arrays allocated inside Numba kernels are not traced (for the engine, one small per-tile buffer per
  thread).
* Each hyperparameter set's radial basis and the engine's compiled kernels are prepared in a warm-up and not
  timed: both routes share the basis, and compilation is a one-off.
* A truncated basis size is given to the engine as ``WignerKernel(hypers, radial_basis=...)``
  (:func:`truncated_radial_basis`), so other engine calls in the process are not affected; the agreement
  column proves the engine used it.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from ..engine import features as F
from ..engine.density import radial_basis
from ..errors import InputError, MemoryBudgetError
from ..hypers import Hypers
from ..runtime import check_cancel

WIGNER = "Wigner kernel"
FEATURES = "explicit features"
EXACT = "Wigner kernel, no basis (exact ν=1)"

#: Radial functions per l tried by the basis experiment (None: the whole optimal basis).
DEFAULT_BASIS_SIZES = (1, 2, 4, 8, None)


@dataclass
class CostComparison:
    """Measurements of :func:`compare_body_order_cost`.

    Attributes
    ----------
    body_order : list of dict
        One row per (ν, route) for ν = 1..nu_max: ``nu``, ``route`` (:data:`WIGNER` or :data:`FEATURES`),
        ``status`` ("measured" or "stopped"), ``seconds``, ``peak_bytes`` (None when stopped),
        ``estimate_bytes`` (feature route: the memory estimate, also for stopped runs), ``features``
        (invariant features per environment of the feature route at that ν; None for the Wigner route),
        ``deviation`` (max |K_a − K_b| / max |K_a| over the atom kernels of order ν; None when (b) did not run)
        and ``note``.
    basis : list of dict
        One row per (radial basis size, route) at ``nu_basis``: ``n_radial`` (largest functions per l),
        ``n_radial_per_l`` (text, l = 0..L), ``route`` (also :data:`EXACT`, with ``n_radial`` None) and the
        other columns as in ``body_order``.
    n_environments, n_structures, species
        What was measured: atom-centred environments, structures, neighbour species (atomic numbers).
    n_radial_full : list of int
        Functions per l of the whole optimal basis.
    n_radial : list of int
        Functions per l used by the body-order experiment.
    nu_basis : int
    memory_budget : int
        Bytes allowed to the feature route.
    hypers : Hypers
        Density and angular settings (``nu_max`` is varied).
    feature_counts : list of dict
        Invariant features per environment (``nu``, ``basis``, ``features``) for ν = 1..nu_max with the basis of
        the body-order experiment and with the whole optimal basis: counted, never computed.
    stopped_at : int or None
        First ν at which the feature route was stopped.
    seconds : float
        Wall time of the whole comparison, warm-up included.
    """

    body_order: list
    basis: list
    n_environments: int
    n_structures: int
    species: list
    n_radial_full: list
    n_radial: list
    nu_basis: int
    memory_budget: int
    hypers: Hypers
    feature_counts: list = field(default_factory=list)
    stopped_at: int | None = None
    seconds: float = 0.0

    @property
    def max_deviation(self) -> float | None:
        """Largest relative deviation between the two routes' kernels over every run where both ran."""
        devs = [r["deviation"] for r in self.body_order + self.basis if r.get("deviation") is not None]
        return max(devs) if devs else None

    def summary_rows(self) -> list:
        """One row per ν side by side: ``nu``, ``wigner_seconds``, ``wigner_peak_bytes``, ``features``,
        ``features_seconds``, ``features_bytes`` (measured peak, or the estimate when stopped), ``features_status``,
        ``deviation``, ``note``."""
        rows = []
        by = {(r["nu"], r["route"]): r for r in self.body_order}
        for nu in sorted({r["nu"] for r in self.body_order}):
            w, f = by[(nu, WIGNER)], by[(nu, FEATURES)]
            rows.append(dict(nu=nu, wigner_seconds=w["seconds"], wigner_peak_bytes=w["peak_bytes"],
                             features=f["features"], features_seconds=f["seconds"],
                             features_bytes=f["peak_bytes"] if f["status"] == "measured" else f["estimate_bytes"],
                             features_status=f["status"], deviation=f["deviation"], note=f["note"]))
        return rows


def truncated_radial_basis(hypers: Hypers, n: int | None):
    """The optimal radial basis of ``hypers`` cut to its first ``n`` functions per l, for
    ``WignerKernel(hypers, radial_basis=...)``; None (the engine's own whole basis) when ``n`` is None.

    Parameters
    ----------
    hypers : Hypers
    n : int or None

    Returns
    -------
    wkviz.engine.features.TruncatedRadialBasis or None
    """
    return None if n is None else F.TruncatedRadialBasis(radial_basis(hypers), n)


def _measure(fn, *, repeat_below: float = 0.1, repeats: int = 2):
    """(result, wall seconds, peak traced bytes above the start) of ``fn()``; short runs keep the fastest of up to
    ``repeats`` (on a shared machine the minimum is the least disturbed measurement)."""
    best = None
    gc.collect()
    for _ in range(repeats):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        if best is None or seconds < best[1]:
            best = (result, seconds, peak)
        if seconds >= repeat_below:
            break
    return best


def _deviation(k_a: np.ndarray, k_b: np.ndarray) -> float:
    scale = float(np.abs(k_a).max()) or 1.0
    return float(np.abs(k_a - k_b).max() / scale)


def _gib(b: float) -> str:
    if b >= 2**30:
        return f"{b / 2**30:.1f} GB"
    if b >= 2**20:
        return f"{b / 2**20:.0f} MB"
    return f"{b / 2**10:.0f} kB"


def compare_body_order_cost(frames, hypers: Hypers, *, nu_max: int = 5, n_radial: int | None = 2,
                            nu_basis: int = 3, basis_sizes=DEFAULT_BASIS_SIZES, memory_budget: int = 256 * 2**20,
                            progress=None, cancel=None) -> CostComparison:
    """Time and memory of Wigner kernels and of explicit features for ν = 1..nu_max, and against basis size.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        A few structures (each run computes all atom-pair kernels of them).
    hypers : Hypers
        Cutoff, density and ``lambda_max`` of both routes; ``nu_max`` is replaced by each ν measured, and the
        Wigner route uses the ``"exact"`` normalisation and the radial-basis ν=1 route (plus one basis-free run).
    nu_max : int
        Highest body order of the first experiment (1..8).
    n_radial : int or None
        Radial functions per l of the first experiment (both routes); None for the whole optimal basis.
    nu_basis : int
        Body order of the basis experiment.
    basis_sizes : sequence of int or None
        Radial functions per l tried by the basis experiment (None: the whole basis); sizes at or above the whole
        basis collapse into it.
    memory_budget : int
        Bytes the feature route may use; a run that would need more is not started and is reported as stopped,
        and so are the higher orders.
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every run.
    cancel : threading.Event or callable, optional
        Checked between runs (and by both routes inside theirs); raises :class:`~wkviz.errors.Cancelled`.

    Returns
    -------
    CostComparison
    """
    from ..engine.kernels import WignerKernel

    start = time.perf_counter()
    frames = list(frames)
    if not frames:
        raise InputError("choose at least one structure to measure.")
    nu_max, nu_basis = int(nu_max), int(nu_basis)
    if not 1 <= nu_max <= 8:
        raise InputError(f"nu_max must be between 1 and 8 for this comparison, got {nu_max}.")
    if not 1 <= nu_basis <= 8:
        raise InputError(f"nu_basis must be between 1 and 8, got {nu_basis}.")
    if n_radial is not None and int(n_radial) < 1:
        raise InputError(f"n_radial must be at least 1 (or None for the whole basis), got {n_radial}.")
    # the features are the counterpart of the "exact" normalisation (one constant, 8π², for every order); the
    # normalisation does not change the engine's cost
    base = hypers.replace(nu_max=1, normalization="exact", nu1_route="basis")
    L = base.lambda_max

    full = F.density_features(frames, base)  # also builds (and caches) the basis for these hypers
    n_full = [int(v) for v in full.n_radial]
    n_species = len(full.species)
    n_env = full.n_environments

    def effective(n):
        return None if n is None or n >= max(n_full) else int(n)

    def per_l(n):
        return [min(n, v) for v in n_full] if n is not None else list(n_full)

    n_body = effective(n_radial)
    sizes = []
    for n in basis_sizes:
        n = effective(n)
        if n not in sizes:
            sizes.append(n)
    sizes.sort(key=lambda n: np.inf if n is None else n)

    total_runs = 2 * nu_max + 2 * len(sizes) + 1
    done = [0]
    clock = [None]

    def step():
        done[0] += 1
        if progress is not None:
            if clock[0] is None:
                clock[0] = time.perf_counter()
            frac = done[0] / total_runs
            elapsed = time.perf_counter() - clock[0]
            progress(frac, elapsed * (1 - frac) / frac if frac > 0 else None)

    # warm-up: the radial basis of every hypers, the engine's plans and compiled kernels, off the clock
    first = frames[:1]
    for nu in sorted({*range(1, nu_max + 1), nu_basis}):
        check_cancel(cancel, "cost measurement")
        WignerKernel(base.replace(nu_max=nu)).compute(first, atomic=True)
    WignerKernel(base.replace(nu_max=nu_basis, nu1_route="exact")).compute(first, atomic=True)
    F.feature_kernels(first, base, nu_max=1, n_radial=1)
    if progress is not None:
        progress(0.0, None)

    def wigner(nu, n, route="basis"):
        h = base.replace(nu_max=nu, nu1_route=route)
        engine = WignerKernel(h, radial_basis=truncated_radial_basis(h, n if route == "basis" else None))
        return _measure(lambda: engine.compute(frames, atomic=True, cancel=cancel))

    def explicit(nu, n):
        nr = per_l(n)
        est = F.estimate_memory(n_env, nu, tuple(nr), n_species, L, kernels=True)
        n_feat = F.n_invariant_features(nu, tuple(nr), n_species, L)
        if est["total"] > memory_budget:
            return None, None, None, est["total"], n_feat, (
                f"stopped: would need ≈{_gib(est['total'])} (budget {_gib(memory_budget)})")
        try:
            res, sec, peak = _measure(lambda: F.feature_kernels(frames, base, nu_max=nu, n_radial=n,
                                                                 memory_budget=memory_budget, cancel=cancel))
        except MemoryBudgetError:
            return None, None, None, est["total"], n_feat, (
                f"stopped: would need ≈{_gib(est['total'])} (budget {_gib(memory_budget)})")
        return res, sec, peak, est["total"], n_feat, ""

    body, stopped_at = [], None
    for nu in range(1, nu_max + 1):
        check_cancel(cancel, "cost measurement")
        w, tw, mw = wigner(nu, n_body)
        step()
        body.append(dict(nu=nu, route=WIGNER, status="measured", seconds=tw, peak_bytes=mw, estimate_bytes=None,
                         features=None, deviation=None, note=""))
        if stopped_at is None:
            res, tf, mf, est, n_feat, note = explicit(nu, n_body)
            if res is None:
                stopped_at = nu
        else:
            nr = per_l(n_body)
            res, tf, mf, n_feat = None, None, None, F.n_invariant_features(nu, tuple(nr), n_species, L)
            est = F.estimate_memory(n_env, nu, tuple(nr), n_species, L, kernels=True)["total"]
            note = f"stopped: would need ≈{_gib(est)} (budget {_gib(memory_budget)})"
        step()
        dev = _deviation(w.K_atomic[nu], res.K_atomic[nu]) if res is not None else None
        body.append(dict(nu=nu, route=FEATURES, status="measured" if res is not None else "stopped", seconds=tf,
                         peak_bytes=mf, estimate_bytes=est, features=n_feat, deviation=dev, note=note))
        body[-2]["deviation"] = dev

    basis = []
    for n in sizes:
        check_cancel(cancel, "cost measurement")
        nr = per_l(n)
        label = "/".join(map(str, nr))
        w, tw, mw = wigner(nu_basis, n)
        step()
        res, tf, mf, est, n_feat, note = explicit(nu_basis, n)
        step()
        dev = _deviation(w.K_atomic[nu_basis], res.K_atomic[nu_basis]) if res is not None else None
        common = dict(n_radial=max(nr), n_radial_per_l=label, nu=nu_basis)
        basis.append(dict(common, route=WIGNER, status="measured", seconds=tw, peak_bytes=mw, estimate_bytes=None,
                          features=None, deviation=dev, note=""))
        basis.append(dict(common, route=FEATURES, status="measured" if res is not None else "stopped", seconds=tf,
                          peak_bytes=mf, estimate_bytes=est, features=n_feat, deviation=dev, note=note))
    check_cancel(cancel, "cost measurement")
    w, tw, mw = wigner(nu_basis, None, route="exact")
    step()
    basis.append(dict(n_radial=None, n_radial_per_l="∞ (no basis)", nu=nu_basis, route=EXACT, status="measured",
                      seconds=tw, peak_bytes=mw, estimate_bytes=None, features=None, deviation=None,
                      note="the engine's exact pair sum: an infinite radial basis"))

    counts = []
    for n in dict.fromkeys([n_body, None]):
        nr = per_l(n)
        label = "/".join(map(str, nr)) + " per l" + (" (whole optimal basis)" if n is None else "")
        counts += [dict(nu=nu, basis=label, features=F.n_invariant_features(nu, tuple(nr), n_species, L))
                   for nu in range(1, nu_max + 1)]

    return CostComparison(body_order=body, basis=basis, feature_counts=counts, n_environments=n_env,
                          n_structures=len(frames), species=[int(z) for z in full.species], n_radial_full=n_full,
                          n_radial=per_l(n_body), nu_basis=nu_basis, memory_budget=int(memory_budget), hypers=base,
                          stopped_at=stopped_at, seconds=time.perf_counter() - start)
