"""wkviz.evaluation.scaling: the live Wigner-kernel vs explicit-feature cost comparison behind the Teach page."""

from __future__ import annotations

import threading

import pytest

from conftest import make_molecules
from wkviz import Hypers
from wkviz.engine import features
from wkviz.evaluation import scaling
from wkviz.errors import Cancelled, InputError

HYPERS = Hypers(density_scaling=None, lambda_max=2, cutoff=3.5, cutoff_width=0.5, density_width=0.4)


@pytest.fixture(scope="module")
def comparison():
    frames = make_molecules(("H2O", "NH3", "CH3OH"))
    seen = []
    res = scaling.compare_body_order_cost(frames, HYPERS, nu_max=3, n_radial=1, nu_basis=2, basis_sizes=(1, 2, None),
                                          memory_budget=64 * 2**20, progress=lambda f, eta: seen.append(f))
    return frames, res, seen


@pytest.mark.slow
def test_both_routes_compute_the_same_kernels_and_the_counts_are_exact(comparison):
    frames, res, seen = comparison
    n_env = sum(len(a) for a in frames)
    n_species = len({int(z) for a in frames for z in a.numbers})
    assert res.n_environments == n_env and res.n_structures == 3 and len(res.species) == n_species
    assert res.n_radial == [1, 1, 1] and res.stopped_at is None
    wigner = [r for r in res.body_order if r["route"] == scaling.WIGNER]
    feats = [r for r in res.body_order if r["route"] == scaling.FEATURES]
    assert [r["nu"] for r in wigner] == [r["nu"] for r in feats] == [1, 2, 3]
    # every order where both ran: k_Wigner = 8π² · linear kernel of the features, so the engine really used the
    # truncated basis of the features
    assert all(r["deviation"] < 1e-10 for r in feats) and res.max_deviation < 1e-10
    assert [r["features"] for r in feats] == [features.n_invariant_features(nu, 1, n_species, 2) for nu in (1, 2, 3)]
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in wigner + feats)
    # progress: monotone, ending at 1
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    rows = res.summary_rows()
    assert [r["features"] for r in rows] == [r["features"] for r in feats]


@pytest.mark.slow
def test_basis_experiment_covers_sizes_and_the_basis_free_route(comparison):
    _, res, _ = comparison
    routes = [(r["route"], r["n_radial"]) for r in res.basis]
    full = max(res.n_radial_full)
    assert routes == [(scaling.WIGNER, 1), (scaling.FEATURES, 1), (scaling.WIGNER, 2), (scaling.FEATURES, 2),
                      (scaling.WIGNER, full), (scaling.FEATURES, full), (scaling.EXACT, None)]
    measured = [r for r in res.basis if r["route"] == scaling.FEATURES and r["status"] == "measured"]
    assert measured and all(r["deviation"] < 1e-10 for r in measured)
    counts = {r["n_radial"]: r["features"] for r in res.basis if r["route"] == scaling.FEATURES}
    assert counts[1] < counts[2] < counts[full], "the feature count grows with the basis"


def test_features_stop_before_exceeding_the_budget_and_stay_stopped():
    frames = make_molecules(("CH3OH", "C2H6"))
    res = scaling.compare_body_order_cost(frames, HYPERS, nu_max=4, n_radial=None, nu_basis=2, basis_sizes=(1,),
                                          memory_budget=8 * 2**20)
    feats = {r["nu"]: r for r in res.body_order if r["route"] == scaling.FEATURES}
    stop = res.stopped_at
    assert stop is not None and stop >= 2
    for nu, r in feats.items():
        if nu < stop:
            assert r["status"] == "measured" and r["estimate_bytes"] <= 8 * 2**20
        else:
            assert r["status"] == "stopped" and r["seconds"] is None and r["peak_bytes"] is None
            assert r["estimate_bytes"] > 8 * 2**20 and "stopped" in r["note"]
    # the Wigner route is not limited by that budget
    assert all(r["status"] == "measured" for r in res.body_order if r["route"] == scaling.WIGNER)


def test_a_truncated_basis_is_passed_to_the_engine_not_swapped_in():
    import wkviz.engine.density as density
    from wkviz.engine.kernels import WignerKernel

    original = density.radial_basis
    flag = threading.Event()

    def cancel_after_first(fraction, eta):
        if fraction > 0:
            flag.set()

    with pytest.raises(Cancelled):
        scaling.compare_body_order_cost(make_molecules(("H2O",)), HYPERS, nu_max=2, n_radial=1, nu_basis=2,
                                        basis_sizes=(1,), progress=cancel_after_first, cancel=flag)
    assert density.radial_basis is original
    # the truncated engine matches the truncated features; an engine built without it keeps the whole basis
    frames = make_molecules(("H2O", "NH3"))
    h = HYPERS.replace(nu_max=2, normalization="exact")
    small = WignerKernel(h, radial_basis=scaling.truncated_radial_basis(h, 1)).compute(frames, atomic=True)
    whole = WignerKernel(h).compute(frames, atomic=True)
    feats = features.feature_kernels(frames, h, nu_max=2, n_radial=1)
    assert scaling._deviation(small.K_atomic[2], feats.K_atomic[2]) < 1e-8
    assert scaling._deviation(whole.K_atomic[2], small.K_atomic[2]) > 1e-6
    assert scaling.truncated_radial_basis(h, None) is None


def test_bad_requests_name_the_fix():
    with pytest.raises(InputError, match="at least one structure"):
        scaling.compare_body_order_cost([], HYPERS)
    with pytest.raises(InputError, match="nu_max must be between 1 and 8"):
        scaling.compare_body_order_cost(make_molecules(("H2O",)), HYPERS, nu_max=9)
    with pytest.raises(InputError, match="n_radial must be at least 1"):
        scaling.compare_body_order_cost(make_molecules(("H2O",)), HYPERS, n_radial=0)
