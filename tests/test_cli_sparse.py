"""``fit`` and ``learning-curve`` with ``--active-environments`` (sparse model): output contracts, phases on
stderr, the same numbers as the library, errors before any kernel."""

from __future__ import annotations

import csv
import re

import ase.io
import numpy as np
import pytest
from test_cli_models import QM9, SMALL, check_fit_output, run

LAST_LINE = re.compile(r"^MAE=(\S+) RMSE=(\S+)$")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from wkviz.data import load_sample

    frames = load_sample("qm9")
    d = tmp_path_factory.mktemp("sparse")
    ase.io.write(d / "train.extxyz", frames[:40])
    ase.io.write(d / "test.extxyz", frames[40:55])
    return d


@pytest.mark.slow
def test_fit_with_active_environments_is_the_library_model(files, tmp_path):
    from wkviz import Hypers
    from wkviz.data import composition_counts, get_target
    from wkviz.models.sparse import SparseScalarRegressor, select_active_environments, sparse_kernels

    out = tmp_path / "pred.csv"
    proc = run("fit", "--train", files / "train.extxyz", "--test", files / "test.extxyz", "--target", "U0",
               "--out", out, "--active-environments", 120, "--active-seed", 2, *SMALL)
    rows = check_fit_output(proc, out)
    for phase in ("phase 1/3", "phase 2/3", "phase 3/3", "memory estimate", "peak RSS", "100.0%"):
        assert phase in proc.stderr
    # the same selection, kernels and fit through the library
    train, test = ase.io.read(files / "train.extxyz", ":"), ase.io.read(files / "test.extxyz", ":")
    h = Hypers(nu_max=3, lambda_max=2)
    act = select_active_environments(train, 120, h, seed=2)
    k = sparse_kernels(train, act, h, kind="environments", frames_test=test)
    counts, species = composition_counts(train + test)
    est = SparseScalarRegressor(weights="free").fit(k["K_NM"], k["K_MM"], get_target(train, "U0"),
                                                    counts=counts[:40], species=species)
    pred = est.predict(k["K_TM"], counts=counts[40:], species=species)
    np.testing.assert_allclose([float(r[4]) for r in rows], pred, rtol=1e-8)
    mae = float(LAST_LINE.match(proc.stdout.strip().splitlines()[-1]).group(1))
    assert mae < 1.0  # eV


@pytest.mark.slow
def test_learning_curve_with_active_environments_keeps_the_csv_contract(tmp_path):
    out = tmp_path / "lc.csv"
    proc = run("learning-curve", "--data", QM9, "--target", "U0", "--sizes", "20,40", "--repeats", 1,
               "--test-size", 15, "--active-environments", 100, "--fps-pool", 300, "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "FPS among a pool of about 300 of the" in proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["model", "n_train", "repeat", "mae", "rmse"]
    assert [(r[0], int(r[1]), int(r[2])) for r in rows[1:]] == [("sparse-mixed", 20, 0), ("sparse-mixed", 40, 0)]
    assert all(0 < float(r[3]) <= float(r[4]) for r in rows[1:])
    assert proc.stderr.count("phase 2/3") == 1  # one kernel for both sizes
    assert "peak RSS" in proc.stderr


@pytest.mark.slow
def test_sparse_flags_refuse_bad_input_before_kernels(files, tmp_path):
    train, test = files / "train.extxyz", files / "test.extxyz"
    for args, words in (
        (("--active-environments", 100000), "training environments"),
        (("--active-environments", 50, "--memory-budget", 1e6), "GiB of memory"),
        (("--active-environments", 50, "--fps-pool", 10), "FPS pool (10 environments)"),
    ):
        proc = run("fit", "--train", train, "--test", test, "--target", "U0", *args, *SMALL)
        assert proc.returncode == 2
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and words in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and "phase 2/3" not in proc.stderr
