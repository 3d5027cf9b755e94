"""Figures and the MD helper of the energy-and-force app views: force parity, energy conservation, run_md."""

from __future__ import annotations

import threading

import ase.build
import numpy as np
import pytest

from wkviz.errors import Cancelled, InputError
from wkviz.views import figures


def _fig_text(fig):
    return fig.layout.title.text.replace("<br>", " ")


def test_force_parity_components_data_units_and_errors():
    rng = np.random.default_rng(0)
    ft = [rng.normal(size=(4, 3)), rng.normal(size=(3, 3))]
    fp = [f + 0.1 for f in ft]  # every component off by exactly 0.1 eV/Å
    fig = figures.force_parity(ft, fp, structure_ids=[7] * 4 + [9] * 3)
    pts = [t for t in fig.data if t.name in ("F_x", "F_y", "F_z")]
    assert [t.name for t in pts] == ["F_x", "F_y", "F_z"]
    allt = np.concatenate(ft)
    for c, t in enumerate(pts):
        np.testing.assert_allclose(t.x, allt[:, c])
        np.testing.assert_allclose(t.y, allt[:, c] + 0.1)
        assert list(t.customdata[:, 0]) == [7] * 4 + [9] * 3
        assert list(t.customdata[:, 1]) == [0, 1, 2, 3, 0, 1, 2]
    assert "eV/Å" in fig.layout.xaxis.title.text and "eV/Å" in fig.layout.yaxis.title.text
    assert "MAE 0.1 eV/Å" in _fig_text(fig) and "n = 21" in _fig_text(fig)


def test_force_parity_norm_plots_magnitudes():
    ft = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    fp = np.array([[0.0, 0.0, 6.0], [0.0, 2.0, 0.0]])
    fig = figures.force_parity(ft, fp, mode="norm")
    pts = [t for t in fig.data if t.name == "|F| per atom"][0]
    np.testing.assert_allclose(pts.x, [5.0, 1.0])
    np.testing.assert_allclose(pts.y, [6.0, 2.0])
    assert "MAE 1 eV/Å" in _fig_text(fig) and "|F|" in fig.layout.xaxis.title.text


def test_force_parity_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="forces"):
        figures.force_parity(np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mode"):
        figures.force_parity(np.zeros((3, 3)), np.zeros((3, 3)), mode="x")


def test_energy_conservation_relative_energies_drift_and_units():
    t = np.arange(0, 1001, 100.0)  # 1 ps
    kin = 0.5 + 0.1 * np.sin(t / 50)
    pot = -10.0 - 0.1 * np.sin(t / 50) + 0.002 * t / 1000  # total drifts by 0.002 eV/ps
    fig = figures.energy_conservation({"learned": {"time_fs": t, "kinetic": kin, "potential": pot},
                                       "EMT": {"time_fs": t, "kinetic": kin, "potential": pot - 0.002 * t / 1000}})
    by_name = {tr.name: tr for tr in fig.data}
    total = by_name["learned: total (drift +0.002 eV/ps)"]
    np.testing.assert_allclose(total.y, 0.002 * t / 1000, atol=1e-12)
    np.testing.assert_allclose(by_name["learned: kinetic"].y, kin - kin[0])
    np.testing.assert_allclose(by_name["learned: potential"].y, pot - pot[0])
    assert any(n.startswith("EMT: total (drift ") and "eV/ps" in n for n in by_name)
    assert abs(float(by_name[[n for n in by_name if n.startswith("EMT: total")][0]].y[-1])) < 1e-12
    assert "(fs)" in fig.layout.xaxis.title.text and "(eV)" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="length"):
        figures.energy_conservation({"x": {"time_fs": t, "kinetic": kin[:3], "potential": pot}})


def test_run_md_conserves_emt_energy_and_honours_seed_and_cancel():
    from ase.calculators.emt import EMT

    from wkviz.calculator import run_md

    atoms = ase.build.fcc111("Au", (2, 2, 2), vacuum=5.0)
    atoms.pbc = False
    seen = []
    a = run_md(atoms, EMT(), steps=40, timestep_fs=2.0, temperature_K=300, seed=3, interval=10,
               progress=lambda f, eta: seen.append(f))
    b = run_md(atoms, EMT(), steps=40, timestep_fs=2.0, temperature_K=300, seed=3, interval=10)
    assert a["positions"].shape == (5, len(atoms), 3) and list(a["time_fs"]) == [0, 20, 40, 60, 80]
    np.testing.assert_allclose(a["positions"], b["positions"])  # same seed, same velocities, same trajectory
    np.testing.assert_allclose(a["positions"][0], atoms.positions)
    np.testing.assert_allclose(a["total"], a["kinetic"] + a["potential"])
    assert a["kinetic"][0] > 0 and np.ptp(a["total"]) < 0.02 * np.ptp(a["potential"]) + 1e-3
    assert seen[-1] == 1.0 and len(seen) == 40
    c = run_md(atoms, EMT(), steps=10, seed=4)
    assert not np.allclose(c["kinetic"][0], a["kinetic"][0])
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        run_md(atoms, EMT(), steps=10, cancel=ev)
    with pytest.raises(InputError, match="steps"):
        run_md(atoms, EMT(), steps=0)
