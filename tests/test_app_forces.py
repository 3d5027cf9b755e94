"""The app's energy-and-force views, driven headlessly (streamlit AppTest): the Models page's energy + force model
on the bundled gold data, and the Teach page's MD comparison with EMT."""

from __future__ import annotations

import numpy as np
import pytest

from test_app import _app, _goto, _problems
from wkviz import cache


def _gold(at, n=20):
    _goto(at, "data")
    at.selectbox(key="data.sample").set_value("gold").run()
    at.number_input(key="data.n").set_value(n).run()
    assert not any(_problems(at))
    return at


@pytest.mark.slow
def test_models_page_fits_energy_and_force_model_on_gold():
    from wkviz.models.forces import forces_of

    at = _gold(_app().run())
    _goto(at, "models")
    assert any(s.value == "Energies and forces" for s in at.subheader)
    at.number_input(key="models.forces.m").set_value(30).run()
    at.button(key="models.forces.btn").click().run()
    exc, err = _problems(at)
    assert not exc and not err, (exc, err)
    meta = at.session_state["wk.force_fit"]
    assert meta["n_active"] == 30 and meta["hypers"].cutoff == 6.0  # the long-range gold settings by default
    result = cache.RESULTS.get(meta["key"])
    metric = {m.label: m.value for m in at.metric}
    # the shown force MAE is that of the model's own predictions against the data's forces, recomputed here
    frames = at.session_state["wk.dataset"].frames
    test = [frames[i] for i in meta["test"]]
    _, F = result["model"].predict(test, forces=True)
    f_err = np.concatenate([(f - forces_of(a)).ravel() for f, a in zip(F, test)])
    assert float(metric["Force MAE (eV/Å)"]) == pytest.approx(np.abs(f_err).mean(), rel=1e-3)
    # and it learned something: far below the mean |component| of the true forces (predicting zero)
    f_true = np.concatenate([forces_of(a).ravel() for a in test])
    assert np.abs(f_err).mean() < 0.5 * np.abs(f_true).mean()
    assert "Energy MAE (eV)" in metric
    # the force parity plot and the 3D view with one error arrow per atom of the shown test structure
    spec = [c for c in at.get("plotly_chart") if "Forces per component" in c.proto.spec]
    assert spec, "no force parity plot"
    html = at.get("iframe")[-1].proto.srcdoc
    pick = at.selectbox(key="models.forces.structure").value
    shown = frames[int(meta["test"][pick])]
    assert html.count(".addArrow({\"start\"") == len(shown)  # one error arrow per atom
    # |F| mode plots one point per test atom
    at.radio(key="models.forces.mode").set_value("norm").run()
    assert not any(_problems(at))
    assert any("Forces of |F|" in c.proto.spec for c in at.get("plotly_chart"))


@pytest.mark.slow
def test_teach_page_runs_md_with_learned_gold_potential_and_emt():
    at = _app().run()
    _goto(at, "teach")
    at.number_input(key="teach.md_steps").set_value(30)  # inside a form: sent with the submit click
    at.button(key="teach.md.btn").click().run()
    exc, err = _problems(at)
    assert not exc and not err, (exc, err)
    res = cache.RESULTS.get(at.session_state["wk.md_request"])
    runs = res["runs"]
    assert set(runs) == {"learned", "EMT"} and res["n_train"] > 0
    # same start and velocities: identical first frames and kinetic energies, then both conserve their energy
    np.testing.assert_allclose(runs["learned"]["positions"][0], runs["EMT"]["positions"][0])
    assert runs["learned"]["kinetic"][0] == pytest.approx(runs["EMT"]["kinetic"][0])
    for run in runs.values():
        assert len(run["time_fs"]) == 31 and run["time_fs"][-1] == pytest.approx(60.0)
        assert np.ptp(run["total"]) < 0.2 * np.ptp(run["kinetic"])
    # the learned potential is close to EMT: starting energies within a few tenths of an eV of a ~20 eV cluster energy
    assert abs(runs["learned"]["potential"][0] - runs["EMT"]["potential"][0]) < 0.5
    labels = [m.label for m in at.metric]
    assert "Drift, learned (meV/atom/ps)" in labels and "Drift, EMT (meV/atom/ps)" in labels
    assert any("Energy conservation" in c.proto.spec for c in at.get("plotly_chart"))
    at.slider(key="teach.md_frame").set_value(30).run()
    assert not any(_problems(at))
