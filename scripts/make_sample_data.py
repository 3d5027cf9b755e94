"""Rebuild the bundled data sets in ``sample_data/`` (deterministic: fixed seeds, gzip without timestamps).

Usage (from the repository root)::

    .venv/bin/python scripts/make_sample_data.py            # all three sets
    .venv/bin/python scripts/make_sample_data.py gold teaching

- ``qm9_subset.extxyz.gz``: 2,000 QM9 molecules drawn with seed 0 from the qm9pack package
  (``wkviz.data.load_qm9(2000, 0)``); needs ``pip install qm9pack``.
- ``gold_emt.extxyz.gz``: 300 Au clusters (10-40 atoms) and 200 periodic fcc cells (4-32 atoms), rattled
  and strained, labelled with ase's EMT (seed 1).
- ``teaching.extxyz``: pairs of environments with identical 3-body (ν=2) correlations and different 4-body
  (ν=3) correlations, checked here with an independent multiset test before writing.

See ``sample_data/README.md`` for provenance, units and keys.
"""

from __future__ import annotations

import gzip
import io
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.cluster import Decahedron, Icosahedron, Octahedron  # noqa: E402
import ase.io  # noqa: E402

from wkviz.data import load_qm9, validate_structures  # noqa: E402

OUT = ROOT / "sample_data"
QM9_N, QM9_SEED = 2000, 0
GOLD_SEED = 1
AU_A0 = 4.056  # Å, close to the EMT equilibrium fcc lattice constant of Au (4.05-4.06)


def write_extxyz(frames, path: Path) -> None:
    """extxyz, gzipped with mtime=0 and no stored file name so that rebuilding gives identical bytes."""
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    data = buf.getvalue().encode()
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                    compresslevel=9) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    print(f"wrote {path.relative_to(ROOT)}: {len(frames)} structures, {path.stat().st_size / 1e6:.2f} MB")


# ------------------------------------------------------------------------------------------------------------------
# QM9
# ------------------------------------------------------------------------------------------------------------------

def make_qm9():
    frames = load_qm9(QM9_N, QM9_SEED)
    write_extxyz(frames, OUT / "qm9_subset.extxyz.gz")


# ------------------------------------------------------------------------------------------------------------------
# Gold (EMT)
# ------------------------------------------------------------------------------------------------------------------

def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])


def _min_distance(atoms):
    if atoms.pbc.any():
        from ase.neighborlist import neighbor_list

        d = neighbor_list("d", atoms, 3.0)
        return float(d.min()) if len(d) else np.inf
    p = atoms.positions
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    d[np.diag_indices(len(p))] = np.inf
    return float(d.min())


def _fcc_fragment(rng, n):
    """The n fcc sites nearest a random point: a compact piece of the crystal."""
    big = bulk("Au", "fcc", a=AU_A0, cubic=True).repeat((5, 5, 5))
    centre = big.cell.sum(axis=0) / 2 + rng.uniform(-1, 1, 3) * AU_A0 / 2
    d = np.linalg.norm(big.positions - centre, axis=1)
    keep = np.argsort(d)[:n]
    return Atoms("Au%d" % n, positions=big.positions[keep] - centre)


def _grown_cluster(rng, n):
    """Random compact cluster: each new atom touches an existing one and is the most central of 12 tries."""
    pos = [np.zeros(3)]
    while len(pos) < n:
        p = np.array(pos)
        com = p.mean(axis=0)
        best, best_r = None, np.inf
        for _ in range(12):
            base = p[rng.integers(len(p))]
            v = rng.normal(size=3)
            cand = base + v / np.linalg.norm(v) * rng.uniform(2.7, 2.95)
            if np.min(np.linalg.norm(p - cand, axis=1)) < 2.55:
                continue
            r = np.linalg.norm(cand - com)
            if r < best_r:
                best, best_r = cand, r
        if best is not None:
            pos.append(best)
    return Atoms("Au%d" % n, positions=np.array(pos))


def _shape_cluster(rng):
    makers = [
        lambda: Icosahedron("Au", 2, latticeconstant=AU_A0),
        lambda: Octahedron("Au", 3, latticeconstant=AU_A0),
        lambda: Octahedron("Au", 3, 1, latticeconstant=AU_A0),
        lambda: Octahedron("Au", 4, 1, latticeconstant=AU_A0),
        lambda: Decahedron("Au", 2, 2, 0, latticeconstant=AU_A0),
        lambda: Decahedron("Au", 3, 1, 0, latticeconstant=AU_A0),
        lambda: Decahedron("Au", 3, 2, 0, latticeconstant=AU_A0),
        lambda: Decahedron("Au", 2, 3, 0, latticeconstant=AU_A0),
    ]
    atoms = makers[rng.integers(len(makers))]()
    atoms = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions - atoms.positions.mean(axis=0))
    return atoms


