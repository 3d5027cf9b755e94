"""Figure builders (wkviz.views.figures) and downloads (wkviz.views.export): pure functions, checked on what they
put in the figure or the file."""

from __future__ import annotations

import io
import json
import os
import shlex

import ase.build
import ase.io
import numpy as np
import pandas as pd
import pytest

from wkviz import Hypers

from wkviz.cli import reproduce
from conftest import require_that
from wkviz.views import export, figures


def _random_psd(n, rank, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, rank))
    return X @ X.T


# ---- colours and names ------------------------------------------------------------------------------------------

def test_body_order_palette_is_one_vocabulary():
    colours = [figures.body_order_color(nu) for nu in range(0, 13)]
    assert len(set(colours)) == 13, "every body order up to 12 has its own colour"
    assert figures.MIXED_COLOR not in colours
    # model names from wkviz.models.standard_models map onto the same colours
    assert figures.model_color("composition") == figures.body_order_color(0)
    assert figures.model_color("nu=3") == figures.body_order_color(3)
    assert figures.model_color("mixed") == figures.MIXED_COLOR
    assert figures.model_nu("ν=2") == 2 and figures.model_nu("nu4") == 4 and figures.model_nu("mixed") is None
    assert figures.body_order_label(2) == "ν=2 · 3-body"


def test_learning_curve_colours_follow_the_palette():
    rows = [{"model": m, "n_train": n, "repeat": r, "mae": 1.0 / n ** 0.5, "rmse": 1.2 / n ** 0.5}
            for m in ("composition", "nu=1", "nu=2", "mixed") for n in (10, 20, 40) for r in range(2)]
    fig = figures.learning_curve_plot(pd.DataFrame(rows), unit="eV", target="U0")
    lines = {tr.legendgroup: tr.line.color for tr in fig.data if tr.mode == "lines+markers"}
    assert lines["nu=2"] == figures.body_order_color(2)
    assert lines["composition"] == figures.body_order_color(0)
    assert lines["mixed"] == figures.MIXED_COLOR


# ---- kernels ------------------------------------------------------------------------------------------------------

def test_normalized_kernel_has_unit_diagonal_and_handles_zero_self_kernels():
    K = _random_psd(6, 3)
    K[5, :] = K[:, 5] = 0.0  # an isolated atom: no ν ≥ 1 density
    Kn = figures.normalized_kernel(K)
    assert np.allclose(np.diag(Kn)[:5], 1.0)
    assert np.all(Kn[5] == 0.0) and np.all(np.isfinite(Kn))
    assert np.all(np.abs(Kn) <= 1 + 1e-12)


def test_kernel_heatmaps_one_panel_per_nu_and_axes_with_units():
    K = np.stack([_random_psd(20, 4, seed=s) for s in range(4)])
    fig = figures.kernel_heatmaps(K, [1, 3], max_size=12)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2
    assert np.asarray(heat[0].z).shape == (12, 12)
    assert np.allclose(np.diag(np.asarray(heat[1].z)), 1.0)
    assert "(#)" in fig.layout.xaxis.title.text and "(#)" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="nu_max\\+1"):
        figures.kernel_heatmaps(K[0])


def test_spectrum_table_effective_rank_and_weight_share():
    n = 30
    K = np.stack([np.ones((n, n)), np.eye(n), _random_psd(n, 3)])
    table = figures.spectrum_table(K, weights=[1.0, 1.0, 2.0])
    assert table.loc[0, "effective_rank"] == pytest.approx(1.0)  # all structures identical
    assert table.loc[1, "effective_rank"] == pytest.approx(n)  # all structures orthogonal
    assert 1.0 < table.loc[2, "effective_rank"] <= 3.0 + 1e-9
    assert table.loc[0, "mean_similarity"] == pytest.approx(1.0)
    assert table.loc[1, "mean_similarity"] == pytest.approx(0.0)
    assert table["weight_share"].sum() == pytest.approx(1.0)
    fig = figures.body_order_spectrum(table, "effective_rank")
    assert list(fig.data[0].marker.color) == [figures.body_order_color(nu) for nu in range(3)]


# ---- models -------------------------------------------------------------------------------------------------------

