"""3D viewer HTML (wkviz.views.viewer): self-contained, offline, deterministic, and showing what it claims."""

from __future__ import annotations

import re

import ase.build
import numpy as np
import pytest

from conftest import require_that
from wkviz.views import viewer

@pytest.fixture
def _3dmol():
    require_that(viewer.viewer_available(), "local 3Dmol.js missing; run `python scripts/fetch_3dmol.py`")


needs_3dmol = pytest.mark.usefixtures("_3dmol")


def _commands(html: str) -> str:
    """The viewer commands, i.e. the document without the inlined library."""
    return html.split("$3Dmolpromise = Promise.resolve()", 1)[1]


@needs_3dmol
def test_structure_html_inlines_3dmol_and_never_points_to_a_cdn():
    atoms = ase.build.molecule("CH3CH2OH")
    html = viewer.structure_html(atoms, structure_id=17)
    library = viewer.local_3dmol_path().read_text(encoding="utf-8")
    assert len(html) > len(library)  # the whole library is inlined
    assert "cdn.jsdelivr" not in html and "3dmol.org" not in html.lower().replace("3dmol.org/doc", "")
    # no <script src=...> at all: nothing is fetched when the page is shown
    assert not re.search(r"<script[^>]*\bsrc=", html, flags=re.IGNORECASE)
    assert "$3Dmolpromise = Promise.resolve()" in html
    attrs = viewer.describe(html)
    assert attrs == {"structure-id": "17", "formula": "C2H6O", "atoms": "9"}
    assert "structure 17 · C2H6O" in html


@needs_3dmol
def test_html_is_deterministic_and_changes_with_content():
    atoms = ase.build.molecule("H2O")
    a = viewer.structure_html(atoms, structure_id=1)
    b = viewer.structure_html(atoms.copy(), structure_id=1)
    assert a == b, "same content, same document: Streamlit does not reload an unchanged viewer"
    moved = atoms.copy()
    moved.positions[0, 0] += 0.1
    assert viewer.structure_html(moved, structure_id=1) != a


@needs_3dmol
def test_molecule_coordinates_and_arrows_reach_the_viewer():
    atoms = ase.build.molecule("H2O")
    arrows = viewer.dipole_arrows(atoms, {"true": ([0.0, 0.0, 0.4], "#333333"), "pred": ([0.0, 0.0, 0.2], "#c92a2a")})
    html = viewer.structure_html(atoms, arrows=arrows)
    for x, y, z in atoms.positions:
        assert f"{x:.6f} {y:.6f} {z:.6f}" in html
    assert _commands(html).count("addArrow(") == 2 and '"#c92a2a"' in _commands(html)


def test_dipole_arrows_keep_relative_lengths():
    atoms = ase.build.molecule("H2O")
    arrows = viewer.dipole_arrows(atoms, {"a": ([0, 0, 2.0], "#000"), "b": ([1.0, 0, 0], "#111")}, length=3.0)
    assert np.linalg.norm(arrows[0].vector) == pytest.approx(3.0)
    assert np.linalg.norm(arrows[1].vector) == pytest.approx(1.5)
    assert np.allclose(arrows[0].start, atoms.get_center_of_mass())


@needs_3dmol
def test_environment_html_counts_neighbours_in_molecules_and_crystals():
    methane = ase.build.molecule("CH4")
    carbon = int(np.flatnonzero(methane.numbers == 6)[0])
    html = viewer.environment_html(methane, carbon, 1.5, structure_id=0)
    assert viewer.describe(html)["neighbors"] == "4"
    assert "4 neighbours within 1.5 Å" in html
    assert "addSphere(" in _commands(html)  # the cutoff sphere
    gold = ase.build.bulk("Au", "fcc", a=4.08)  # one atom per cell: neighbours are periodic images
    html = viewer.environment_html(gold, 0, 3.0)
    assert viewer.describe(html)["neighbors"] == "12"
    with pytest.raises(IndexError):
        viewer.environment_html(methane, 99, 2.0)


@needs_3dmol
def test_periodic_structure_draws_its_cell():
    html = viewer.structure_html(ase.build.bulk("Au", cubic=True), structure_id=3)
    assert _commands(html).count("addCylinder(") == 12


def test_missing_library_gives_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(viewer, "STATIC_DIR", tmp_path)
    assert not viewer.viewer_available()
    with pytest.raises(viewer.ViewerUnavailable, match="scripts/fetch_3dmol.py"):
        viewer.structure_html(ase.build.molecule("H2O"))
    assert "never loads it from the internet" in viewer.missing_message()