def _label(atoms, config_type):
    atoms.calc = EMT()
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces().copy()
    stress = atoms.get_stress(voigt=False).copy() if atoms.pbc.all() else None
    atoms.calc = None
    atoms.info["config_type"] = config_type
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = forces
    if stress is not None:
        atoms.info["stress"] = stress
    return atoms


def _clusters(rng, n):
    """n EMT-labelled Au clusters drawn from ``rng`` (ase shapes, fcc fragments, grown clusters in turn)."""
    frames = []
    builders = [lambda: _shape_cluster(rng), lambda: _fcc_fragment(rng, int(rng.integers(10, 41))),
                lambda: _grown_cluster(rng, int(rng.integers(10, 41)))]
    for k in range(n):
        while True:
            atoms = builders[k % 3]()
            scale = rng.uniform(0.97, 1.03)
            atoms.positions = atoms.positions @ _random_rotation(rng).T * scale
            atoms.positions += rng.normal(scale=rng.uniform(0.03, 0.12), size=atoms.positions.shape)
            if 10 <= len(atoms) <= 40 and _min_distance(atoms) > 2.45:
                break
        frames.append(_label(atoms, "cluster"))
    return frames


def gold_clusters(n, seed):
    """n Au clusters made with the bundled set's recipe from their own generator (seed): ``gold_clusters(300,
    GOLD_SEED)`` are the bundled set's clusters, another seed gives fresh ones for validation
    (``benchmarks/bench_forces.py --part validate``)."""
    return _clusters(np.random.default_rng(seed), n)


def make_gold():
    rng = np.random.default_rng(GOLD_SEED)
    frames = _clusters(rng, 300)  # the same generator goes on to the bulk cells
    conventional = [(1, 1, 1), (2, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)]
    primitive = [(2, 2, 1), (2, 2, 2), (2, 2, 3), (3, 3, 1), (3, 3, 2), (2, 3, 4), (3, 3, 3)]
    for k in range(200):
        while True:
            if k % 2 == 0:
                atoms = bulk("Au", "fcc", a=AU_A0, cubic=True).repeat(conventional[rng.integers(len(conventional))])
            else:
                atoms = bulk("Au", "fcc", a=AU_A0).repeat(primitive[rng.integers(len(primitive))])
            eps = rng.uniform(-0.03, 0.03, size=(3, 3))
            eps = 0.5 * (eps + eps.T) + np.eye(3) * rng.uniform(-0.03, 0.03)
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            atoms.positions += rng.normal(scale=rng.uniform(0.02, 0.12), size=atoms.positions.shape)
            atoms.wrap()
            if 4 <= len(atoms) <= 32 and _min_distance(atoms) > 2.45:
                break
        frames.append(_label(atoms, "bulk"))
    validate_structures(frames)
    write_extxyz(frames, OUT / "gold_emt.extxyz.gz")


# ------------------------------------------------------------------------------------------------------------------
# Teaching set: ν=2-degenerate, ν=3-distinct pairs of environments
# ------------------------------------------------------------------------------------------------------------------
#
# Construction (derived for wkviz, in the spirit of Pozdnyakov et al., PRL 125, 166001 (2020)). A ν=2
# (3-body) description of the environment of a centre at the origin depends only on the multiset, over
# ordered pairs of neighbours (j, k) including j = k, of (species_j, species_k, r_j, r_k, r̂_j·r̂_k).
# Place neighbours on coaxial rings u (species s_u, radius ρ_u, height z_u, phase α_u) at azimuths
# φ = α_u + σ β_v for offsets β_v in a set V; structure A has σ = +1, structure B has σ = −1. For two
# neighbours, r_j·r_k = ρ_u ρ_u' cos(α_u − α_u' + σ(β_v − β_v')) + z_u z_u', and for fixed rings (u, u')
# the multiset of β_v − β_v' over (v, v') is symmetric under sign change (swap v and v'), so A and B have
# identical ν=2 descriptions. They are not congruent when V has no mirror symmetry and the rings' phases
# differ (B would otherwise be a rotated or reflected A), so the 4-body (ν=3) description differs.
# The first pair instead uses a classic homometric set on an octagon: sites {0,1,2,5} and {0,1,3,4}
# (units of 45°) have the same multiset of pairwise angles but different gaps (1,1,3,3 vs 1,2,1,4).

