"""One place for each hyperparameter: the metadata of :class:`wkviz.Hypers` drives validation, the CLI flags, the
reproduce command and the app's widget bounds."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex

import pytest

from wkviz.cli import build_parser
from wkviz.cli.common import NOT_GIVEN, add_hyper_flags, hypers_from_args
from wkviz.cli.reproduce import cli_command, format_hyper_value
from wkviz.errors import WkvizError
from wkviz.hypers import HYPER_SPECS, HyperSpec, Hypers

FIELDS = [f.name for f in dataclasses.fields(Hypers)]
# DESIGN.md §3: the flag names are a contract
CONTRACT_FLAGS = ["--nu-max", "--lambda-max", "--cutoff", "--cutoff-width", "--density-width", "--density-scaling",
                  "--radial-scale", "--radial-exponent", "--species-coupling", "--hydrogen-weight",
                  "--hydrogen-center-weight", "--schedule", "--normalization", "--nu1-route"]


def _parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("sub")
    ap.add_argument("path", nargs="?")
    add_hyper_flags(ap)
    return ap


def _with(name, value):
    """Defaults with ``name`` set to ``value`` (the largest cutoff when probing cutoff_width's upper end)."""
    extra = {"cutoff": 15.0} if name == "cutoff_width" else {}
    return Hypers(**{**extra, name: value})


def test_every_field_has_complete_metadata():
    assert [s.name for s in HYPER_SPECS] == FIELDS
    assert [s.flag for s in HYPER_SPECS] == CONTRACT_FLAGS
    defaults = Hypers()
    for spec in HYPER_SPECS:
        assert isinstance(spec, HyperSpec) and Hypers.spec(spec.name) is spec
        assert spec.type in (int, float, str), spec.name
        assert spec.default == getattr(defaults, spec.name)
        assert spec.help and not spec.help.endswith("."), spec.name
        # a number has a range, a string a list of choices, never both
        assert (spec.bounds is None) == (spec.type is str) == (spec.choices is not None), spec.name
        if spec.allows_none:
            assert spec.type is float and spec.none_means
        if spec.bounds is not None:
            lo, hi = spec.bounds
            assert lo < hi and spec.check(spec.default if spec.default is not None else lo + (hi - lo) / 2) is not None
        assert spec.unit in ("", "Å")
    with pytest.raises(ValueError, match="unknown hyperparameter 'nu'; valid names: .*cutoff"):
        Hypers.spec("nu")


def test_parser_has_exactly_one_flag_per_field_with_its_default():
    ap = _parser()
    flags = [opt for action in ap._actions for opt in action.option_strings if opt not in ("-h", "--help")]
    assert flags == ["--preset"] + CONTRACT_FLAGS  # --preset: issue 15
    ns = ap.parse_args(["kernels"])
    helps = {a.dest: a.help for a in ap._actions}
    for spec in HYPER_SPECS:
        # "not given" until parsed into Hypers (so a preset can fill it); --help still shows the real default
        assert getattr(ns, spec.name) is NOT_GIVEN
        assert f"(default {format_hyper_value(spec.default)}" in helps[spec.name]
    assert hypers_from_args(ns) == Hypers()
    # optional numbers take "none"
    assert hypers_from_args(ap.parse_args(["kernels", "--radial-scale", "none"])).radial_scale is None
    with pytest.raises(WkvizError, match="cutoff must be between 0.5 and 15 Å, got 20"):
        hypers_from_args(ap.parse_args(["kernels", "--cutoff", "20"]))


def _changed(spec):
    """A valid value of ``spec`` different from its default, with more digits than %g keeps."""
    if spec.choices is not None:
        return next(c for c in spec.choices if c != spec.default)
    lo, hi = spec.bounds
    if spec.type is int:
        return spec.default + 1 if spec.default + 1 <= hi else spec.default - 1
    if spec.default is None:
        return lo + (hi - lo) / 7.0
    value = spec.default * 0.9 + 0.0123456789 if spec.default else 0.123456789
    assert spec.accepts(value), spec.name
    return value


def test_reproduce_command_parses_back_to_the_same_hypers():
    changed = {spec.name: _changed(spec) for spec in HYPER_SPECS}
    h = Hypers(**changed)
    assert all(getattr(h, name) != getattr(Hypers(), name) for name in FIELDS)
    parts = shlex.split(cli_command("kernels", h, "a.xyz"))
    assert parts[:5] == ["python", "-m", "wkviz", "kernels", "a.xyz"]
    assert hypers_from_args(_parser().parse_args(parts[3:])) == h
    # through the real command line as well
    assert hypers_from_args(build_parser().parse_args(parts[3:] + ["--out", "k.npz"])) == h
    # the defaults and switched-off options too, written in the short form
    off = Hypers(radial_scale=None)
    parts = shlex.split(cli_command("fit", off))
    assert parts[parts.index("--radial-scale") + 1] == "none" and parts[parts.index("--cutoff") + 1] == "5"
    assert hypers_from_args(_parser().parse_args(parts[3:])) == off


def _outside_and_inside(spec):
    """Pairs (just outside, just inside) of each end of ``spec.bounds``."""
    lo, hi = spec.bounds
    if spec.type is int:
        return [(lo - 1, lo), (hi + 1, hi)]
    low_in = math.nextafter(lo, math.inf) if spec.open_low else lo
    high_in = math.nextafter(hi, -math.inf) if spec.open_high else hi
    low_out = lo if spec.open_low else math.nextafter(lo, -math.inf)
    high_out = hi if spec.open_high else math.nextafter(hi, math.inf)
    return [(low_out, low_in), (high_out, high_in)]


@pytest.mark.parametrize("spec", [s for s in HYPER_SPECS if s.bounds is not None], ids=lambda s: s.name)
def test_bounds_in_the_metadata_are_the_bounds_validation_uses(spec):
    for outside, inside in _outside_and_inside(spec):
        assert getattr(_with(spec.name, inside), spec.name) == inside
        with pytest.raises(ValueError, match=f"^{spec.name} must be "):
            _with(spec.name, outside)
    with pytest.raises(ValueError, match=f"^{spec.name} must be "):
        _with(spec.name, math.nan)
    if spec.allows_none:
        assert getattr(_with(spec.name, None), spec.name) is None
    else:
        with pytest.raises(ValueError, match=f"^{spec.name} must be a"):
            _with(spec.name, None)


@pytest.mark.parametrize("spec", [s for s in HYPER_SPECS if s.choices is not None], ids=lambda s: s.name)
def test_choices_in_the_metadata_are_the_choices_validation_uses(spec):
    for choice in spec.choices:
        assert getattr(_with(spec.name, choice), spec.name) == choice
    with pytest.raises(ValueError, match=f"{spec.name} must be one of {', '.join(spec.choices)}, got 'nope'"):
        _with(spec.name, "nope")


def test_messages_keep_their_form_and_cross_field_checks_stay():
    with pytest.raises(ValueError, match=r"^cutoff must be between 0.5 and 15 Å, got 20"):
        Hypers(cutoff=20)
    with pytest.raises(ValueError, match=r"^species_coupling must be at least 0 and below 1, got 1.0$"):
        Hypers(species_coupling=1.0)
    with pytest.raises(ValueError, match=r"^density_scaling must be between 0.3 and 1000 Å \(or None for a constant "
                                         r"width\), got 0.1$"):
        Hypers(density_scaling=0.1)
    with pytest.raises(ValueError, match=r"^nu_max must be a whole number, got 2.5$"):
        Hypers(nu_max=2.5)
    with pytest.raises(ValueError, match=r"^radial_scale must be a number in Å or None, got 'far'$"):
        Hypers(radial_scale="far")
    with pytest.raises(ValueError, match=r"^cutoff_width must be above 0 and at most the cutoff \(3 Å\), got 4.0$"):
        Hypers(cutoff=3.0, cutoff_width=4.0)


def test_widget_bounds_derive_from_the_metadata():
    """The app's inputs (``WIDGET_BOUNDS`` of the pages) offer only values :class:`Hypers` accepts."""
    for spec in HYPER_SPECS:
        if spec.bounds is None:
            assert spec.widget_bounds is None
            continue
        lo, hi = spec.widget_bounds
        assert lo < hi
        for value in (lo, hi):
            assert getattr(_with(spec.name, spec.type(value)), spec.name) == value, spec.name
        assert set(spec.widget) <= {"label", "help", "step", "min", "max", "toggle", "value_when_off"}
        if spec.allows_none and spec.widget:
            assert "toggle" in spec.widget and spec.accepts(spec.widget["value_when_off"])
    # the exclusive end of the coupling stays out of reach of its input
    assert Hypers.spec("species_coupling").widget_bounds[1] < 1.0


def test_every_form_field_has_its_tooltip_in_the_metadata():
    """The Kernels page reads label and tooltip from the spec, so no hyperparameter is described in the page."""
    import pathlib

    page = (pathlib.Path(__file__).resolve().parents[1] / "pages" / "2_Kernels.py").read_text()
    for spec in HYPER_SPECS:
        if spec.widget and "label" in spec.widget and f'_hyper_input("{spec.name}")' in page:
            assert spec.widget.get("help", spec.help).strip(), spec.name
    assert "_hyper_input(\"nu_max\", help=" not in page
