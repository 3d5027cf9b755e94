"""``python -m wkviz fit --forces`` and ``python -m wkviz md`` end to end on a few bundled gold clusters."""

from __future__ import annotations

import contextlib
import io
import re

import ase.io
import numpy as np
import pytest

from wkviz.cli import main

SMALL = ["--nu-max", "2", "--lambda-max", "2", "--cutoff", "4", "--cutoff-width", "0.5", "--density-width", "0.5",
         "--radial-scale", "none"]


@pytest.fixture(scope="module")
def gold_files(tmp_path_factory):
    from wkviz.data import load_sample

    clusters = [a for a in load_sample("gold") if not a.pbc.any() and len(a) <= 13]
    d = tmp_path_factory.mktemp("gold")
    # copies drop the calculator: energy stays in atoms.info, forces in atoms.arrays
    ase.io.write(d / "train.extxyz", [a.copy() for a in clusters[:8]])
    ase.io.write(d / "test.extxyz", [a.copy() for a in clusters[8:11]])
    return d


@pytest.fixture(scope="module")
def fitted(gold_files):
    """The fit's exit code and stdout lines; it writes gold_files / "model.npz"."""
    d = gold_files
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(["fit", "--train", str(d / "train.extxyz"), "--test", str(d / "test.extxyz"), "--target",
                     "energy", "--forces", "forces", "--active-environments", "30", "--save-model",
                     str(d / "model.npz"), *SMALL])
    return code, buf.getvalue().strip().splitlines()


def test_fit_with_forces_prints_force_then_energy_errors_and_saves_the_model(gold_files, fitted):
    d = gold_files
    code, out = fitted
    assert code == 0
    force = re.fullmatch(r"FORCE_MAE=(\S+) FORCE_RMSE=(\S+)", out[-2])
    energy = re.fullmatch(r"MAE=(\S+) RMSE=(\S+)", out[-1])
    assert force and energy
    f_mae, f_rmse = map(float, force.groups())
    assert 0 < f_mae <= f_rmse
    # the printed force error is the saved model's error on the test file
    from wkviz.models.forces import EnergyForceModel, forces_of

    model = EnergyForceModel.load(d / "model.npz")
    test = ase.io.read(d / "test.extxyz", ":")
    _, F = model.predict(test)
    err = np.concatenate([(f - forces_of(a)).ravel() for f, a in zip(F, test)])
    assert np.abs(err).mean() == pytest.approx(f_mae, rel=1e-6)


def test_md_nve_conserves_energy_and_writes_the_trajectory(gold_files, fitted, capsys):
    d = gold_files
    out_path = d / "traj.extxyz"
    code = main(["md", str(d / "model.npz"), str(d / "test.extxyz"), "--steps", "20", "--timestep", "1",
                 "--temperature", "300", "--interval", "5", "--out", str(out_path)])
    captured = capsys.readouterr()
    assert code == 0
    m = re.fullmatch(r"STEPS=20 E_START=(\S+) E_END=(\S+) DRIFT=(\S+)", captured.out.strip().splitlines()[-1])
    assert m
    frames = ase.io.read(out_path, ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    etot = [f.info["total_energy"] for f in frames]
    # velocity Verlet with 1 fs on gold: the total energy moves far less than the kinetic energy (≈ 0.4 eV here)
    assert np.ptp(etot) < 0.01
    assert "md" in captured.err
    assert not list(d.glob("traj.extxyz.tmp-*"))
    code = main(["md", str(d / "model.npz"), str(d / "test.extxyz"), "--steps", "3", "--friction", "0.02",
                 "--out", str(d / "langevin.extxyz")])
    assert code == 0 and len(ase.io.read(d / "langevin.extxyz", ":")) == 2  # steps 0 and 3


def test_bad_force_and_md_input_is_one_error_line(gold_files, capsys, tmp_path):
    d = gold_files
    code = main(["fit", "--train", str(d / "train.extxyz"), "--test", str(d / "test.extxyz"), "--target", "energy",
                 "--forces", "nope", *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: structure 0 of the training file has no per-atom forces 'nope'")
    np.savez(tmp_path / "x.npz", a=np.zeros(1))
    code = main(["md", str(tmp_path / "x.npz"), str(d / "test.extxyz"), "--steps", "2", "--out",
                 str(tmp_path / "t.extxyz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "not a wkviz energy-force model" in err[-1]
    code = main(["md", str(tmp_path / "x.npz"), str(d / "test.extxyz"), "--steps", "0", "--out",
                 str(tmp_path / "t.extxyz")])
    assert code == 2 and "--steps must be at least 1" in capsys.readouterr().err