def _ring_pair(rings, offsets_deg):
    beta = np.radians(offsets_deg)
    out = []
    for sigma in (1, -1):
        symbols, pos = [], []
        for symbol, rho, z, alpha_deg in rings:
            for b in beta:
                phi = np.radians(alpha_deg) + sigma * b
                symbols.append(symbol)
                pos.append([rho * np.cos(phi), rho * np.sin(phi), z])
        out.append((symbols, np.array(pos)))
    return out


def _octagon_pair(radius, symbol):
    out = []
    for sites in ((0, 1, 2, 5), (0, 1, 3, 4)):
        ang = np.array(sites) * np.pi / 4
        out.append(([symbol] * 4, np.stack([radius * np.cos(ang), radius * np.sin(ang), np.zeros(4)], axis=1)))
    return out


TEACHING_PAIRS = [
    ("4 H on a circle (octagon sites 0,1,2,5 vs 0,1,3,4) around C: same pair angles, different gaps",
     "C", _octagon_pair(2.0, "H")),
    ("6 H on two rings (3 above, 3 below) around C; ring azimuths α+β vs α−β, β in {0°, 52°, 145°}",
     "C", _ring_pair([("H", 1.8, 0.35, 48.0), ("H", 1.95, -1.45, 110.0)], (0, 52, 145))),
    ("3 H above and 3 O below C on two rings; azimuths α+β vs α−β, β in {0°, 50°, 125°}",
     "C", _ring_pair([("H", 1.5, 0.9, 0.0), ("O", 1.4, -1.0, 40.0)], (0, 50, 125))),
    ("6 C on two rings, one in the centre's plane; azimuths α+β vs α−β, β in {0°, 40°, 140°}",
     "Si", _ring_pair([("C", 2.2, 0.0, 0.0), ("C", 1.6, 1.5, 25.0)], (0, 40, 140))),
    ("9 H on three rings around N; azimuths α+β vs α−β, β in {0°, 55°, 168°}",
     "N", _ring_pair([("H", 1.25, 1.5, 78.0), ("H", 1.5, -0.2, 117.0), ("H", 2.2, 1.0, 47.0)], (0, 55, 168))),
    ("6 O on two rings above C (radii 1.9 and 2.3 Å); azimuths α+β vs α−β, β in {0°, 35°, 110°}",
     "C", _ring_pair([("O", 1.9, 0.4, 0.0), ("O", 2.3, 1.6, 55.0)], (0, 35, 110))),
]


def nu2_signature(symbols, pos, decimals=6):
    """Sorted multiset over ordered neighbour pairs of (s_j, s_k, r_j, r_k, cos θ_jk): fixes every ν=2 invariant."""
    r = np.linalg.norm(pos, axis=1)
    c = (pos @ pos.T) / np.outer(r, r)
    n = len(pos)
    return sorted((symbols[j], symbols[k], round(r[j], decimals), round(r[k], decimals),
                   round(float(c[j, k]), decimals) + 0.0) for j in range(n) for k in range(n))


def nu3_signature(symbols, pos, decimals=6):
    """Sorted multiset over ordered neighbour triples of their species, radii and three pair angles (ν=3)."""
    r = np.linalg.norm(pos, axis=1)
    c = (pos @ pos.T) / np.outer(r, r)
    n = len(pos)
    return sorted((symbols[j], symbols[k], symbols[m], round(r[j], decimals), round(r[k], decimals),
                   round(r[m], decimals), round(float(c[j, k]), decimals) + 0.0,
                   round(float(c[j, m]), decimals) + 0.0, round(float(c[k, m]), decimals) + 0.0)
                  for j, k, m in itertools.product(range(n), repeat=3))


def make_teaching():
    frames = []
    for pair_id, (description, centre, ((sa, pa), (sb, pb))) in enumerate(TEACHING_PAIRS):
        if nu2_signature(sa, pa) != nu2_signature(sb, pb):
            raise RuntimeError(f"teaching pair {pair_id}: ν=2 signatures differ; the construction is wrong")
        if nu3_signature(sa, pa) == nu3_signature(sb, pb):
            raise RuntimeError(f"teaching pair {pair_id}: ν=3 signatures agree; A and B are congruent")
        for label, symbols, pos in (("A", sa, pa), ("B", sb, pb)):
            atoms = Atoms([centre] + symbols, positions=np.vstack([np.zeros(3), pos]))
            atoms.info.update(pair=pair_id, label=label, center=0, description=description)
            frames.append(atoms)
    validate_structures(frames)
    write_extxyz(frames, OUT / "teaching.extxyz")


def main(argv):
    OUT.mkdir(exist_ok=True)
    todo = argv or ["qm9", "gold", "teaching"]
    for name in todo:
        {"qm9": make_qm9, "gold": make_gold, "teaching": make_teaching}[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
