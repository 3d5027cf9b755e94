"""chemiscope datasets (wkviz.views.explorer) against chemiscope's own reader, and the offline component files."""

from __future__ import annotations

import json
import re

import ase.build
import numpy as np
import pytest

from tests.conftest import require
from wkviz.evaluation import projection
from wkviz.views import explorer, export


def _frames():
    frames = [ase.build.molecule(name) for name in ("H2O", "CH4", "NH3", "C2H6")]
    for k, a in enumerate(frames):
        a.positions += 0.01 * k
    return frames


def test_dataset_reads_back_through_chemiscope_create_input():
    """Our hand-written document equals what chemiscope's own create_input makes of the same data (structures,
    per-atom properties, environments, arrow shapes): chemiscope validates every part."""
    chemiscope = require("chemiscope")
    frames = _frames()
    n_atoms = [len(a) for a in frames]
    envs = [(s, a) for s, n in enumerate(n_atoms) for a in range(n)]
    rng = np.random.default_rng(0)
    pc = rng.normal(size=len(envs))
    props = {"PC1": explorer.prop(pc, "atom", description="c1"),
             "element": explorer.prop([frames[s].get_chemical_symbols()[a] for s, a in envs], "atom")}
    vectors = rng.normal(size=(len(frames), 3))
    shapes = {"dipole": explorer.arrows(vectors, "#333333")}
    ours = explorer.dataset(frames, props, name="t", environments=envs, cutoff=3.5, shapes=shapes)
    ref = chemiscope.create_input(
        structures=frames, metadata={"name": "t"},
        properties={"PC1": {"target": "atom", "values": pc, "description": "c1"},
                    "element": {"target": "atom", "values": props["element"]["values"]}},
        environments=[(s, a, 3.5) for s, a in envs], shapes=shapes)
    assert ours["environments"] == ref["environments"]
    for mine, theirs in zip(ours["structures"], ref["structures"]):
        assert mine["names"] == theirs["names"]
        for axis in "xyz":
            assert np.allclose(mine[axis], theirs[axis], atol=1e-5)
    assert np.allclose(ours["properties"]["PC1"]["values"], ref["properties"]["PC1"]["values"], atol=1e-6)
    assert ours["properties"]["element"]["values"] == ref["properties"]["element"]["values"]
    # the arrows: one per structure, the largest 2.5 Å long, pointing along the vector
    arrows = [p["vector"] for p in ours["shapes"]["dipole"]["parameters"]["structure"]]
    lengths = np.linalg.norm(arrows, axis=1)
    assert lengths.max() == pytest.approx(2.5, abs=1e-3)
    assert np.allclose(np.asarray(arrows) / lengths[:, None], vectors / np.linalg.norm(vectors, axis=1)[:, None],
                       atol=1e-3)
    json.dumps(ours, allow_nan=False)  # plain JSON: Streamlit passes it to the browser's JSON.parse


def test_kpca_properties_are_the_projections_of_every_body_order():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 12, 5))
    K = np.einsum("kia,kja->kij", X, X) + 5.0
    projections = projection.project_all(K)
    props = explorer.kpca_properties(projections)
    assert set(props) == {f"{k} PC{c}" for k in ("ν=0", "ν=1", "ν=2", "mixed") for c in (1, 2)}
    assert np.allclose(props["ν=1 PC2"]["values"], projection.project(K, 1).coords[:, 1], atol=1e-6)
    assert "% of its variance" in props["mixed PC1"]["description"]


def test_model_properties_errors_on_test_rows_and_nothing_elsewhere():
    test = np.array([1, 3])
    y_true = np.array([1.0, -2.0])
    pred = np.array([1.5, -1.0])
    props = explorer.model_properties(5, test, y_true, {"mixed": {"pred": pred, "std": np.array([0.1, 0.2])}},
                                      unit="eV")
    err = props["|error| (mixed)"]["values"]
    assert err[1] == pytest.approx(0.5) and err[3] == pytest.approx(1.0)
    assert err[0] is None and err[2] is None and err[4] is None  # missing, never a made-up 0
    kept = explorer.take(props, test)
    assert kept["|error| (mixed)"]["values"] == pytest.approx([0.5, 1.0])
    assert kept["σ (mixed)"]["values"] == pytest.approx([0.1, 0.2])
    json.dumps(explorer.dataset(_frames()[:2], kept), allow_nan=False)
    # vectors: the norm of the prediction, the norm of the error
    vp = explorer.model_properties(2, [0, 1], np.array([[1.0, 0, 0], [0, 0, 0]]),
                                   {"mixed": {"pred": np.array([[0.0, 0, 0], [0, 3.0, 4.0]]), "std": None}})
    assert vp["|error| (mixed)"]["values"] == pytest.approx([1.0, 5.0])
    assert vp["prediction (mixed)"]["values"] == pytest.approx([0.0, 5.0])
    assert "σ (mixed)" not in vp


def test_default_colour_is_the_error_then_the_target_per_atom():
    frames = _frames()
    n_atoms = np.array([len(a) for a in frames])
    y = -10.0 * n_atoms + np.arange(4)
    props = explorer.target_properties("U0", y, unit="eV", n_atoms=n_atoms, extensive=True)
    assert props["U0 per atom"]["values"] == pytest.approx(list(y / n_atoms))
    assert explorer.default_color(props, "U0") == "U0 per atom"
    props.update(explorer.model_properties(4, [0], y[:1], {"mixed": {"pred": y[:1], "std": None}}))
    assert explorer.default_color(props, "U0") == "|error| (mixed)"
    comp = explorer.composition_properties(frames)
    assert comp["H atoms"]["values"] == [2, 4, 3, 6] and comp["number of atoms"]["values"] == list(n_atoms)
    assert explorer.default_color(comp, None) == "number of atoms"


def test_chemiscope_file_of_an_environment_map_has_atom_settings():
    frames = _frames()[:1]
    data = json.loads(export.chemiscope_json(frames, {"PC1": {"target": "atom", "values": np.arange(3.0)},
                                                      "PC2": {"target": "atom", "values": np.arange(3.0)}},
                                             environments=[(0, 0), (0, 1), (0, 2)], cutoff=4.5, x="PC1", y="PC2"))
    assert data["settings"]["target"] == "atom"
    assert data["settings"]["structure"][0]["environments"]["cutoff"] == 4.5
    assert data["settings"]["map"]["y"]["property"] == "PC2"


def test_component_files_load_nothing_from_the_internet(tmp_path):
    """The page the component is served from names no remote URL (chemiscope's own asks three CDNs), and the
    bundle is the installed chemiscope's."""
    require("chemiscope")
    ok, why = explorer.component_available()
    assert ok, why
    folder = explorer.component_dir(tmp_path / "cs")
    index = (folder / "index.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", index), index
    assert 'src="chemiscope-streamlit.min.js"' in index and 'id="chemiscope-root"' in index
    bundle = folder / "chemiscope-streamlit.min.js"
    assert bundle.read_bytes() == explorer._installed_bundle().read_bytes()
    again = explorer.component_dir(tmp_path / "cs")  # idempotent, no second copy
    assert again == folder and bundle.stat().st_mtime_ns == (again / bundle.name).stat().st_mtime_ns
