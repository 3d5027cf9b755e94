"""Hyperparameters of a Wigner-kernel computation: one frozen, hashable dataclass.

Names follow the paper and ``DESIGN.md`` §2: ``nu_max`` (body order), ``lambda_max`` (angular truncation),
lengths in Å.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

SCHEDULES = ("reduced", "full")
NORMALIZATIONS = ("exact", "reference")
NU1_ROUTES = ("basis", "exact")


#: Fields added after kernel files were first written, with the value that reproduces those older kernels.
_ABSENT_MEANS_OFF = {"radial_scale": None, "species_coupling": 0.0, "hydrogen_weight": 1.0,
                     "hydrogen_center_weight": 1.0}


@dataclass(frozen=True)
class HyperSpec:
    """Everything about one hyperparameter except its value: the one place the CLI flags, the reproduce command,
    the app's widgets and the validation in :class:`Hypers` read it from.

    Built from the metadata of each field of :class:`Hypers` (see :data:`HYPER_SPECS`).

    Attributes
    ----------
    name : str
        The field name, e.g. ``"cutoff_width"``.
    flag : str
        The command-line flag, ``--`` plus the name with dashes (``"--cutoff-width"``).
    type : {int, float, str}
    default : int, float, str or None
    unit : str
        ``"Å"`` for lengths, ``""`` for dimensionless numbers.
    bounds : (float, float) or None
        Valid range of a number; ``open_low`` / ``open_high`` make an end exclusive.
    open_low, open_high : bool
    choices : tuple of str or None
        Valid values of a string.
    none_means : str or None
        What ``None`` means (``"a constant width"``) when the field allows None; None when it does not.
    at_most : str or None
        Name of an earlier field whose value is also an upper bound (``cutoff_width`` ≤ ``cutoff``).
    help : str
        One line for ``--help`` and the app's tooltips.
    widget : mapping
        Hints for the app's form: ``label``, ``help`` (the tooltip, in plainer words than :attr:`help`), ``step``, ``min``/``max`` where the form offers less than the valid
        range (bounds the app's cost, or stays short of an exclusive end), ``toggle`` (session key of the
        checkbox that switches an optional value on) and ``value_when_off`` (what the number input shows while
        it is off). Empty when the app has no widget for the field.
    """

    name: str
    type: type
    default: Any = None
    unit: str = ""
    bounds: tuple | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | None = None
    none_means: str | None = None
    at_most: str | None = None
    help: str = ""
    # hints, not identity: left out of == and hash so a spec stays hashable
    widget: Mapping = dataclasses.field(default_factory=dict, compare=False)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def allows_none(self) -> bool:
        return self.none_means is not None

    @property
    def widget_bounds(self) -> tuple | None:
        """``(min, max)`` of the app's input: the valid range, narrowed by the ``min``/``max`` widget hints."""
        if self.bounds is None:
            return None
        return (self.widget.get("min", self.bounds[0]), self.widget.get("max", self.bounds[1]))

    def range_text(self, others: Mapping | None = None) -> str:
        """The valid range in words, ``"between 0.5 and 15 Å"``, ``"at least 0 and below 1"``; with the values of
        the other fields (``others``), ``"above 0 and at most the cutoff (5 Å)"`` for an :attr:`at_most` field."""
        lo, hi = self.bounds
        unit = f" {self.unit}" if self.unit else ""
        if self.at_most is not None and others is not None and self.at_most in others:
            limit = others[self.at_most]
            text = (f"{'above' if self.open_low else 'at least'} {lo:g} and at most the "
                    f"{self.at_most.replace('_', ' ')} ({limit:g}{unit})")
        elif not (self.open_low or self.open_high):
            text = f"between {lo:g} and {hi:g}{unit}"
        else:
            text = (f"{'above' if self.open_low else 'at least'} {lo:g} and "
                    f"{'below' if self.open_high else 'at most'} {hi:g}{unit}")
        if self.allows_none:
            text += f" (or None for {self.none_means})"
        return text

    def accepts(self, value) -> bool:
        """Whether ``value`` (already of :attr:`type`) lies inside :attr:`bounds`."""
        lo, hi = self.bounds
        if not math.isfinite(value):
            return False
        return (lo < value if self.open_low else lo <= value) and (value < hi if self.open_high else value <= hi)

    def check(self, value, others: Mapping | None = None):
        """``value`` converted to :attr:`type` if it is valid for this field (and, for an :attr:`at_most` field,
        not above that field's value in ``others``).

        Raises
        ------
        ValueError
            One sentence naming the field, what it must be and the value given.
        """
        if value is None and self.allows_none:
            return None
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int) and not (
                isinstance(value, float) and value.is_integer()
            ):
                raise ValueError(f"{self.name} must be a whole number, got {value!r}")
            value = int(value)
        elif self.type is float:
            try:
                value = float(value)
            except (TypeError, ValueError):
                unit = f" in {self.unit}" if self.unit else ""
                raise ValueError(f"{self.name} must be a number{unit}{' or None' if self.allows_none else ''}, "
                                 f"got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        limit = None if self.at_most is None or others is None else others.get(self.at_most)
        if self.bounds is not None and (not self.accepts(value) or (limit is not None and value > limit)):
            raise ValueError(f"{self.name} must be {self.range_text(others)}, got {value}")
        return value


def _spec(type_, **meta) -> dict:
    """Field metadata of a :class:`Hypers` field (the keyword arguments of :class:`HyperSpec` but name/default)."""
    return {"spec": dict(type=type_, **meta)}


@dataclass(frozen=True)
class Hypers:
    """Hyperparameters of a Wigner kernel.

    Parameters
    ----------
    nu_max : int
        Highest body order ν; a ν-kernel is a (ν+1)-body kernel. 1 ≤ ``nu_max`` ≤ 12.
    lambda_max : int
        Highest angular order L kept in the ν=1 seed, in every intermediate and in the outputs. 0 ≤ L ≤ 8.
    cutoff : float
        Neighbour cutoff radius r_c, Å.
    cutoff_width : float
        Width w of the shifted-cosine switching region below the cutoff, Å (0 < w ≤ r_c).
    density_width : float
        Gaussian width σ of each neighbour in the density, Å. With ``density_scaling`` it is σ₀ of
        σ(r) = σ₀·exp(r/r_s). Default 0.2 Å (constant), chosen together with the radial weight below by
        cross-validation on QM9 (BENCHMARKS.md §6).
    density_scaling : float or None
        Length r_s (Å) of the radial growth of the width, σ(r) = σ₀·exp(r/r_s), with unit-integral Gaussians
        so wide far-away neighbours also weigh less (MATH.md §13). ``None`` means a constant width with
        unit-norm Gaussians (featomic's convention).
    radial_scale : float or None
        r₀ (Å) of the radial weight u(r) = 1 / (1 + (r/r₀)^m) that multiplies every neighbour's Gaussian
        (featomic's ``Willatt2018`` radial scaling with rate 1), on top of the cutoff function. It decides
        how much far neighbours count independently of how wide they are. Default 1.5 Å: bonded
        neighbours keep 50–90 % of their weight (u = 0.87 at 1.09 Å, 0.5 at 1.5 Å), second neighbours
        (≈ 2.5 Å) about 5 %.
        ``None`` switches the weight off (u = 1).
    radial_exponent : float
        m of the radial weight (default 6); ignored when ``radial_scale`` is ``None``.
    species_coupling : float
        Overlap a (0 ≤ a < 1) between the densities of neighbours of two *different* heavy elements
        (Z > 1), relative to 1 between neighbours of the same element; hydrogen neighbours overlap only
        with hydrogen. Default 0.95 (BENCHMARKS.md §6); 0 keeps every element in its own channel (the paper's
        and featomic's convention). A coupling lets a few hundred molecules inform each other across C, N, O
        and F environments (:func:`species_kernel`); the centres still pair with their own element only.
    hydrogen_weight : float
        Weight w_H of every hydrogen *neighbour*'s Gaussian relative to heavy neighbours (1: all equal, the
        paper's and featomic's convention). Hydrogens are about half the atoms of an organic molecule and their
        positions follow from the heavy skeleton, so with w_H < 1 the kernel spends less of its similarity on
        them; a ν-kernel term with k hydrogen neighbours scales as w_H^(2k). Centres are not affected.
        Default 0.4 (BENCHMARKS.md §6).
    hydrogen_center_weight : float
        Weight w_c of every hydrogen *centre* in the structure kernels: K^ν(A, B) = Σ_{i∈A, j∈B} w_i w_j k^ν(i, j)
        for every ν (ν = 0 too: the composition kernel counts hydrogens as w_c) with w = w_c for hydrogen centres
        and 1 for the others, so a pair of hydrogen environments counts w_c²
        (centres pair with their own element only). For a sum kernel this is the prior scale of the hydrogen
        atoms' energy contributions (the GP model E = Σ_i w_i ε_i). The atom-level kernels ``K_atomic`` are not
        weighted, and a structure against single selected centres (``centers_B``, sparse models) carries the
        structure's w_i only, cov(Σ_i w_i ε_i, ε_m). Default 0.3 (BENCHMARKS.md §6): the heavy-atom environments, whose densities already
        contain the hydrogens, carry most of what a few hundred molecules can learn; 1 is the paper's sum.
    schedule : {"reduced", "full"}
        ``"reduced"`` runs the equivariant recursion up to ⌈ν_max/2⌉ and then contracts to invariants
        (identical invariants, about 3× cheaper at ν_max=4, L=3). Tensorial outputs always use the full
        recursion for the requested blocks.
    normalization : {"exact", "reference"}
        ``"exact"``: k^ν = ∫dR D^λ(R) h(R)^ν (ν=2 is 8π² × the SOAP linear kernel). ``"reference"``: the
        published lab-cosmo code's convention (MATH.md §8).
    nu1_route : {"basis", "exact"}
        How the ν=1 kernels are computed: ``"basis"`` (default) expands the density on a radial basis
        optimised for the exact radial kernel and multiplies coefficient matrices; ``"exact"`` is the
        basis-free pair sum. They agree to ≤ 1e-6 relative.
    """

    nu_max: int = field(default=4, metadata=_spec(
        int, bounds=(1, 12), help="highest body order ν",
        widget={"label": "ν_max · highest body order", "max": 8,
                "help": ("A ν-kernel sees (ν+1)-body correlations; ν=2 is the 3-body (SOAP-like) kernel. Cost grows "
                         "linearly with ν.")}))
    lambda_max: int = field(default=3, metadata=_spec(
        int, bounds=(0, 8), help="highest angular order",
        widget={"label": "λ_max · highest angular order", "max": 6,
                "help": ("Angular resolution kept in the iteration. Vector targets need λ_max ≥ 1, tensors ≥ 2. Cost "
                         "grows roughly as λ_max⁴.")}))
    cutoff: float = field(default=5.0, metadata=_spec(
        float, unit="Å", bounds=(0.5, 15.0), help="cutoff radius",
        widget={"label": "cutoff r_c (Å)", "step": 0.5,
                "help": ("Neighbours farther than this from the central atom are ignored.")}))
    # at most the cutoff; 15 Å, the largest cutoff, bounds it for the widget
    cutoff_width: float = field(default=0.5, metadata=_spec(
        float, unit="Å", bounds=(0.0, 15.0), open_low=True, at_most="cutoff", help="width of the smooth cutoff region",
        widget={"label": "cutoff width (Å)", "min": 0.05, "step": 0.1,
                "help": ("Width of the smooth switching region just inside the cutoff.")}))
    # chosen by 5-fold CV on 500 random QM9 training molecules (BENCHMARKS.md §6): a radial weight that
    # fades beyond the bonded shell beat every width law without it (76 against 92 meV CV MAE on U0)
    density_width: float = field(default=0.2, metadata=_spec(
        float, unit="Å", bounds=(0.01, 3.0), help="Gaussian width σ (σ₀ with --density-scaling)",
        widget={"label": "density width σ (Å)", "step": 0.01,
                "help": ("Gaussian width of each neighbour in the density: smaller is sharper and more detailed, "
                         "larger is smoother.")}))
    density_scaling: float | None = field(default=None, metadata=_spec(
        float, unit="Å", bounds=(0.3, 1000.0), none_means="a constant width",
        help="r_s of σ(r) = σ₀·exp(r/r_s)",
        widget={"label": "density scaling r_s (Å)", "step": 0.1, "toggle": "kernels.scaling_on",
                "value_when_off": 2.0,
                "help": ("With 'σ grows' ticked, σ(r) = σ₀·exp(r/r_s) with unit-integral Gaussians, so far "
                         "neighbours are wider and weigh less; r_s is the length over which the width grows by a "
                         "factor e. Unticked: a constant σ (featomic's convention).")}))
    radial_scale: float | None = field(default=1.5, metadata=_spec(
        float, unit="Å", bounds=(0.2, 20.0), none_means="no radial weight",
        help="r₀ of the radial weight 1/(1+(r/r₀)^m)",
        widget={"label": "radial weight r₀ (Å)", "step": 0.1, "toggle": "kernels.radial_on",
                "value_when_off": 1.5,
                "help": ("With 'radial weight' ticked, every neighbour is multiplied by u(r) = 1/(1 + (r/r₀)^m) "
                         "(featomic's Willatt2018 radial scaling): how much far atoms count, independently of how wide "
                         "they are; r₀ is the distance at which a neighbour counts half. On by default: the largest "
                         "single accuracy gain on QM9.")}))
    radial_exponent: float = field(default=6.0, metadata=_spec(
        float, bounds=(1.0, 20.0), help="m of the radial weight",
        widget={"label": "radial weight exponent m", "step": 1.0,
                "help": ("How sharply the weight falls off beyond r₀.")}))
    # with 500 molecules, a C, N or O neighbour at the right place is worth more than knowing exactly which of them
    # it is: 62.5 meV CV at 0.9 against 76.4 uncoupled (0.99 worse); 0.95 together with hydrogen_weight 0.4 by
    # paired comparison on four fresh validation draws (BENCHMARKS.md §6, round 6: −0.9 ± 0.2 meV against 0.9/0.25)
    species_coupling: float = field(default=0.95, metadata=_spec(
        float, bounds=(0.0, 1.0), open_high=True,
        help="overlap (0 ≤ a < 1) between neighbours of different heavy elements; 0 keeps every element apart",
        # a = 1 is refused (every heavy element the same), so the widget stops one step short of it
        widget={"label": "element coupling a", "max": 0.99, "step": 0.05,
                "help": ("How much the densities of neighbours of two different heavy elements (C and N, say) "
                         "overlap, relative to the same element; hydrogen stays apart. 0 = every element separate, "
                         "as in the paper.")}))
    # the baseline already carries most of the hydrogen count: 0.25–0.4 gave 59.4–59.7 meV against 64.5 at 1 on one
    # validation draw (round 4); 0.4 with the coupling above won on four fresh draws (round 6)
    hydrogen_weight: float = field(default=0.4, metadata=_spec(
        float, bounds=(0.05, 5.0), help="weight of hydrogen neighbours relative to heavy ones",
        widget={"label": "hydrogen weight w_H", "step": 0.05,
                "help": ("How much a hydrogen neighbour counts relative to a heavy one: below 1 the kernel looks "
                         "more at the heavy-atom skeleton. 1 = all neighbours equal, as in the paper.")}))
    # 0.3 by paired comparison on 16 random 500/1,000 partitions of 2,000 QM9 molecules (BENCHMARKS.md §6); on four
    # fresh draws (round 6) 0.5 ties and 1 is 0.3 meV worse
    hydrogen_center_weight: float = field(default=0.3, metadata=_spec(
        float, bounds=(0.0, 5.0),
        help="weight of hydrogen centres in the structure kernels, relative to heavy ones; 1 is the paper's "
             "plain sum",
        widget={"label": "hydrogen centre weight w_c", "step": 0.05,
                "help": ("How much each hydrogen atom's environment counts in the structure kernels (pairs of "
                         "hydrogen centres count w_c²); the heavy atoms' environments already see the hydrogens. 1 = "
                         "every atom equal, as in the paper. Atom-level kernels are not weighted.")}))
    schedule: str = field(default="reduced", metadata=_spec(
        str, choices=SCHEDULES, help="equivariant recursion up to ⌈ν_max/2⌉ then invariants, or all the way"))
    normalization: str = field(default="exact", metadata=_spec(
        str, choices=NORMALIZATIONS, help="k^ν = ∫dR D^λ(R) h(R)^ν, or the published lab-cosmo code's convention",
        widget={"label": "normalization",
                "help": ("exact: k^ν = ∫ dR h(R)^ν (ν=2 ∝ SOAP linear kernel); reference: the published code's "
                         "convention.")}))
    nu1_route: str = field(default="basis", metadata=_spec(
        str, choices=NU1_ROUTES, help="ν=1 kernels from the optimal radial basis (fast) or the exact pair sum"))

    def __post_init__(self):
        checked = {}  # fields in declaration order, so an at_most field sees its limit already checked
        for spec in HYPER_SPECS:
            checked[spec.name] = spec.check(getattr(self, spec.name), checked)
            object.__setattr__(self, spec.name, checked[spec.name])

    @classmethod
    def spec(cls, name: str) -> "HyperSpec":
        """The :class:`HyperSpec` (flag, unit, bounds, help, ...) of the hyperparameter ``name``."""
        try:
            return _SPECS_BY_NAME[name]
        except KeyError:
            raise ValueError(f"unknown hyperparameter {name!r}; valid names: "
                             f"{', '.join(sorted(_SPECS_BY_NAME))}") from None

    def replace(self, **changes) -> "Hypers":
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every hyperparameter as a plain, JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the form stored in ``K.npz['hypers']``."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Hypers":
        """Build from a dict, refusing unknown names with the list of valid ones.

        A dict written before the radial weight, the species coupling or the hydrogen weights existed (it has
        ``density_width`` but not their names) describes kernels computed without them, so each missing one
        reads as switched off (:data:`_ABSENT_MEANS_OFF`), not as the new defaults.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; valid names: {', '.join(sorted(names))}")
        data = dict(data)
        if "density_width" in data:
            for name, off in _ABSENT_MEANS_OFF.items():
                data.setdefault(name, off)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Hypers":
        return cls.from_dict(json.loads(text))

    def digest(self) -> str:
        """Short content hash used as a cache key."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def weight_at(self, r):
        """Radial weight u(r) of a neighbour at distance ``r`` (Å), before the cutoff function."""
        return radial_weight(r, self.radial_scale, self.radial_exponent)

    def width_at(self, r):
        """Gaussian width σ(r) in Å of a neighbour at distance ``r``."""
        if self.density_scaling is None:
            return self.density_width + 0.0 * r
        import numpy as np

        return self.density_width * np.exp(np.asarray(r) / self.density_scaling)



#: One :class:`HyperSpec` per field of :class:`Hypers`, in field order.
HYPER_SPECS: tuple[HyperSpec, ...] = tuple(
    HyperSpec(name=f.name, default=f.default, **f.metadata["spec"]) for f in dataclasses.fields(Hypers)
)
_SPECS_BY_NAME = {spec.name: spec for spec in HYPER_SPECS}


def radial_weight(distances, scale, exponent):
    """u(r) = 1 / (1 + (r/r₀)^m) (featomic's Willatt2018 radial scaling with rate 1); ones when ``scale`` is None."""
    import numpy as np

    r = np.asarray(distances, dtype=float)
    if scale is None:
        return np.ones_like(r)
    return 1.0 / (1.0 + (r / float(scale)) ** float(exponent))


def species_kernel(za, zb, coupling):
    """κ(Z, Z') between neighbour elements (broadcast over ``za``, ``zb``): 1 for the same element, ``coupling``
    for two different heavy elements (Z, Z' > 1), 0 between hydrogen and a heavy element.

    It is positive semi-definite for 0 ≤ coupling ≤ 1 ((1 − a) I plus a on the heavy-element block), so it
    defines a valid kernel between densities; hydrogen stays apart because it bonds so differently.
    """
    import numpy as np

    za, zb = np.broadcast_arrays(np.asarray(za), np.asarray(zb))
    heavy = (za > 1) & (zb > 1)
    return np.where(za == zb, 1.0, np.where(heavy, float(coupling), 0.0))
