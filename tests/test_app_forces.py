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
    # |F| mode plots one point per test atom
    at.radio(key="models.forces.mode").set_value("norm").run()
    assert not any(_problems(at))
    assert any("Forces of |F|" in c.proto.spec for c in at.get("plotly_chart"))
