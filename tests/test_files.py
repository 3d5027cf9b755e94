"""Atomic output files (wkviz.files) and file names the readers refuse (issue 19).

The promise under test: whatever happens during a write — an exception, Ctrl-C, a full disk, ``kill -9`` — the
output path holds either its previous content or the complete new content, never a truncated file.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from wkviz.errors import InputError
from wkviz.files import atomic_write, check_output_path, write_atomic_bytes, write_atomic_text

ROOT = Path(__file__).resolve().parent.parent


def _debris(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


# ---- atomic_write ------------------------------------------------------------------------------------------------

def test_a_failure_inside_the_write_leaves_the_previous_file_and_no_debris(tmp_path):
    out = tmp_path / "K.npz"
    write_atomic_bytes(out, b"previous good file")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(out) as fh:
            fh.write(b"x" * 100_000)
            raise RuntimeError("boom")
    assert out.read_bytes() == b"previous good file"
    assert _debris(tmp_path, "K.npz") == []


def test_ctrl_c_inside_the_write_leaves_the_previous_file(tmp_path):
    out = tmp_path / "lc.csv"
    write_atomic_text(out, "model,n_train\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(out, "w") as fh:
            fh.write("half a line")
            raise KeyboardInterrupt
    assert out.read_text() == "model,n_train\n"
    assert _debris(tmp_path, "lc.csv") == []


def test_a_full_disk_becomes_one_sentence_and_the_previous_file_stays(tmp_path):
    out = tmp_path / "pred.csv"
    write_atomic_text(out, "old\n")
    with pytest.raises(InputError) as info:
        with atomic_write(out, "w") as fh:
            fh.write("new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(info.value)
    assert message.startswith(f"cannot write {out}") and "no space is left" in message and "\n" not in message
    assert out.read_text() == "old\n"
    assert _debris(tmp_path, "pred.csv") == []


def test_a_new_file_gets_the_usual_permissions_and_a_replaced_one_keeps_its_own(tmp_path):
    new = tmp_path / "new.csv"
    write_atomic_text(new, "a\n")
    umask = os.umask(0)
    os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    kept = tmp_path / "kept.csv"
    kept.write_text("a\n")
    kept.chmod(0o640)
    write_atomic_text(kept, "b\n")
    assert kept.read_text() == "b\n" and kept.stat().st_mode & 0o777 == 0o640


def test_a_symlinked_output_replaces_the_file_it_points_to(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    write_atomic_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_to_npz_writes_exactly_the_name_given_and_still_takes_file_objects(tmp_path):
    import io

    from wkviz import Hypers
    from wkviz.engine.kernels import KernelResult

    res = KernelResult(K=np.arange(12.0).reshape(3, 2, 2), species=np.array([1, 8]), hypers=Hypers(nu_max=2),
                       n_atoms_A=np.array([3, 3]), n_atoms_B=np.array([3, 3]))
    res.to_npz(tmp_path / "K")  # np.savez_compressed alone would write K.npz
    assert _debris(tmp_path, "") == ["K"]
    assert np.array_equal(KernelResult.from_npz(tmp_path / "K").K, res.K)
    buf = io.BytesIO()  # the Kernels page's download button
    res.to_npz(buf)
    buf.seek(0)
    assert np.array_equal(KernelResult.from_npz(buf).K, res.K)


def test_learning_curve_csv_is_written_atomically(tmp_path):
    from wkviz.evaluation.learning import LearningCurve

    curve = LearningCurve(rows=[{"model": "mixed", "n_train": 10, "repeat": 0, "mae": 0.5, "rmse": 0.7}],
                          models=["mixed"], sizes=[10])
    out = tmp_path / "lc.csv"
    curve.to_csv(out)
    assert LearningCurve.from_csv(out).rows == curve.rows
    with pytest.raises(InputError, match="it is a folder"):
        curve.to_csv(tmp_path)


_KILLED_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from wkviz import Hypers
    from wkviz.engine.kernels import KernelResult

    n = int(sys.argv[2])
    K = np.random.default_rng(1).standard_normal((3, n, n))  # incompressible: the write takes seconds
    res = KernelResult(K=K, species=np.array([1]), hypers=Hypers(nu_max=2), n_atoms_A=np.ones(n, int),
                       n_atoms_B=np.ones(n, int))
    print("writing", flush=True)
    res.to_npz(sys.argv[1])
    print("done", flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_a_big_npz_write_leaves_the_previous_good_file(tmp_path):
    """A real process writing a 150 MB kernel file is SIGKILLed once its temporary file is growing."""
    from wkviz import Hypers
    from wkviz.engine.kernels import KernelResult

    out = tmp_path / "K.npz"
    good = KernelResult(K=np.ones((3, 4, 4)), species=np.array([1]), hypers=Hypers(nu_max=2),
                        n_atoms_A=np.ones(4, int), n_atoms_B=np.ones(4, int))
    good.to_npz(out)
    before = out.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out), "2500"], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 120
        tmp = []
        while time.monotonic() < deadline:
            tmp = [p for p in tmp_path.glob(".K.npz.*.tmp") if p.stat().st_size > 1_000_000]
            if tmp or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert tmp, "the writer never got to its temporary file"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == before, "the previous good file was touched"
    assert np.array_equal(KernelResult.from_npz(out).K, good.K)
    # what kill -9 leaves is a hidden temporary file beside it, never a truncated K.npz
    assert all(p.name.startswith(".K.npz.") and p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != out)


# ---- output paths checked up front ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("folder", "is a folder"),
    ("missing/K.npz", "does not exist"),
    ("a\x00b.npz", "contains a NUL byte"),
    ("z" * 256, "255-byte limit"),
    ("", "output path is empty"),
])
def test_check_output_path_refuses_with_one_sentence(tmp_path, name, words):
    (tmp_path / "folder").mkdir()
    path = os.path.join(tmp_path, name) if name else name
    with pytest.raises(InputError) as info:
        check_output_path(path, "--out", "K.npz")
    assert words in str(info.value) and "\n" not in str(info.value)
    assert _debris(tmp_path, "folder") == [], "the writability probe leaves nothing behind"


def test_check_output_path_accepts_a_new_and_an_existing_file(tmp_path):
    assert check_output_path(tmp_path / "new.npz") == tmp_path / "new.npz"
    (tmp_path / "old.npz").write_bytes(b"x")
    assert check_output_path(tmp_path / "old.npz") == tmp_path / "old.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npz"]


# ---- names the readers refuse ----------------------------------------------------------------------------------------

WATER = b"3\nenergy=-1.0\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n"


@pytest.mark.parametrize("filename, words", [
    ("w" * 300 + ".xyz", "at most 255 bytes"),
    ("é" * 130 + ".xyz", "at most 255 bytes"),  # 264 bytes in UTF-8, 134 characters
    ("water\x00.xyz", "contains a NUL byte"),
])
def test_an_upload_name_no_file_system_accepts_is_one_sentence(filename, words):
    from wkviz.data import read_structures

    with pytest.raises(InputError) as info:
        read_structures(WATER, filename=filename)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 300, "a 300-byte name must not bury the sentence"


def test_an_upload_name_of_255_bytes_is_read():
    from wkviz.data import read_structures

    frames = read_structures(WATER, filename="w" * 251 + ".xyz")
    assert len(frames) == 1 and frames[0].info["energy"] == -1.0


@pytest.mark.parametrize("path, words", [
    ("water\x00.xyz", "contains a NUL byte"),
    ("v" * 300 + ".xyz", "at most 255 bytes"),
    ("/dev/zero", "not a regular file"),
])
def test_a_path_no_file_system_accepts_is_one_sentence(path, words):
    from wkviz.data import read_structures

    with pytest.raises(InputError, match=words):
        read_structures(path)


def test_main_turns_an_unexpected_os_error_into_one_line(monkeypatch, capsys):
    from wkviz import cli
    from wkviz.cli import kernels

    def fail(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/K.npz")

    monkeypatch.setattr(kernels, "run_kernels", fail)
    assert cli.main(["kernels", "x.xyz", "--out", "K.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: cannot access /data/K.npz: permission denied; check the permissions of the file and its "
                   "directory"]