def test_parity_plot_carries_row_ids_formulas_and_errors():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.1, 1.8, 3.0, 4.5])
    ids = [7, 3, 11, 2]
    fig = figures.parity_plot(y, p, ids=ids, formulas=["H2O", "CH4", "NH3", "CO2"], target="U0", unit="eV",
                              sigma=np.full(4, 0.1), selected=[11])
    points = fig.data[1]
    cd = np.asarray(points.customdata, dtype=object)
    assert [int(i) for i in cd[:, 0]] == ids
    assert list(cd[:, 1]) == ["H2O", "CH4", "NH3", "CO2"]
    assert np.allclose(cd[:, 2].astype(float), p - y)
    assert "structure %{customdata[0]}" in points.hovertemplate and "error" in points.hovertemplate
    assert fig.layout.xaxis.title.text == "true U0 (eV)" and fig.layout.yaxis.title.text == "predicted U0 (eV)"
    assert np.allclose(points.error_y.array, 0.1)
    ring = fig.data[-1]
    assert ring.name == "shown in 3D" and list(ring.x) == [3.0]
    assert "MAE 0.2 eV" in fig.layout.title.text


def test_parity_plot_vectors_one_trace_per_component():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(5, 3))
    fig = figures.parity_plot(y, y + 0.01, ids=range(5), target="dipole", unit="e·Å")
    assert [t.name for t in fig.data[1:]] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="differ in shape"):
        figures.parity_plot(y, y[:, :2], ids=range(5))


def test_learning_curve_slopes_recover_power_law_and_band_uses_repeats():
    rows = []
    for r in range(3):
        for n in (10, 20, 40, 80):
            rows.append({"model": "mixed", "n_train": n, "repeat": r, "mae": 3.0 * n ** -0.5 * (1 + 0.01 * r),
                         "rmse": 1.0})
            rows.append({"model": "nu=2", "n_train": n, "repeat": r, "mae": 2.0 * n ** -0.25, "rmse": 1.0})
    table = pd.DataFrame(rows)
    slopes = figures.learning_curve_slopes(table)
    assert slopes["mixed"] == pytest.approx(-0.5, abs=1e-3)
    assert slopes["nu=2"] == pytest.approx(-0.25, abs=1e-9)
    fig = figures.learning_curve_plot(table, unit="eV", target="U0")
    names = [t.name for t in fig.data if t.name]
    assert any("slope -0.50" in n for n in names) and any("slope -0.25" in n for n in names)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    # ±1 std over the 3 repeats as error bars, in the model's own (body-order) colour, markers too
    for trace in fig.data:
        nu2 = "ν=2" in trace.name
        color = figures.body_order_color(2) if nu2 else figures.MIXED_COLOR
        assert trace.marker.color == color and trace.error_y.color == color and trace.error_y.visible
        expected = table[table["model"] == ("nu=2" if nu2 else "mixed")].groupby("n_train")["mae"].std().to_numpy()
        assert np.allclose(trace.error_y.array, expected)
    assert not any(t.fill == "toself" for t in fig.data)
    assert "(eV)" in fig.layout.yaxis.title.text


def test_error_by_group_and_model_comparison():
    table = pd.DataFrame({"n_atoms": [5, 9], "n": [3, 4], "mae": [0.1, 0.3], "rmse": [0.2, 0.4]})
    fig = figures.error_by_group(table, group="n_atoms", group_label="atoms per structure (count)", unit="eV")
    assert list(fig.data[0].y) == [0.1, 0.3]
    assert fig.layout.yaxis.title.text.endswith("(eV)")
    comp = pd.DataFrame({"model": ["mixed", "composition", "nu=1"], "mae": [0.1, 2.0, 0.5]})
    fig = figures.model_comparison(comp, unit="eV")
    assert list(fig.data[0].x)[0].startswith("ν=0")  # composition first, mixed last
    assert list(fig.data[0].marker.color)[-1] == figures.MIXED_COLOR


# ---- maps and teaching -----------------------------------------------------------------------------------------

def test_teaching_figures():
    fig = figures.distance_by_nu({1: 0.0, 2: 1e-9, 3: 0.27})
    assert list(fig.data[0].text) == ["identical", "identical", "0.27"]
    fig = figures.vector_kernel_block(np.eye(3), zmax=2.0)
    assert fig.data[0].zmax == 2.0 and fig.data[0].zmin == -2.0
    fig = figures.cost_vs_nu(pd.DataFrame({"nu": [1, 2, 3], "seconds": [1.0, 2.0, 3.0]}))
    assert fig.layout.yaxis.type == "log" and "(s)" in fig.layout.yaxis.title.text
    fig = figures.body_order_picture(4)
    assert any("Wigner kernel" in (t.name or "") for t in fig.data)


