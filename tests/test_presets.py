"""Hyperparameter presets (issue 15, part 5): what each holds, which one the data calls for, and how the CLI, the
reproduce command and the app resolve them (explicit values > preset > Hypers defaults)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from wkviz import Hypers
from wkviz.cli import build_parser, main
from wkviz.cli.common import add_hyper_flags, hypers_from_args, preset_from_args
from wkviz.cli.reproduce import cli_command
from wkviz.data import load_sample
from wkviz.errors import InputError, WkvizError
from wkviz.hypers import radial_weight
from wkviz.presets import (DEFAULT_PRESET, PRESET_NAMES, PRESETS, choose_preset, closest_preset, get_preset,
                           preset_changes)

ROOT = Path(__file__).resolve().parents[1]
AU_NN = 4.08 / np.sqrt(2)  # nearest-neighbour distance of fcc gold, 2.88 Å


@pytest.fixture(scope="module")
def gold_frames():
    return load_sample("gold")


@pytest.fixture(scope="module")
def gold(gold_frames):
    frames = gold_frames
    return ([a for a in frames if a.info["config_type"] == "cluster"],
            [a for a in frames if a.info["config_type"] == "bulk"])


def _parser():
    ap = argparse.ArgumentParser()
    add_hyper_flags(ap)
    return ap


# ---- the presets ----------------------------------------------------------------------------------------------

def test_every_preset_builds_valid_hypers_and_describes_itself():
    assert PRESET_NAMES == ("qm9", "paper", "metals") and DEFAULT_PRESET == "qm9"
    fields = {f.name for f in dataclasses.fields(Hypers)}
    for name, p in PRESETS.items():
        assert p.name == name and p.label and p.why and p.source
        assert set(p.values) <= fields, name
        h = p.hypers()
        assert isinstance(h, Hypers) and Hypers.from_json(h.to_json()) == h
        # only the preset's own fields move away from the defaults
        assert set(preset_changes(Hypers(), name)) <= set(p.values)
        assert preset_changes(h, name) == [] and closest_preset(h) == name
    assert get_preset("qm9").hypers() == Hypers()
    with pytest.raises(InputError, match="no preset 'gold'; choose one of qm9, paper, metals"):
        get_preset("gold")


def test_paper_preset_is_the_plain_density_of_the_paper():
    h = get_preset("paper").hypers()
    assert h.radial_scale is None and h.species_coupling == 0 and h.hydrogen_weight == h.hydrogen_center_weight == 1
    assert (h.density_width, h.density_scaling) == (0.03, 1.0)  # σ(r) = 0.03 Å·e^{r/1 Å}


def test_metals_preset_keeps_the_first_gold_shell_that_the_qm9_weight_drops():
    qm9, metals = get_preset("qm9").hypers(), get_preset("metals").hypers()
    assert radial_weight(AU_NN, qm9.radial_scale, qm9.radial_exponent) < 0.03  # 2 % of its weight
    assert metals.radial_scale is None or radial_weight(AU_NN, metals.radial_scale, metals.radial_exponent) > 0.5
    # the second shell (4.08 Å) lies inside the cutoff
    assert metals.cutoff > 4.08
    # the explicit value wins over the preset's
    assert get_preset("metals").hypers(cutoff=6.0).cutoff == 6.0


def test_metals_preset_is_a_candidate_the_gold_benchmark_measured(gold_frames):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_presets

    chosen = get_preset("metals").hypers()
    measured = [Hypers(**c["values"]) for c in bench_presets.CANDIDATES + bench_presets.ROUND2]
    assert chosen in measured
    # the benchmark's selection and held-out sets never share a structure
    select, heldout = bench_presets.sets(gold_frames)
    assert (select.size, heldout.size) == (120, 200) and not set(select) & set(heldout)


# ---- chosen from the data --------------------------------------------------------------------------------------

def test_choose_preset_from_elements_and_cells(gold):
    clusters, cells = gold
    assert choose_preset(load_sample("qm9")[:200])[0] == "qm9"
    name, reason = choose_preset(clusters)
    assert name == "metals" and "Au" in reason and "metal" in reason
    name, reason = choose_preset(cells)
    assert name == "metals" and f"{len(cells)} of {len(cells)} structures are periodic" in reason
    assert choose_preset(clusters + cells)[0] == "metals"
    # a periodic cell of a non-metal is bulk too; a molecule with a metal or with S is neither QM9 nor a metal
    assert choose_preset([bulk("Si", "diamond", a=5.43)])[0] == "metals"
    assert choose_preset([molecule("H2O"), molecule("CH4")])[0] == "qm9"
    fe_co = Atoms("FeCO", positions=[[0, 0, 0], [1.8, 0, 0], [2.95, 0, 0]])
    assert choose_preset([fe_co])[0] == "paper"
    assert choose_preset([molecule("CH3SH")])[0] == "paper"
    with pytest.raises(InputError, match="no structures"):
        choose_preset([])


# ---- the command line ----------------------------------------------------------------------------------------

def test_explicit_flags_win_over_the_preset_and_the_preset_over_defaults():
    ap = _parser()
    assert hypers_from_args(ap.parse_args([])) == Hypers()  # no frames, no --preset: the defaults
    metals = get_preset("metals").hypers()
    assert hypers_from_args(ap.parse_args(["--preset", "metals"])) == metals
    h = hypers_from_args(ap.parse_args(["--preset", "metals", "--cutoff", "6", "--radial-scale", "none"]))
    assert h == metals.replace(cutoff=6.0, radial_scale=None)
    # an explicit flag that equals the default still wins over the preset
    assert hypers_from_args(ap.parse_args(["--preset", "paper", "--species-coupling", "0.95"])).species_coupling == 0.95
    # a flag inconsistent with the preset is refused in one sentence
    with pytest.raises(WkvizError, match=r"cutoff_width must be .* at most the cutoff \(4.5 Å\), got 4.8"):
        hypers_from_args(ap.parse_args(["--preset", "metals", "--cutoff-width", "4.8"]))


def test_without_preset_the_data_chooses_and_preset_flag_overrides_it(gold):
    clusters, _ = gold
    ap = _parser()
    args = ap.parse_args(["--nu-max", "3"])
    assert preset_from_args(args, clusters)[0] == "metals"
    assert hypers_from_args(args, clusters) == get_preset("metals").hypers(nu_max=3)
    args = ap.parse_args(["--preset", "qm9"])
    assert preset_from_args(args, clusters) == ("qm9", "given with --preset")
    assert hypers_from_args(args, clusters) == Hypers()
    with pytest.raises(SystemExit):
        ap.parse_args(["--preset", "gold"])


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_reproduce_command_names_the_preset_and_round_trips(name):
    edited = get_preset(name).hypers(nu_max=3, cutoff=4.25)
    for h, preset in ((get_preset(name).hypers(), None), (edited, name)):
        parts = shlex.split(cli_command("fit", h, preset=preset, train="a.xyz", test="b.xyz", target="energy"))
        assert parts[parts.index("--preset") + 1] == name
        assert hypers_from_args(build_parser().parse_args(parts[3:])) == h
        # every hyperparameter is written out, so the command gives the same Hypers under any --preset
        other = next(n for n in PRESET_NAMES if n != name)
        parts[parts.index("--preset") + 1] = other
        assert hypers_from_args(build_parser().parse_args(parts[3:])) == h


def _gold_files(tmp_path, clusters, n_train=12, n_test=6):
    from ase.io import write

    small = [a.copy() for a in sorted(clusters, key=len)[: n_train + n_test]]  # copies: info only, no calculator
    train, test = tmp_path / "train.extxyz", tmp_path / "test.extxyz"
    write(train, small[:n_train])
    write(test, small[n_train:])
    return train, test


def test_kernels_without_flags_on_gold_says_metals(gold, tmp_path, capsys):
    from ase.io import write

    clusters, cells = gold
    path = tmp_path / "au.extxyz"
    write(path, [min(clusters, key=len).copy(), min(cells, key=len).copy()])
    assert main(["kernels", str(path), "--nu-max", "2", "--lambda-max", "1", "--out", str(tmp_path / "K.npz")]) == 0
    err = capsys.readouterr().err
    assert "preset: metals — metals and bulk: every element is a metal (Au); 1 of 2 structures" in err
    assert "explicit flags win: --lambda-max --nu-max" in err
    saved = Hypers.from_json(str(np.load(tmp_path / "K.npz")["hypers"]))
    assert saved == get_preset("metals").hypers(nu_max=2, lambda_max=1)


def test_bad_input_on_gold_gives_only_the_error_line(gold, tmp_path, capsys):
    train, test = _gold_files(tmp_path, gold[0])
    assert main(["fit", "--train", str(train), "--test", str(test), "--target", "no_such_key"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


@pytest.mark.slow
def test_fit_without_flags_on_gold_clusters_picks_the_metals_preset(gold, tmp_path):
    train, test = _gold_files(tmp_path, gold[0])
    proc = subprocess.run([sys.executable, "-m", "wkviz", "fit", "--train", str(train), "--test", str(test),
                           "--target", "energy"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("preset:"))
    assert line.startswith("preset: metals — metals and bulk: every element is a metal (Au)")
    assert "Override with --preset qm9|paper" in line
    assert proc.stdout.strip().splitlines()[-1].startswith("MAE=")


# ---- the app ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_app_sidebar_shows_the_preset_and_gold_switches_the_form_to_metals():
    sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Preset** · QM9 organic molecules (chosen from the data: molecules of H, C, N, O, F" in side
    at.switch_page("pages/1_Data.py").run()
    at.selectbox(key="data.sample").set_value("gold").run()
    assert not at.exception
    assert at.session_state["wk.hypers"] == get_preset("metals").hypers()
    assert "**Preset** · metals and bulk (chosen from the data: every element is a metal (Au)" in " ".join(
        m.value for m in at.sidebar.markdown)
    at.switch_page("pages/2_Kernels.py").run()
    assert at.selectbox(key="kernels.preset").value == "metals"
    assert at.number_input(key="kernels.cutoff").value == 4.5
    # another preset fills the form; a field edited afterwards keeps the edit when applied
    at.selectbox(key="kernels.preset").set_value("paper").run()
    assert at.checkbox(key="kernels.radial_on").value is False
    at.number_input(key="kernels.cutoff").set_value(6.0)
    at.button(key="kernels.apply.btn").click().run()
    assert not at.exception
    assert at.session_state["wk.hypers"] == get_preset("paper").hypers(cutoff=6.0)
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Preset** · paper (Bigi et al.) (chosen on the Kernels page) · edited: cutoff" in side
    # fewer of the same structures call for the same preset: the user's choice and edits stay
    at.switch_page("pages/1_Data.py").run()
    at.number_input(key="data.n").set_value(100).run()
    assert at.session_state["wk.dataset"].n == 100
    assert at.session_state["wk.hypers"] == get_preset("paper").hypers(cutoff=6.0)
    assert at.session_state["kernels.preset"] == "paper"
