"""Hyperparameters of a Wigner-kernel computation: one frozen, hashable dataclass.

Names follow the paper and ``DESIGN.md`` §2: ``nu_max`` (body order), ``lambda_max`` (angular truncation),
lengths in Å.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

SCHEDULES = ("reduced", "full")
NORMALIZATIONS = ("exact", "reference")
NU1_ROUTES = ("basis", "exact")


#: Fields added after kernel files were first written, with the value that reproduces those older kernels.
_ABSENT_MEANS_OFF = {"radial_scale": None, "species_coupling": 0.0, "hydrogen_weight": 1.0,
                     "hydrogen_center_weight": 1.0}


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

    nu_max: int = 4
    lambda_max: int = 3
    cutoff: float = 5.0
    cutoff_width: float = 0.5
    # chosen by 5-fold CV on 500 random QM9 training molecules (BENCHMARKS.md §6): a radial weight that
    # fades beyond the bonded shell beat every width law without it (76 against 92 meV CV MAE on U0)
    density_width: float = 0.2
    density_scaling: float | None = None
    radial_scale: float | None = 1.5
    radial_exponent: float = 6.0
    # with 500 molecules, a C, N or O neighbour at the right place is worth more than knowing exactly which of them
    # it is: 62.5 meV CV at 0.9 against 76.4 uncoupled (0.99 worse); 0.95 together with hydrogen_weight 0.4 by
    # paired comparison on four fresh validation draws (BENCHMARKS.md §6, round 6: −0.9 ± 0.2 meV against 0.9/0.25)
    species_coupling: float = 0.95
    # the baseline already carries most of the hydrogen count: 0.25–0.4 gave 59.4–59.7 meV against 64.5 at 1 on one
    # validation draw (round 4); 0.4 with the coupling above won on four fresh draws (round 6)
    hydrogen_weight: float = 0.4
    # 0.3 by paired comparison on 16 random 500/1,000 partitions of 2,000 QM9 molecules (BENCHMARKS.md §6); on four
    # fresh draws (round 6) 0.5 ties and 1 is 0.3 meV worse
    hydrogen_center_weight: float = 0.3
    schedule: str = "reduced"
    normalization: str = "exact"
    nu1_route: str = "basis"

    def __post_init__(self):
        def fail(msg):
            raise ValueError(msg)

        for name in ("nu_max", "lambda_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int,)) and not (
                isinstance(value, float) and value.is_integer()
            ):
                fail(f"{name} must be a whole number, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name, unit in (("cutoff", " in Å"), ("cutoff_width", " in Å"), ("density_width", " in Å"),
                           ("radial_exponent", ""), ("species_coupling", ""), ("hydrogen_weight", ""),
                           ("hydrogen_center_weight", ""),
                           ("density_scaling", " in Å or None"), ("radial_scale", " in Å or None")):
            value = getattr(self, name)
            if value is None and unit.endswith("None"):
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                fail(f"{name} must be a number{unit}, got {value!r}")
            object.__setattr__(self, name, value)
        if not 1 <= self.nu_max <= 12:
            fail(f"nu_max must be between 1 and 12, got {self.nu_max}")
        if not 0 <= self.lambda_max <= 8:
            fail(f"lambda_max must be between 0 and 8, got {self.lambda_max}")
        if not (math.isfinite(self.cutoff) and 0.5 <= self.cutoff <= 15.0):
            fail(f"cutoff must be between 0.5 and 15 Å, got {self.cutoff}")
        if not (math.isfinite(self.cutoff_width) and 0.0 < self.cutoff_width <= self.cutoff):
            fail(f"cutoff_width must be > 0 and at most the cutoff ({self.cutoff} Å), got {self.cutoff_width}")
        if not (math.isfinite(self.density_width) and 0.01 <= self.density_width <= 3.0):
            fail(f"density_width must be between 0.01 and 3 Å, got {self.density_width}")
        if self.density_scaling is not None and not (
            math.isfinite(self.density_scaling) and 0.3 <= self.density_scaling <= 1000.0
        ):
            fail(f"density_scaling must be between 0.3 and 1000 Å (or None for a constant width), "
                 f"got {self.density_scaling}")
        if self.radial_scale is not None and not (math.isfinite(self.radial_scale)
                                                  and 0.2 <= self.radial_scale <= 20.0):
            fail(f"radial_scale must be between 0.2 and 20 Å (or None for no radial weight), got {self.radial_scale}")
        if not (math.isfinite(self.radial_exponent) and 1.0 <= self.radial_exponent <= 20.0):
            fail(f"radial_exponent must be between 1 and 20, got {self.radial_exponent}")
        if not (math.isfinite(self.species_coupling) and 0.0 <= self.species_coupling < 1.0):
            fail(f"species_coupling must be at least 0 and below 1, got {self.species_coupling}")
        if not (math.isfinite(self.hydrogen_weight) and 0.05 <= self.hydrogen_weight <= 5.0):
            fail(f"hydrogen_weight must be between 0.05 and 5, got {self.hydrogen_weight}")
        if not (math.isfinite(self.hydrogen_center_weight) and 0.0 <= self.hydrogen_center_weight <= 5.0):
            fail(f"hydrogen_center_weight must be between 0 and 5, got {self.hydrogen_center_weight}")
        if self.schedule not in SCHEDULES:
            fail(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.normalization not in NORMALIZATIONS:
            fail(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.nu1_route not in NU1_ROUTES:
            fail(f"nu1_route must be one of {', '.join(NU1_ROUTES)}, got {self.nu1_route!r}")

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
