"""Named hyperparameter presets, and the one chosen from what the data holds.

A preset is a starting point for :class:`~wkviz.hypers.Hypers`: a name, a label, a one-line reason, the field
values that differ from the ``Hypers`` defaults and where those numbers come from. Explicit values always win over
a preset (:meth:`Preset.hypers`), and a preset wins over the defaults. The CLI (``--preset NAME``), the app's
Kernels form and the reproduce commands all read :data:`PRESETS`; :func:`choose_preset` picks one from the
structures when the user did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from .errors import InputError
from .hypers import Hypers

__all__ = ["DEFAULT_PRESET", "METALS", "ORGANIC", "PRESETS", "PRESET_NAMES", "Preset", "choose_preset", "closest_preset",
           "get_preset", "preset_changes", "preset_hypers"]


@dataclass(frozen=True)
class Preset:
    """A named set of hyperparameters.

    Attributes
    ----------
    name : str
        What ``--preset`` takes (``"qm9"``, ``"paper"``, ``"metals"``).
    label : str
        What the app shows (``"QM9 organic molecules"``).
    why : str
        One line: what the preset is for.
    values : mapping
        The :class:`~wkviz.hypers.Hypers` fields that differ from the defaults (the only place these numbers
        live).
    source : str
        Where the numbers come from (a BENCHMARKS.md section, the paper).
    """

    name: str
    label: str
    why: str
    values: Mapping = field(default_factory=dict)
    source: str = ""

    def hypers(self, **explicit) -> Hypers:
        """The preset's :class:`~wkviz.hypers.Hypers`, with ``explicit`` fields winning over the preset's values.

        Raises
        ------
        ValueError
            An invalid value (from :class:`~wkviz.hypers.Hypers`).
        """
        return Hypers(**{**self.values, **explicit})


_PRESET_LIST = (
    Preset(
        "qm9", "QM9 organic molecules",
        "small organic molecules (H, C, N, O, F): a radial weight that fades beyond the bonded shell, coupled heavy "
        "elements, light hydrogens",
        {},
        "the Hypers defaults, chosen by CV and paired comparisons on QM9 U0 (BENCHMARKS.md §6)"),
    Preset(
        "paper", "paper (Bigi et al.)",
        "the published Wigner-kernel density: no radial weight, every element apart, every atom equal; a neutral "
        "starting point for data unlike QM9 or metals",
        {"density_width": 0.03, "density_scaling": 1.0, "radial_scale": None, "species_coupling": 0.0,
         "hydrogen_weight": 1.0, "hydrogen_center_weight": 1.0},
        "Bigi, Pozdnyakov, Ceriotti, JCP 161, 044116 (2024): σ(r) = 0.03 Å·e^{r/1 Å} with unit-integral Gaussians "
        "(MATH.md §13, BENCHMARKS.md §6), plain per-element densities and sums (DESIGN.md §2)"),
    Preset(
        "metals", "metals and bulk",
        "metal clusters and periodic cells: nearest neighbours at 2.5–3 Å keep most of their weight (r₀ = 1.5 Å "
        "would leave gold's at 2.88 Å with 2 %) and widths that grow fast with distance smooth the far shells",
        {"cutoff": 4.5, "density_width": 0.1, "density_scaling": 1.0, "radial_scale": 3.5,
         "species_coupling": 0.0, "hydrogen_weight": 1.0, "hydrogen_center_weight": 1.0},
        "the lowest 5-fold CV MAE of the mixed model among 39 candidates on 120 bundled EMT gold structures "
        "(clusters and cells); on 200 other structures 40.9 ± 2.7 meV against 88.7 ± 4.4 for the QM9 preset and "
        "61.1 ± 5.2 for the paper's (BENCHMARKS.md, 'Presets'; benchmarks/bench_presets.py). Element coupling and "
        "hydrogen weights stay at the paper's values, which gold data cannot choose"),
)

#: Every preset by name, in the order the app lists them.
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESET_LIST})
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
#: The preset whose values are the Hypers defaults.
DEFAULT_PRESET = "qm9"

#: Elements the QM9 preset was tuned on.
ORGANIC = frozenset({1, 6, 7, 8, 9})
#: Metallic elements: alkali and alkaline-earth metals, Al, the transition metals, Ga–Sn, Cs–Bi with the
#: lanthanides, and everything from Fr on.
METALS = frozenset({3, 4, 11, 12, 13, *range(19, 32), *range(37, 51), *range(55, 84), *range(87, 119)})


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Raises
    ------
    InputError
        An unknown name, with the valid ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"no preset {name!r}; choose one of {', '.join(PRESET_NAMES)}") from None


def preset_hypers(name: str, **explicit) -> Hypers:
    """``get_preset(name).hypers(**explicit)``: the preset's hyperparameters with ``explicit`` ones winning."""
    return get_preset(name).hypers(**explicit)


def preset_changes(hypers: Hypers, name: str) -> list[str]:
    """The fields of ``hypers`` that differ from preset ``name``'s values (the user's edits), in field order."""
    ref = get_preset(name).hypers()
    return [spec for spec in hypers.to_dict() if getattr(hypers, spec) != getattr(ref, spec)]


def closest_preset(hypers: Hypers) -> str:
    """The preset ``hypers`` differs from in the fewest fields (the first in :data:`PRESET_NAMES` on a tie), for
    a reproduce command that did not record which preset it started from."""
    return min(PRESET_NAMES, key=lambda name: len(preset_changes(hypers, name)))


def _symbols(numbers) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[int(z)] for z in sorted(numbers))


def choose_preset(frames) -> tuple[str, str]:
    """The preset that fits the structures, and why, in one phrase.

    The rules, in order:

    1. **metals** when any structure is a periodic cell or every element is a metal. Both put the first
       neighbours at 2.3–3 Å with a dozen of them in the cutoff, where the QM9 radial weight (r₀ = 1.5 Å) would
       leave almost nothing; this is the data the metals preset was chosen on (gold clusters and cells).
    2. **qm9** when every element is one of H, C, N, O, F (molecules, no cell): the elements and bonding the QM9
       preset was tuned on.
    3. **paper** otherwise (other covalent elements, organometallics, mixed data): its plain density, with no
       weights or coupling tuned on any data set, is the assumption-free choice.

    Parameters
    ----------
    frames : sequence of ase.Atoms

    Returns
    -------
    name : str
        A key of :data:`PRESETS`.
    reason : str
        E.g. ``"every element is a metal (Au); 200 of 500 structures are periodic cells"``.

    Raises
    ------
    InputError
        When there are no structures.
    """
    frames = list(frames)
    if not frames:
        raise InputError("no structures to choose a preset from; give at least one structure")
    numbers = set(np.unique(np.concatenate([np.asarray(a.numbers) for a in frames])).tolist())
    periodic = sum(bool(np.any(a.pbc)) for a in frames)
    elements = _symbols(numbers)
    cells = f"{periodic} of {len(frames)} structures are periodic cells"
    if numbers <= METALS:
        return "metals", f"every element is a metal ({elements})" + (f"; {cells}" if periodic else "")
    if periodic:
        return "metals", f"{cells} (elements {elements})"
    if numbers <= ORGANIC:
        return "qm9", f"molecules of {elements} only, the elements the QM9 preset was tuned on"
    return "paper", (f"elements {elements} are neither all organic (H, C, N, O, F) nor all metals, and no "
                     "structure is periodic: the plain density of the paper is the neutral choice")