def _cost_rows():
    """Body-order rows as wkviz.evaluation.scaling returns them: the features stop at ν = 3."""
    rows = []
    for nu in (1, 2, 3, 4):
        rows.append(dict(nu=nu, route="Wigner kernel", status="measured", seconds=0.1 * nu, peak_bytes=2**20 * nu,
                         estimate_bytes=None, features=None, deviation=1e-15, note=""))
        run = nu < 3
        rows.append(dict(nu=nu, route="explicit features", status="measured" if run else "stopped",
                         seconds=0.05 * 30 ** (nu - 1) if run else None, peak_bytes=2**20 * 20 ** nu if run else None,
                         estimate_bytes=2**20 * 20 ** nu, features=10 ** nu, deviation=1e-15 if run else None,
                         note="" if run else "stopped"))
    return pd.DataFrame(rows)


def test_route_cost_by_nu_shows_measured_points_and_marks_the_stop():
    table = _cost_rows()
    fig = figures.route_cost_by_nu(table, "seconds")
    wigner, feats = fig.data[0], fig.data[1]
    assert list(wigner.x) == [1, 2, 3, 4] and np.allclose(wigner.y, [0.1, 0.2, 0.3, 0.4])
    assert list(feats.x) == [1, 2], "stopped runs have no time"
    assert list(wigner.marker.color) == [figures.body_order_color(nu) for nu in (1, 2, 3, 4)]
    assert fig.layout.yaxis.type == "log" and "wall time (s)" in fig.layout.yaxis.title.text
    assert fig.layout.shapes[0].x0 == 2.5 and "stopped from ν=3" in fig.layout.annotations[0].text
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= 2.0, "timing noise is never blown up to fill the axis"

    budget = 512 * 2**20
    fig = figures.route_cost_by_nu(table, "peak_bytes", budget=budget)
    estimate = next(t for t in fig.data if "not run" in t.name)
    assert list(estimate.x) == [2, 3, 4] and np.allclose(estimate.y, [400.0, 8000.0, 160000.0])  # MB
    assert fig.layout.shapes[0].y0 == 512.0 and "512 MB" in fig.layout.annotations[0].text
    assert np.isclose(fig.layout.annotations[0].y, np.log10(512.0)), "annotations on log axes take log10"
    assert "peak memory (MB)" in fig.layout.yaxis.title.text


def test_route_cost_by_basis_and_feature_counts():
    rows = []
    for n in (1, 2, 4, 8):
        rows.append(dict(n_radial=n, n_radial_per_l=f"{n}/{n}", nu=3, route="Wigner kernel", status="measured",
                         seconds=0.1, note=""))
        rows.append(dict(n_radial=n, n_radial_per_l=f"{n}/{n}", nu=3, route="explicit features",
                         status="measured" if n < 8 else "stopped", seconds=0.01 * n ** 3 if n < 8 else None,
                         note=""))
    rows.append(dict(n_radial=None, n_radial_per_l="∞", nu=3, route="Wigner kernel, no basis (exact ν=1)",
                     status="measured", seconds=0.12, note=""))
    fig = figures.route_cost_by_basis(pd.DataFrame(rows))
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8]
    feats = next(t for t in fig.data if t.name == "explicit features")
    assert list(feats.x) == [1, 2, 4]
    exact = next(t for t in fig.data if "no basis" in t.name)
    assert list(exact.y) == [0.12, 0.12] and list(exact.x) == [1, 8]
    stop = fig.layout.shapes[0]
    assert 4 < stop.x0 < 8 and np.isclose(fig.layout.annotations[0].x, np.log10(stop.x0))
    assert fig.layout.title.text.replace("<br>", " ") == "Time against radial basis size at ν=3"

    counts = pd.DataFrame([dict(nu=nu, basis=b, features=n ** nu) for b, n in (("2 per l", 8), ("all", 50))
                           for nu in (1, 2, 3)])
    fig = figures.feature_count_plot(counts)
    assert [t.name for t in fig.data] == ["2 per l", "all"]
    assert list(fig.data[1].y) == [50, 2500, 125000]
    assert list(fig.data[1].text) == ["50", "2,500", "1.2×10<sup>5</sup>"]


# ---- downloads ----------------------------------------------------------------------------------------------------

