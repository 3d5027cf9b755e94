"""Fault injection on the command line (issue 19): every bad request ends with exactly one ``error:`` line.

Each case is a real ``python -m wkviz`` process. It must exit with status 2, print exactly one line starting with
``error:`` on stderr and no traceback, name what is wrong, and leave no output behind. Most cases are refused
before any kernel is computed (output paths, flag combinations, bad numbers), which the tests check too: a
refusal that comes after minutes of work is a defect.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SMALL = ["--nu-max", "2", "--lambda-max", "2"]


def run(*args, cwd, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([PYTHON, "-m", "wkviz", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def one_error(proc) -> str:
    """The single ``error:`` line of a refused run (and nothing that looks like a traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: "), proc.stderr
    return errors[0]


def assert_nothing_computed(proc):
    """Refused up front: no progress line, no estimate, i.e. no kernel was started."""
    assert "%" not in proc.stderr and "about" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    frames = [molecule("H2O"), molecule("CH4"), molecule("NH3"), molecule("H2O"), molecule("CH4")]
    for i, a in enumerate(frames):
        a.positions += 0.01 * i
        a.info["energy"] = -float(i)
        a.info["dipole"] = np.array([0.1 * i, 0.0, 0.2])
    ase.io.write(d / "small.extxyz", frames)
    (d / "folder").mkdir()
    (d / "empty.xyz").write_bytes(b"")
    (d / "broken.xyz.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is not deflate")
    return d


# ---- outputs -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ("kernels", "small.extxyz", *SMALL),
    ("fit", "--train", "small.extxyz", "--test", "small.extxyz", "--target", "energy", *SMALL),
    ("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes", "2", *SMALL),
], ids=["kernels", "fit", "learning-curve"])
def test_an_output_that_is_a_folder_is_refused_up_front(work, command):
    proc = run(*command, "--out", "folder", cwd=work)
    line = one_error(proc)
    assert "--out folder is a folder" in line and "give a file name inside it" in line
    assert_nothing_computed(proc)
    assert list((work / "folder").iterdir()) == []
    assert not list(work.glob("folder.*")), "np.savez used to write folder.npz and say it wrote 'folder'"


@pytest.mark.parametrize("out, words", [
    ("no_such_dir/K.npz", "does not exist"),
    ("x" * 300 + ".npz", "255-byte limit"),
    ("/dev/null", "not a regular file"),
    ("small.extxyz", "also the input file"),
], ids=["missing-folder", "long-name", "device", "the-input"])
def test_an_output_that_cannot_be_written_is_refused_up_front(work, out, words):
    before = (work / "small.extxyz").read_bytes()
    proc = run("kernels", "small.extxyz", "--out", out, *SMALL, cwd=work)
    assert words in one_error(proc)
    assert_nothing_computed(proc)
    assert (work / "small.extxyz").read_bytes() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, a folder no one can write to")
def test_an_output_folder_nobody_can_write_is_refused_even_for_root(work):
    # /proc refuses new files even to root, whom permission bits do not stop (the probe creates a real file)
    proc = run("kernels", "small.extxyz", "--out", "/proc/K.npz", *SMALL, cwd=work)
    assert "cannot create files in /proc" in one_error(proc)
    assert_nothing_computed(proc)


@pytest.mark.slow
def test_kernels_writes_exactly_the_name_asked_for_and_replaces_it_whole(work, tmp_path):
    out = tmp_path / "K"  # no .npz: np.savez alone would write K.npz
    out.write_bytes(b"previous content")
    proc = run("kernels", "small.extxyz", "--out", out, *SMALL, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "K.npz").exists()
    with np.load(out, allow_pickle=False) as data:
        assert data["K"].shape == (3, 5, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["K"], "no temporary file is left behind"


# ---- flags ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rank, lam", [(2, 1), (1, 0), (2, 0)])
def test_a_tensor_rank_above_lambda_max_names_both_flags(work, rank, lam):
    proc = run("kernels", "small.extxyz", "--out", "K.npz", "--tensor-rank", rank, "--lambda-max", lam, cwd=work)
    line = one_error(proc)
    assert f"--tensor-rank {rank}" in line and f"--lambda-max {rank} or more" in line
    assert f"got --lambda-max {lam}" in line
    assert_nothing_computed(proc)


def test_a_vector_target_with_lambda_max_0_names_the_target_and_the_flag(work):
    proc = run("fit", "--train", "small.extxyz", "--test", "small.extxyz", "--target", "dipole", "--lambda-max", "0",
               cwd=work)
    line = one_error(proc)
    assert "target 'dipole' is a 3-vector" in line and "--lambda-max 1 or more" in line
    assert_nothing_computed(proc)


@pytest.mark.parametrize("command, words", [
    (("kernels", "small.extxyz", "--out", "K.npz", "--memory-budget", "nan"), "--memory-budget must be a positive"),
    (("kernels", "small.extxyz", "--out", "K.npz", "--memory-budget", "-1"), "--memory-budget must be a positive"),
    (("fit", "--train", "small.extxyz", "--test", "small.extxyz", "--target", "energy", "--memory-budget", "0"),
     "--memory-budget must be a positive"),
    (("fit", "--train", "small.extxyz", "--test", "small.extxyz", "--target", "energy", "--seed", "-1"),
     "--seed must be a non-negative integer"),
    (("fit", "--train", "small.extxyz", "--test", "small.extxyz", "--target", "no_such_key"),
     "target 'no_such_key' not found"),
    (("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes", "2", "--out", "lc.csv",
      "--test-size", "0"), "--test-size must be at least 1"),
    (("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes", "2", "--out", "lc.csv",
      "--test-size", "-3"), "--test-size must be at least 1"),
    (("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes", "2", "--out", "lc.csv",
      "--models", ",,"), "--models names no model"),
    (("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes", "2", "--out", "lc.csv",
      "--repeats", "100000000000"), "--repeats must be between 1 and 1,000"),
    (("learning-curve", "--data", "small.extxyz", "--target", "energy", "--sizes=-5,2", "--out", "lc.csv"),
     "--sizes must be integers ≥ 2"),
], ids=["budget-nan", "budget-negative", "budget-zero", "seed-negative", "unknown-target", "test-size-0",
        "test-size-negative", "no-models", "absurd-repeats", "negative-size"])
def test_bad_numbers_and_names_give_one_line(work, command, words):
    proc = run(*command, *SMALL, cwd=work, timeout=60)
    assert words in one_error(proc)
    assert_nothing_computed(proc)
    assert not (work / "lc.csv").exists() and not (work / "K.npz").exists()


# ---- inputs --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, words", [
    ("folder", "is a directory"),
    ("empty.xyz", "is empty"),
    ("broken.xyz.gz", "is not a valid gzip file"),
    ("missing.xyz", "does not exist"),
    ("y" * 300 + ".xyz", "at most 255 bytes"),
    ("/dev/zero", "not a regular file"),
    ("small.extxyz/", "ends with a slash but is a file"),
], ids=["directory", "empty", "bad-gzip", "missing", "long-name", "endless-device", "file-with-slash"])
def test_unusable_structure_files_give_one_line(work, source, words):
    proc = run("kernels", source, "--out", "K.npz", *SMALL, cwd=work, timeout=60)
    assert words in one_error(proc)
    assert not (work / "K.npz").exists()


def test_a_fifo_as_input_is_refused_instead_of_blocking(work):
    fifo = work / "pipe.xyz"
    if not fifo.exists():
        os.mkfifo(fifo)
    proc = run("kernels", fifo.name, "--out", "K.npz", *SMALL, cwd=work, timeout=60)
    assert "not a regular file" in one_error(proc)
