"""End-to-end tests of ``python -m wkviz fit`` and ``python -m wkviz learning-curve`` on bundled data."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
QM9 = ROOT / "sample_data" / "qm9_subset.extxyz.gz"
SMALL = ["--nu-max", "3", "--lambda-max", "2"]
LAST_LINE = re.compile(r"^MAE=(\S+) RMSE=(\S+)$")


def run(*args, timeout=120):
    return subprocess.run([PYTHON, "-m", "wkviz", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def qm9_files(tmp_path_factory):
    from wkviz.data import load_sample

    frames = load_sample("qm9")
    d = tmp_path_factory.mktemp("qm9")
    ase.io.write(d / "train.extxyz", frames[:50])
    ase.io.write(d / "test.extxyz", frames[50:70])
    poisoned = [a.copy() for a in frames[50:70]]
    rng = np.random.default_rng(0)
    for a in poisoned:
        a.info["U0"] = float(rng.normal() * 1e4)
    ase.io.write(d / "test_poisoned.extxyz", poisoned)
    return d


def check_fit_output(proc, out_csv):
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    mae, rmse = float(match.group(1)), float(match.group(2))
    header, rows = read_csv(out_csv)
    assert header == ["structure", "atom", "component", "true", "predicted"]
    err = np.array([float(r[4]) - float(r[3]) for r in rows])
    assert mae == pytest.approx(np.abs(err).mean(), rel=1e-6)
    assert rmse == pytest.approx(np.sqrt((err**2).mean()), rel=1e-6)
    return rows


@pytest.mark.slow
def test_fit_scalar_end_to_end_and_poisoned_test_targets(qm9_files, tmp_path):
    out = tmp_path / "pred.csv"
    proc = run("fit", "--train", qm9_files / "train.extxyz", "--test", qm9_files / "test.extxyz", "--target", "U0",
               "--out", out, "--seed", 1, *SMALL)
    rows = check_fit_output(proc, out)
    assert [int(r[0]) for r in rows] == list(range(20))
    assert {r[1] for r in rows} == {"-1"} and {r[2] for r in rows} == {"0"}
    mae = float(LAST_LINE.match(proc.stdout.strip().splitlines()[-1]).group(1))
    assert mae < 1.0  # eV; the composition baseline alone is worse than this on U0
    assert "%" in proc.stderr  # progress on stderr
    assert "by the GP evidence" in proc.stderr  # the default selection

    # hyperparameters by k-fold CV instead: a different fit of the same quality
    out_cv = tmp_path / "pred_cv.csv"
    proc_cv = run("fit", "--train", qm9_files / "train.extxyz", "--test", qm9_files / "test.extxyz", "--target", "U0",
                  "--out", out_cv, "--seed", 1, "--selection", "cv", *SMALL)
    rows_cv = check_fit_output(proc_cv, out_cv)
    assert "by cross-validation" in proc_cv.stderr
    assert [r[4] for r in rows_cv] != [r[4] for r in rows]
    assert float(LAST_LINE.match(proc_cv.stdout.strip().splitlines()[-1]).group(1)) < 1.0

    # the test targets are read only to score: poisoning them changes the errors, never the predictions
    out2 = tmp_path / "pred_poisoned.csv"
    proc2 = run("fit", "--train", qm9_files / "train.extxyz", "--test", qm9_files / "test_poisoned.extxyz",
                "--target", "U0", "--out", out2, "--seed", 1, *SMALL)
    rows2 = check_fit_output(proc2, out2)
    assert [r[4] for r in rows2] == [r[4] for r in rows]
    assert [r[3] for r in rows2] != [r[3] for r in rows]


@pytest.mark.slow
def test_fit_vector_and_atomic_targets_layout(qm9_files, tmp_path):
    out = tmp_path / "dipole.csv"
    rows = check_fit_output(run("fit", "--train", qm9_files / "train.extxyz", "--test", qm9_files / "test.extxyz",
                                "--target", "mulliken_dipole", "--out", out, *SMALL), out)
    assert len(rows) == 60 and [r[2] for r in rows[:6]] == ["0", "1", "2"] * 2 and {r[1] for r in rows} == {"-1"}

    out = tmp_path / "charges.csv"
    rows = check_fit_output(run("fit", "--train", qm9_files / "train.extxyz", "--test", qm9_files / "test.extxyz",
                                "--target", "mulliken", "--out", out, *SMALL), out)
    test = ase.io.read(qm9_files / "test.extxyz", ":")
    assert len(rows) == sum(len(a) for a in test)
    first = [r for r in rows if r[0] == "0"]
    assert [int(r[1]) for r in first] == list(range(len(test[0])))


@pytest.mark.slow
def test_fit_symmetric_tensor_target(tmp_path):
    from ase.build import molecule

    rng = np.random.default_rng(1)
    frames = []
    for name in ["H2O", "NH3", "CH4", "CH3OH", "HCOOH", "CH3CHO", "CH3CH2OH", "CH3CN", "HCN", "H2CO", "C2H4",
                 "C2H2", "CO2", "N2O", "CH3OCH3", "C2H6"] * 2:
        a = molecule(name)
        a.positions += 0.1 * rng.normal(size=a.positions.shape)
        r = a.positions - a.positions.mean(0)
        a.info["polar"] = (r.T @ r + len(a) * np.eye(3)).ravel()  # symmetric, 9 numbers
        frames.append(a)
    ase.io.write(tmp_path / "train.extxyz", frames[:24])
    ase.io.write(tmp_path / "test.extxyz", frames[24:])
    out = tmp_path / "polar.csv"
    rows = check_fit_output(run("fit", "--train", tmp_path / "train.extxyz", "--test", tmp_path / "test.extxyz",
                                "--target", "polar", "--out", out, "--nu-max", "2", "--lambda-max", "2",
                                "--cutoff", "3.5"), out)
    assert len(rows) == 8 * 9 and [int(r[2]) for r in rows[:9]] == list(range(9))
    pred = np.array([float(r[4]) for r in rows]).reshape(8, 3, 3)
    np.testing.assert_allclose(pred, pred.transpose(0, 2, 1), atol=1e-9)


@pytest.mark.slow
def test_learning_curve_end_to_end_on_bundled_data(tmp_path):
    out = tmp_path / "lc.csv"
    proc = run("learning-curve", "--data", QM9, "--target", "U0", "--sizes", "10,20", "--repeats", 2,
               "--test-size", 20, "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stderr
    header, rows = read_csv(out)
    assert header == ["model", "n_train", "repeat", "mae", "rmse"]
    models = {r[0] for r in rows}
    assert models == {"composition", "nu=1", "nu=2", "nu=3", "mixed"}
    assert len(rows) == 5 * 2 * 2
    assert {(int(r[1]), int(r[2])) for r in rows} == {(10, 0), (10, 1), (20, 0), (20, 1)}
    assert all(float(r[3]) > 0 and float(r[4]) >= float(r[3]) for r in rows)
    assert "slopes" in proc.stdout
    assert "structures in the kernel" in proc.stderr  # only the structures the splits use (≤ 80 of 2000)


@pytest.mark.slow
def test_bad_input_gives_one_error_line(qm9_files, tmp_path):
    train, test = qm9_files / "train.extxyz", qm9_files / "test.extxyz"
    out = tmp_path / "x.csv"
    for args in (
        ("fit", "--train", train, "--test", test, "--target", "no_such_key", *SMALL),
        ("learning-curve", "--data", train, "--target", "U0", "--sizes", "10,abc", "--out", out),
        ("learning-curve", "--data", train, "--target", "U0", "--sizes", "10,5000", "--out", out),
        ("fit", "--train", "/nonexistent.xyz", "--test", test, "--target", "U0"),
        ("fit", "--train", train, "--test", test, "--target", "U0", "--nu-max", "0"),
    ):
        proc = run(*args)
        assert proc.returncode != 0
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr


def test_main_module_only_dispatches_and_keeps_its_re_exports():
    import wkviz.__main__ as entry
    import wkviz.cli as cli
    from wkviz.cli import common

    assert entry.main is cli.main
    # re-exported for one release (issue 14); the home is wkviz.cli.common
    from wkviz.__main__ import add_hyper_flags, hypers_from_args

    assert (add_hyper_flags, hypers_from_args) == (common.add_hyper_flags, common.hypers_from_args)
    # nothing in the package imports the entry point
    root = Path(cli.__file__).resolve().parents[1]
    offenders = [p.name for p in root.rglob("*.py") if p.name != "__main__.py"
                 and re.search(r"from \.+__main__ import|import wkviz\.__main__|from wkviz\.__main__", p.read_text())]
    assert not offenders
    parser = cli.build_parser()
    assert {"kernels", "fit", "learning-curve"} <= set(parser._subparsers._group_actions[0].choices)