def test_cli_command_writes_every_hyperparameter_and_quotes():
    h = Hypers(density_width=0.3, nu_max=3, density_scaling=2.5)
    cmd = reproduce.cli_command("kernels", h, "my data.extxyz", atomic=True, tensor_rank=None, out="K.npz")
    parts = shlex.split(cmd)
    assert parts[:5] == ["python", "-m", "wkviz", "kernels", "my data.extxyz"]
    for flag, value in (("--nu-max", "3"), ("--lambda-max", "3"), ("--cutoff", "5"), ("--density-scaling", "2.5"),
                        ("--normalization", "exact"), ("--out", "K.npz")):
        assert parts[parts.index(flag) + 1] == value
    assert "--atomic" in parts and "--tensor-rank" not in parts
    # switched-off options are written as "none", and the flags parse back to the same Hypers
    import argparse

    from wkviz.cli.common import add_hyper_flags, hypers_from_args

    off = h.replace(radial_scale=None, density_scaling=None)
    parts = shlex.split(reproduce.cli_command("kernels", off, "a.xyz"))
    assert parts[parts.index("--radial-scale") + 1] == "none"
    ap = argparse.ArgumentParser()
    ap.add_argument("sub")
    ap.add_argument("path")
    add_hyper_flags(ap)
    assert hypers_from_args(ap.parse_args(parts[3:])) == off
    cmd = reproduce.cli_command("learning-curve", None, sizes=[10, 20], repeats=2)
    assert "--sizes 10,20" in cmd
    config = json.loads(export.config_json(hypers=h, idx=np.arange(3)))
    assert config["hypers"]["nu_max"] == 3 and config["idx"] == [0, 1, 2]


def test_predictions_extxyz_round_trip():
    frames = [ase.build.molecule("H2O"), ase.build.molecule("NH3")]
    pred = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]])
    data = export.predictions_extxyz(frames, "dipole", pred, sigma=pred * 0.1)
    back = ase.io.read(io.StringIO(data.decode()), index=":", format="extxyz")
    assert np.allclose(back[1].info["dipole_predicted"], pred[1])
    assert np.allclose(back[0].info["dipole_std"], pred[0] * 0.1)
    assert "dipole_predicted" not in frames[0].info, "inputs are not modified"
    charges = np.arange(7, dtype=float)
    data = export.predictions_extxyz(frames, "q", charges, per_atom=True)
    back = ase.io.read(io.StringIO(data.decode()), index=":", format="extxyz")
    assert np.allclose(back[1].arrays["q_predicted"], charges[3:])


def test_chemiscope_json_has_structures_properties_and_environments():
    frames = [ase.build.molecule("H2O"), ase.build.bulk("Au", cubic=True)]
    data = json.loads(export.chemiscope_json(
        frames, {"PC1": {"target": "atom", "values": np.arange(7.0)}, "element": {"target": "atom",
                 "values": np.array(["O", "H", "H", "Au", "Au", "Au", "Au"])}},
        environments=[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)], cutoff=3.5, x="PC1", color="element"))
    assert [s["size"] for s in data["structures"]] == [3, 4]
    assert "cell" in data["structures"][1] and "cell" not in data["structures"][0]
    assert data["properties"]["PC1"]["values"] == list(np.arange(7.0))
    assert data["properties"]["element"]["values"][0] == "O"
    assert data["environments"][3] == {"structure": 1, "center": 0, "cutoff": 3.5}
    assert data["settings"]["map"]["x"]["property"] == "PC1"


def test_png_export_status_without_a_browser(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chrome")
    monkeypatch.setattr(export, "_BROWSER_CANDIDATES", ())
    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    ok, why = export.png_export_status()
    assert not ok and "Chromium" in why and "CSV" in why
    with pytest.raises(RuntimeError, match="Chromium"):
        export.figure_png(figures.histogram(np.arange(5.0), label="x", unit="Å"))


def test_figure_png_renders_with_system_chromium():
    require_that(os.path.exists("/usr/bin/chromium"), "PNG export needs /usr/bin/chromium (apt-get install chromium)")
    fig = figures.histogram(np.arange(10.0), label="size", unit="count")
    png = export.figure_png(fig, width=400, height=300, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_moved_names_keep_their_old_import_path_for_one_release():
    for name in export.__all__:
        assert getattr(figures, name) is getattr(export, name), name
    assert not hasattr(figures, "cli_command")  # moved to wkviz.cli.reproduce (views may not import the CLI)


def test_normalized_kernel_is_the_one_cosine_normalisation():
    from wkviz.evaluation.projection import cosine_normalize

    assert figures.normalized_kernel is cosine_normalize


def test_long_titles_wrap_so_half_width_figures_are_not_clipped():
    from wkviz.views.figures.style import TITLE_WIDTH

    y = np.linspace(0.0, 1.0, 5)
    long = "mixed Σ_ν c_ν K^ν: MAE 0.136 eV on 12 test structures of the bundled QM9 subset"
    fig = figures.parity_plot(y, y + 0.1, ids=np.arange(5), title=long)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) >= 2 and all(len(line) <= TITLE_WIDTH for line in lines)
    assert " ".join(lines) == long  # nothing lost
    assert fig.layout.margin.t > figures.parity_plot(y, y, ids=np.arange(5), title="short").layout.margin.t
