"""wkviz.data: bundled data sets, reading and validation, targets, splits.

The bad-file corpus is generated in ``tmp_path`` (each case is a few bytes, written next to its expected
message so the two can be read together). qm9pack's full table is loaded once per module (about 1-2 s).
"""

from __future__ import annotations

import gzip
import io
import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from wkviz.data import (
    HARTREE_EV,
    MIN_DISTANCE,
    SAMPLE_SETS,
    TargetInfo,
    charge_dipole,
    composition_counts,
    describe_targets,
    fps_split,
    get_target,
    load_qm9,
    load_sample,
    random_split,
    read_structures,
    summarize,
    validate_structures,
)
from conftest import require
from wkviz.errors import InputError
from wkviz.engine.spherical import random_rotation


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qm9_sample():
    return load_sample("qm9")


@pytest.fixture(scope="module")
def gold_sample():
    return load_sample("gold")


@pytest.fixture(scope="module")
def teaching_sample():
    return load_sample("teaching")


@pytest.fixture(scope="module")
def qm9_table():
    qm9pack = require("qm9pack")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qm9pack.get_data("qm9")


def test_hartree_is_codata_2018():
    assert HARTREE_EV == 27.211386245988


def _rotation(seed):
    return random_rotation(np.random.default_rng(seed))


def _xyz(*frames):
    """Plain xyz text from (symbols, positions) pairs."""
    out = []
    for symbols, pos in frames:
        out.append(f"{len(symbols)}\n")
        out.append("\n")
        for s, p in zip(symbols, pos):
            out.append(f"{s} {p[0]} {p[1]} {p[2]}\n")
    return "".join(out)


WATER = (["O", "H", "H"], [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


# ----------------------------------------------------------------------------------------------------------------
# Bundled data: QM9 subset
# ----------------------------------------------------------------------------------------------------------------

def test_sample_sets_are_listed_and_small():
    from wkviz.data import SAMPLE_DIR

    assert set(SAMPLE_SETS) == {"qm9", "gold", "teaching"}
    for name, meta in SAMPLE_SETS.items():
        path = SAMPLE_DIR / meta["file"]
        assert path.exists(), name
        assert path.stat().st_size < 5 * 2**20, name
        assert meta["description"] and meta["title"]
    assert (SAMPLE_DIR / "README.md").exists()


def test_qm9_subset_counts_keys_units(qm9_sample):
    frames = qm9_sample
    assert len(frames) == 2000
    idx = np.array([a.info["qm9_index"] for a in frames])
    assert len(np.unique(idx)) == 2000 and np.all(np.diff(idx) > 0)  # sorted by QM9 index
    assert 1 <= idx.min() and idx.max() <= 133885
    assert set(np.unique(np.concatenate([a.numbers for a in frames]))) <= {1, 6, 7, 8, 9}
    for key in ("U0", "U", "H", "G", "homo", "lumo", "gap", "zpve", "dipole_norm", "alpha_iso", "cv",
                "mulliken_dipole", "smiles"):
        assert all(key in a.info for a in frames), key
    assert all(a.arrays["mulliken"].shape == (len(a),) for a in frames)

    u0 = get_target(frames, "U0")
    heavy = np.array([np.sum(a.numbers > 1) for a in frames])
    # eV, not Hartree: a heavy atom (C/N/O/F) carries about -1,000 to -2,700 eV of U0.
    assert np.all((u0 / heavy < -900) & (u0 / heavy > -3000))
    gap = get_target(frames, "gap")
    assert 0.5 < gap.min() and gap.max() < 17.5  # eV (QM9 gaps: 0.02-0.62 Ha)
    np.testing.assert_allclose(get_target(frames, "lumo") - get_target(frames, "homo"), gap, atol=2e-4 * HARTREE_EV)
    assert np.all(get_target(frames, "alpha_iso") > 5) and np.all(get_target(frames, "dipole_norm") >= 0)
    q = get_target(frames, "mulliken")
    assert q.shape == (sum(len(a) for a in frames),)
    assert max(abs(a.arrays["mulliken"].sum()) for a in frames) < 1e-4  # neutral molecules

    kinds = {t.key: t for t in describe_targets(frames)}
    assert kinds["U0"] == TargetInfo("U0", "scalar", "eV", True, "info", 2000)
    assert kinds["gap"].unit == "eV" and kinds["gap"].extensive is False
    assert kinds["mulliken_dipole"].kind == "vector" and kinds["mulliken_dipole"].unit == "e·Å"
    assert kinds["mulliken"].kind == "atomic" and kinds["mulliken"].unit == "e"
    assert "qm9_index" not in kinds and "smiles" not in kinds


# Three molecules of the bundled subset, by QM9 index and SMILES, with U0 in Hartree as qm9pack gives it.
NAMED_QM9 = [
    (25, "N#CC#N", "cyanogen"),
    (None, "CCCC", "butane"),
    (None, "O=C1CNC1", "azetidin-3-one"),
]


def test_qm9_named_molecules_match_qm9pack(qm9_sample, qm9_table):
    by_smiles = {a.info["smiles"]: a for a in qm9_sample}
    table_index = qm9_table.set_index("Index")
    for index, smiles, name in NAMED_QM9:
        atoms = by_smiles[smiles]
        if index is not None:
            assert atoms.info["qm9_index"] == index, name
        row = table_index.loc[int(atoms.info["qm9_index"])]
        assert row["SMILES"] == smiles, name
        assert atoms.info["U0"] == pytest.approx(row["InternalEnergy_0K_au"] * 27.211386245988, abs=1e-9), name
        assert atoms.info["gap"] == pytest.approx(row["HOMO_LUMO_gap_au"] * 27.211386245988, abs=1e-9), name
        assert atoms.info["alpha_iso"] == pytest.approx(row["Polarizability_bohr3"]), name
        pos = np.array([float(t) for t in row["XYZ_Ang"].replace("[", " ").replace("]", " ").split(",") if
                        t.strip()]).reshape(-1, 3)
        np.testing.assert_allclose(atoms.positions, pos, atol=1e-8)
        q = np.array([float(t) for t in row["Mulliken_pop"].strip("[]").split(",")])
        np.testing.assert_allclose(atoms.arrays["mulliken"], q, atol=1e-12)
    # A hand-checked literal: cyanogen's U0 in QM9 is -185.648533 Ha.
    assert by_smiles["N#CC#N"].info["U0"] == pytest.approx(-185.648533 * 27.211386245988, abs=1e-6)


def test_load_qm9_reproduces_bundled_subset(qm9_sample, qm9_table):
    frames = load_qm9(2000, 0, table=qm9_table)  # the module's table: one load per run
    assert [a.info["qm9_index"] for a in frames] == [a.info["qm9_index"] for a in qm9_sample]
    for a, b in zip(frames[::97], qm9_sample[::97]):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
        for key in ("U0", "gap", "dipole_norm"):
            assert a.info[key] == pytest.approx(b.info[key], abs=1e-9)
        np.testing.assert_allclose(a.info["mulliken_dipole"], b.info["mulliken_dipole"], atol=1e-7)
    other = load_qm9(5, 123, table=qm9_table)
    assert len(other) == 5
    assert [a.info["qm9_index"] for a in other] == [a.info["qm9_index"] for a in load_qm9(5, 123, table=qm9_table)]
    with pytest.raises(InputError, match="positive integer"):
        load_qm9(0, 0, table=qm9_table)
    with pytest.raises(InputError, match="QM9 has 130831 molecules"):
        load_qm9(10**6, 0, table=qm9_table)


def test_load_qm9_split_is_a_random_partition(qm9_table):
    """Train and test are both random: the old benchmark sliced load_qm9's draw, which is in QM9 order, so its
    training set held the lowest indices (small molecules first) and its test set none of them."""
    from wkviz.data import load_qm9_split

    train, test = load_qm9_split(100, 200, 3, table=qm9_table)
    drawn = sorted(a.info["qm9_index"] for a in load_qm9(300, 3, table=qm9_table))
    i_train = [a.info["qm9_index"] for a in train]
    i_test = [a.info["qm9_index"] for a in test]
    assert len(train) == 100 and len(test) == 200
    assert sorted(i_train + i_test) == drawn  # the same draw, split without overlap
    assert i_train == sorted(i_train) and i_test == sorted(i_test)
    # a slice of the draw would put all 100 training molecules below its 101st index; a random partition puts
    # about a third of them there (binomial, 100 × 1/3 ± 4.7)
    low = np.mean(np.asarray(i_train) < drawn[100])
    assert 0.15 < low < 0.55
    assert [a.info["qm9_index"] for a in load_qm9_split(100, 200, 3, table=qm9_table)[0]] == i_train  # reproducible
    with pytest.raises(InputError, match="n_test must be a positive integer"):
        load_qm9_split(10, 0, 0, table=qm9_table)


def test_load_qm9_without_qm9pack_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "qm9pack", None)  # makes `import qm9pack` raise ImportError
    with pytest.raises(InputError, match="pip install qm9pack"):
        load_qm9(10, 0)


def test_mulliken_dipole_is_consistent_and_rotates(qm9_sample):
    for k, atoms in enumerate(qm9_sample[:: 250]):
        mu = np.asarray(atoms.info["mulliken_dipole"])
        np.testing.assert_allclose(charge_dipole(atoms, "mulliken"), mu, atol=1e-9)
        # definition, written out: sum_i q_i (r_i - r_com), mass-weighted centre
        r_com = (atoms.get_masses() @ atoms.positions) / atoms.get_masses().sum()
        np.testing.assert_allclose(atoms.arrays["mulliken"] @ (atoms.positions - r_com), mu, atol=1e-9)
        R = _rotation(k)
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ R.T + np.array([3.0, -1.0, 2.0])
        np.testing.assert_allclose(charge_dipole(rotated, "mulliken"), R @ mu, atol=1e-9)
    # Larger dipoles in the data are real, not noise: the vector norm tracks the DFT dipole norm.
    md = np.linalg.norm(get_target(qm9_sample, "mulliken_dipole"), axis=1) * 4.80320
    assert np.corrcoef(md, get_target(qm9_sample, "dipole_norm"))[0, 1] > 0.9


# ----------------------------------------------------------------------------------------------------------------
# Bundled data: gold (EMT)
# ----------------------------------------------------------------------------------------------------------------

def test_gold_counts_keys_and_emt_labels(gold_sample):
    frames = gold_sample
    clusters = [a for a in frames if a.info["config_type"] == "cluster"]
    bulk = [a for a in frames if a.info["config_type"] == "bulk"]
    assert len(clusters) == 300 and len(bulk) == 200
    assert all(10 <= len(a) <= 40 and not a.pbc.any() for a in clusters)
    assert all(4 <= len(a) <= 32 and a.pbc.all() for a in bulk)
    assert all(set(a.get_chemical_symbols()) == {"Au"} for a in frames)
    energy = get_target(frames, "energy")
    forces = get_target(frames, "forces")
    assert energy.shape == (500,) and forces.shape == (sum(len(a) for a in frames), 3)
    stress = get_target(bulk, "stress")
    assert stress.shape == (200, 3, 3)
    np.testing.assert_allclose(stress, stress.transpose(0, 2, 1), atol=1e-12)
    with pytest.raises(InputError, match=r"target 'stress' is missing .* in 300 of 500 structures \(structures 0, 1, 2"):
        get_target(frames, "stress")
    # Recompute EMT on a few structures: the stored numbers are EMT's, in eV, eV/Å, eV/Å³.
    for s in (0, 1, 2, 299, 300, 301, 499):
        atoms = frames[s].copy()
        atoms.calc = EMT()
        # positions are stored with 8 decimals, so the recomputed labels agree to about 1e-7
        assert atoms.get_potential_energy() == pytest.approx(frames[s].info["energy"], abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), frames[s].arrays["forces"], atol=1e-5)
        if atoms.pbc.all():
            np.testing.assert_allclose(atoms.get_stress(voigt=False), frames[s].info["stress"], atol=1e-7)
    kinds = {t.key: t for t in describe_targets(frames)}
    assert kinds["energy"] == TargetInfo("energy", "scalar", "eV", True, "calc", 500)
    assert kinds["stress"] == TargetInfo("stress", "tensor", "eV/Å³", False, "calc", 200)
    assert "forces" not in kinds  # per-atom vectors are not a learnable target kind


# ----------------------------------------------------------------------------------------------------------------
# Bundled data: teaching set
# ----------------------------------------------------------------------------------------------------------------

def _neighbour_geometry(atoms):
    c = int(atoms.info["center"])
    others = [k for k in range(len(atoms)) if k != c]
    pos = atoms.positions[others] - atoms.positions[c]
    r = np.linalg.norm(pos, axis=1)
    return [atoms.get_chemical_symbols()[k] for k in others], r, (pos @ pos.T) / np.outer(r, r)


def _multiset_pairs(atoms, dec=6):
    s, r, c = _neighbour_geometry(atoms)
    return sorted((s[j], s[k], round(r[j], dec), round(r[k], dec), round(c[j, k], dec) + 0.0)
                  for j in range(len(r)) for k in range(len(r)))


def _multiset_tetrahedra(atoms, dec=5):
    """Over unordered neighbour triples: species and the six edge lengths of the tetrahedron with the centre,
    in a canonical order (smallest over the 6 relabellings of the triple)."""
    s, r, c = _neighbour_geometry(atoms)
    out = []
    for trip in itertools.combinations(range(len(r)), 3):
        best = None
        for j, k, m in itertools.permutations(trip):
            djk = np.sqrt(r[j] ** 2 + r[k] ** 2 - 2 * r[j] * r[k] * c[j, k])
            djm = np.sqrt(r[j] ** 2 + r[m] ** 2 - 2 * r[j] * r[m] * c[j, m])
            dkm = np.sqrt(r[k] ** 2 + r[m] ** 2 - 2 * r[k] * r[m] * c[k, m])
            key = (s[j], s[k], s[m]) + tuple(round(float(x), dec) for x in (r[j], r[k], r[m], djk, djm, dkm))
            best = key if best is None or key < best else best
        out.append(best)
    return sorted(out)


def test_teaching_set_structure_and_independent_degeneracy_check(teaching_sample):
    frames = teaching_sample
    assert len(frames) == 12
    pairs = {}
    for atoms in frames:
        assert {"pair", "label", "description", "center"} <= set(atoms.info)
        pairs.setdefault(int(atoms.info["pair"]), {})[atoms.info["label"]] = atoms
    assert sorted(pairs) == list(range(6))
    for pid, ab in pairs.items():
        a, b = ab["A"], ab["B"]
        assert a.get_chemical_formula() == b.get_chemical_formula()
        assert a.info["description"] == b.info["description"]
        # ν=2: same multiset of (species, r_j, r_k, cos θ_jk) around the centre.
        assert _multiset_pairs(a) == _multiset_pairs(b), pid
        # ν=3: the multiset of centre-neighbour tetrahedra differs, so A and B are not congruent.
        assert _multiset_tetrahedra(a) != _multiset_tetrahedra(b), pid
        # ... and the difference is not hidden by a rotation/reflection of the whole structure (sanity of the
        # tetrahedron check): a rotated, reflected copy of A has the same tetrahedra as A.
        mirrored = a.copy()
        mirrored.positions = (a.positions - a.positions[0]) @ (-_rotation(pid)).T
        assert _multiset_tetrahedra(mirrored) == _multiset_tetrahedra(a)


def test_teaching_set_with_the_engine(teaching_sample):
    from wkviz.hypers import Hypers
    from wkviz.engine.kernels import WignerKernel

    frames = teaching_sample
    res = WignerKernel(Hypers(density_scaling=None, nu_max=3, lambda_max=3, cutoff=4.0, cutoff_width=0.5, density_width=0.3)).compute(
        frames, atomic=True)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    centre = {(int(a.info["pair"]), a.info["label"]): offsets[s] + int(a.info["center"]) for s, a in enumerate(frames)}
    for pid in range(6):
        i, j = centre[(pid, "A")], centre[(pid, "B")]
        d2 = {}
        for nu in (1, 2, 3):
            K = res.K_atomic[nu]
            d2[nu] = (K[i, i] + K[j, j] - 2 * K[i, j]) / np.sqrt(K[i, i] * K[j, j])
        assert abs(d2[1]) < 1e-8 and abs(d2[2]) < 1e-8, (pid, d2)
        assert d2[3] > 1e-3, (pid, d2)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one specific sentence each
# ----------------------------------------------------------------------------------------------------------------

def _gz(text):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return buf.getvalue()


BAD_FILES = [
    # (name, content, expected message fragment)
    ("empty.xyz", b"", r"empty\.xyz is empty; it contains no structures"),
    ("blank.extxyz", b"\n  \n\n", r"blank\.extxyz is empty"),
    ("binary.xyz", bytes(range(256)) * 20, r"binary\.xyz looks like a binary file"),
    ("random.bin", np.random.default_rng(0).bytes(4000), r"random\.bin looks like a binary file"),
    ("too_few.xyz", b"3\n\nO 0 0 0\nH 0.96 0 0\n", r"structure 0 \(line 1\) declares 3 atoms but the file ends after 2 atom lines"),
    ("too_few_mid.xyz", b"3\n\nO 0 0 0\nH 0.96 0 0\n2\n\nH 0 0 0\nH 0 0 0.74\n",
     r"structure 0 \(line 1\) declares 3 atoms but only 2 atom lines follow \(line 5 is the start of another structure\)"),
    ("too_many.xyz", b"2\n\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n", r"structure 0 \(line 1\) declares 2 atoms but more atom lines follow \(line 5\)"),
    ("no_count.xyz", b"O 0 0 0\nH 0.96 0 0\n", r"line 1: expected the number of atoms of the first structure, found 'O 0 0 0'"),
    ("zero_atoms.xyz", b"3\n\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n0\n\n", r"structure 1: has no atoms"),
    ("nan.xyz", _xyz(WATER, (["H", "H"], [[0, 0, 0], [0, 0, float("nan")]])).encode(),
     r"structure 1: atom 1 has NaN or infinite coordinates"),
    ("inf.xyz", _xyz((["H", "H", "O"], [[0, 0, 0], [float("inf"), 0, 0], [0, float("-inf"), 1]])).encode(),
     r"structure 0: atoms 1, 2 have NaN or infinite coordinates"),
    ("unknown.xyz", _xyz(WATER, (["C", "Qq"], [[0, 0, 0], [1.2, 0, 0]])).encode(),
     r"structure 1, line 9: unknown element symbol 'Qq'"),
    ("lowercase.xyz", _xyz((["c", "O"], [[0, 0, 0], [1.2, 0, 0]])).encode(),
     r"unknown element symbol 'c' \(did you mean 'C'\? symbols are case-sensitive\)"),
    ("dummy.xyz", _xyz((["X", "O"], [[0, 0, 0], [1.2, 0, 0]])).encode(), r"structure 0: atom 0 is not a real element"),
    ("word_coord.xyz", b"2\n\nH 0 0 zero\nH 0 0 0.74\n", r"structure 0, line 3: coordinate 'zero' is not a number"),
    ("close.xyz", _xyz(WATER, WATER, (["C", "C", "H"], [[0, 0, 0], [1.5, 0, 0], [1.5, 0.0, 0.004]])).encode(),
     r"structure 2: two atoms 0\.00 Å apart \(atoms 1 and 2\)"),
    ("ragged.xyz", b"3\n\nO 0 0 0\nH 0.96 0 0 0.5\nH 0 0.96 0\n",
     r"structure 0 \(line 1\): atom lines have different numbers of columns \(4, 5\)"),
    ("ragged_props.extxyz", b'2\nProperties=species:S:1:pos:R:3:q:R:1\nH 0 0 0 0.1\nH 0 0 0.74\n',
     r"its Properties declare 5 columns but some atom lines have 4"),
    ("flat_cell.extxyz", b'2\nLattice="3 0 0 0 3 0 6 0 0" pbc="T T T"\nH 0 0 0\nH 0 0 0.74\n',
     r"structure 0: it is periodic \(pbc=TTT\) but its cell has zero volume"),
    ("zero_cell.extxyz", b'1\nLattice="0 0 0 0 0 0 0 0 0" pbc="T T T"\nAu 0 0 0\n', r"cell has zero volume"),
    ("flat_slab.extxyz", b'1\nLattice="3 0 0 6 0 0 0 0 10" pbc="T T F"\nAu 0 0 0\n',
     r"periodic \(pbc=TTF\) but its cell has zero area"),
    ("image.extxyz", b'2\nLattice="5 0 0 0 5 0 0 0 5" pbc="T T T"\nAu 0.02 1 1\nAu 4.97 1 1\n',
     r"structure 0: two atoms 0\.05 Å apart \(atoms 0 and 1, across the cell boundary\)"),
    ("tiny_cell.extxyz", b'1\nLattice="0.05 0 0 0 5 0 0 0 5" pbc="T T T"\nAu 0 0 0\n',
     r"atom 0 is 0\.05 Å from its own periodic image; the cell is too small"),
    ("bad.gz", b"\x1f\x8b\x08\x00garbage-not-gzip", r"bad\.gz is not a valid gzip file"),
    ("cut.xyz.gz", _gz(_xyz(*([WATER] * 50)))[:-12], r"cut\.xyz\.gz is a truncated gzip file"),
    ("mystery.zzz", b"this is some text\nwith no structure\n", r"cannot tell the file format of mystery\.zzz"),
    ("old.traj", b"PickleTrajectory" + b"\x80\x02}q\x00." * 10, r"old pickle-based ase trajectory, which wkviz will not unpickle"),
    ("broken.cif", b"data_x\n_cell_length_a 5\nloop_\n_atom_site_label\n", r"broken\.cif contains no structures that ase could read as cif"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_give_their_specific_message(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_structures(path)
    # The same bytes as an upload give the same message.
    with pytest.raises(InputError, match=message):
        read_structures(content, filename=name)


def test_several_problems_are_all_reported_one_sentence_each(tmp_path):
    text = _xyz(
        WATER,
        (["H", "H"], [[0, 0, 0], [0, 0, 0.01]]),
        WATER,
        (["O", "H"], [[0, 0, 0], [float("nan"), 0, 0]]),
    )
    with pytest.raises(InputError) as err:
        read_structures(text.encode(), filename="many.xyz")
    msg = str(err.value)
    assert "structure 1: two atoms 0.01 Å apart (atoms 0 and 1)" in msg
    assert "structure 3: atom 1 has NaN" in msg
    assert "structure 0" not in msg and "structure 2" not in msg
    assert "Traceback" not in msg and msg.count("\n") == 0


def test_many_problems_are_capped():
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.01]]) for _ in range(25)]
    with pytest.raises(InputError, match=r"structure 9: .*\(and 15 more problems\.\)"):
        validate_structures(frames)


def test_size_limits(tmp_path):
    text = _xyz(*([WATER] * 200))
    path = tmp_path / "big.xyz"
    path.write_text(text)
    with pytest.raises(InputError, match=r"big\.xyz is 0\.0 MiB, above the 0 MiB limit for one file; split it or raise max_bytes"):
        read_structures(path, max_bytes=1000)
    with pytest.raises(InputError, match=r"above the .* limit"):
        read_structures(text.encode(), filename="big.xyz", max_bytes=1000)
    # a small gzip that expands past the limit is refused too (no decompression bomb)
    bomb = _gz(text)
    assert len(bomb) < 1000
    with pytest.raises(InputError, match=r"uncompresses to more than"):
        read_structures(bomb, filename="big.xyz.gz", max_bytes=1000)
    assert len(read_structures(path, max_bytes=len(text))) == 200


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_structures(tmp_path / "nope.xyz")
    with pytest.raises(InputError, match="is a directory"):
        read_structures(tmp_path)
    with pytest.raises(InputError, match="no structures were given"):
        validate_structures([])


# ----------------------------------------------------------------------------------------------------------------
# Odd but valid input, formats, calculator results
# ----------------------------------------------------------------------------------------------------------------

def test_odd_but_valid_structures_load(tmp_path):
    text = _xyz(
        (["Ar"], [[0.0, 0.0, 0.0]]),                               # isolated atom
        (["Cu"] * 4, [[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]]),  # single element
        (["He", "He"], [[0, 0, 0], [0, 0, 25.0]]),                 # no neighbours within any cutoff
        (["H", "H"], [[0, 0, 0], [0, 0, MIN_DISTANCE * 1.01]]),    # just above the closeness threshold
    )
    frames = read_structures(text.encode(), filename="odd.xyz")
    assert [len(a) for a in frames] == [1, 4, 2, 2]
    s = summarize(frames)
    assert s["n_structures"] == 4 and s["elements"]["Cu"] == {"atoms": 4, "structures": 1}
    assert s["atoms_per_structure"]["histogram"] == {1: 1, 2: 2, 4: 1}


def test_element_only_in_test_set_is_handled():
    train = [Atoms("H2O", positions=WATER[1]), Atoms("CH4", positions=np.r_[np.zeros((1, 3)), np.eye(3), -np.ones((1, 3)) / 3 ** 0.5] * 1.1)]
    test = [Atoms("HF", positions=[[0, 0, 0], [0, 0, 0.92]])]
    counts, species = composition_counts(train)
    assert list(species) == [1, 6, 8]
    test_counts, test_species = composition_counts(test, species=species)
    assert list(test_species) == [1, 6, 8]
    np.testing.assert_array_equal(test_counts, [[1, 0, 0]])  # F has no column: it never occurs in training
    np.testing.assert_array_equal(composition_counts(test, species=["H", "F"])[0], [[1, 1]])
    with pytest.raises(InputError, match="unknown element symbol 'Fx'"):
        composition_counts(test, species=["H", "Fx"])


def test_other_formats_and_uploads(tmp_path):
    import ase.io
    from ase.build import bulk

    cu = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    cu.rattle(0.01, seed=1)
    for name, fmt in (("POSCAR", "vasp"), ("cu.cif", "cif"), ("cu.pdb", "proteindatabank"), ("cu.traj", "traj")):
        path = tmp_path / name
        ase.io.write(path, cu, format=fmt)
        frames = read_structures(path)
        assert len(frames) == 1 and frames[0].get_chemical_formula() == "Cu2", name
        assert frames[0].pbc.all(), name
        # writers may wrap atoms into the cell: compare cells and minimum-image distances
        np.testing.assert_allclose(frames[0].cell.cellpar(), cu.cell.cellpar(), atol=1e-3)
        np.testing.assert_allclose(frames[0].get_all_distances(mic=True), cu.get_all_distances(mic=True), atol=2e-3)
        up = read_structures(path.read_bytes(), filename=name)
        np.testing.assert_allclose(up[0].positions, frames[0].positions)
    # gzip, recognised from content whatever the name; plain xyz without a name is sniffed
    text = _xyz(WATER, WATER)
    assert len(read_structures(_gz(text), filename="w.xyz.gz")) == 2
    assert len(read_structures(_gz(text), filename="w.xyz")) == 2
    assert len(read_structures(_gz(text) + _gz(text), filename="w.xyz.gz")) == 4  # concatenated members
    assert len(read_structures(text.encode())) == 2
    assert len(read_structures(text.encode(), filename="w.xyz", index="-1")) == 1
    # a real third-party extxyz (librascal), if the shared data is present
    import pathlib

    shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "librascal_small_molecules-1000.xyz.gz"
    if shared.exists():
        frames = read_structures(shared, index="0:50")
        t = {x.key: x for x in describe_targets(frames)}
        assert t["dft_formation_energy_per_atom_in_eV"].unit == "eV"
        assert t["dft_formation_energy_per_atom_in_eV"].extensive is False
        assert "cutoff" not in t and "nneightol" not in t


def test_calculator_results_become_targets(tmp_path):
    import ase.io

    frames = []
    for k in range(3):
        a = Atoms("Cu4", positions=[[0, 0, 0], [1.8, 1.8, 0], [1.8, 0, 1.8], [0, 1.8, 1.8]], cell=[3.6] * 3, pbc=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        frames.append(a)
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, frames)  # ase writes the calculator's energy/forces/stress
    back = read_structures(path)
    for a, b in zip(frames, back):
        assert b.info["energy"] == pytest.approx(a.get_potential_energy())
        np.testing.assert_allclose(b.arrays["forces"], a.get_forces(), atol=1e-6)
        np.testing.assert_allclose(b.info["stress"], a.get_stress(voigt=False), atol=1e-8)  # Voigt -> 3x3
        c = b.copy()  # survives a copy (which drops the calculator)
        assert c.calc is None and c.info["energy"] == b.info["energy"]
    t = {x.key: x for x in describe_targets(back)}
    assert t["energy"].source == "calc" and t["energy"].kind == "scalar" and t["energy"].unit == "eV"
    assert t["stress"].kind == "tensor"
    # frames with a live single-point calculator and nothing copied: get_target reads the calculator
    live = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]) for _ in range(2)]
    for k, a in enumerate(live):
        a.calc = SinglePointCalculator(a, energy=-1.0 - k, stress=np.arange(6.0) + k)
    np.testing.assert_allclose(get_target(live, "energy"), [-1.0, -2.0])
    s = get_target(live, "stress")
    np.testing.assert_allclose(s[0], [[0, 5, 4], [5, 1, 3], [4, 3, 2]])  # Voigt xx yy zz yz xz xy
    assert {x.key: x.source for x in describe_targets(live)}["energy"] == "calc"


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------

def _frames_with_targets():
    rng = np.random.default_rng(3)
    frames = []
    for k in range(6):
        n = 2 + k
        a = Atoms(["C"] * n, positions=np.c_[np.arange(n) * 1.5, np.zeros(n), np.zeros(n)])
        a.info["energy_like"] = -10.0 * n + rng.normal()       # tracks n: guessed extensive
        a.info["mystery"] = rng.normal()                        # unknown, intensive
        a.info["dipole"] = rng.normal(size=3)
        a.info["polar9"] = rng.normal(size=9)
        a.info["id"] = k                                        # integer bookkeeping
        a.info["name"] = f"mol{k}"                              # string
        a.info["constant"] = 1.0                                # same everywhere
        a.arrays["shift"] = rng.normal(size=n)
        a.arrays["cs"] = rng.normal(size=(n, 2))
        a.arrays["tags2"] = np.arange(n)                        # integer per-atom array
        frames.append(a)
    return frames


def test_describe_targets_kinds_units_extensivity():
    frames = _frames_with_targets()
    t = {x.key: x for x in describe_targets(frames)}
    assert set(t) == {"energy_like", "mystery", "dipole", "polar9", "shift", "cs[0]", "cs[1]"}
    assert t["energy_like"] == TargetInfo("energy_like", "scalar", "", True, "info", 6)
    assert t["mystery"].extensive is False
    assert t["dipole"].kind == "vector" and t["dipole"].unit == "e·Å"
    assert t["polar9"].kind == "tensor"
    assert t["shift"] == TargetInfo("shift", "atomic", "", False, "arrays", 6)
    assert t["cs[1]"].kind == "atomic"
    assert get_target(frames, "polar9").shape == (6, 3, 3)
    np.testing.assert_array_equal(get_target(frames, "polar9")[2].ravel(), frames[2].info["polar9"])
    np.testing.assert_array_equal(get_target(frames, "cs[1]"), np.concatenate([a.arrays["cs"][:, 1] for a in frames]))
    assert get_target(frames, "shift").shape == (sum(len(a) for a in frames),)
    assert get_target(frames, "dipole").shape == (6, 3)
    s = summarize(frames)
    assert s["targets"]["mystery"]["n_valid"] == 6
    assert s["targets"]["energy_like"]["min"] == pytest.approx(get_target(frames, "energy_like").min())


def test_target_problems_name_the_structures():
    frames = _frames_with_targets()
    del frames[1].info["mystery"], frames[4].info["mystery"]
    with pytest.raises(InputError, match=r"target 'mystery' is missing or not numeric in 2 of 6 structures \(structures 1, 4\)"):
        get_target(frames, "mystery")
    frames[2].info["dipole"] = np.array([1.0, np.nan, 0.0])
    frames[5].info["dipole"] = np.array([np.inf, 0.0, 0.0])
    with pytest.raises(InputError, match=r"target 'dipole' is NaN or infinite in 2 of 6 structures \(structures 2, 5\)"):
        get_target(frames, "dipole")
    assert {x.key: x.n_valid for x in describe_targets(frames)}["dipole"] == 4
    frames[3].info["polar9"] = np.ones(4)
    with pytest.raises(InputError, match=r"target 'polar9' has inconsistent shapes: shape \(3, 3\) in structures 0, 1, 2, 4, 5; shape \(4,\) in structures 3"):
        get_target(frames, "polar9")
    frames[0].arrays["shift"] = np.ones((len(frames[0]), 2))
    with pytest.raises(InputError, match=r"target 'shift' has inconsistent shapes"):
        get_target(frames, "shift")
    with pytest.raises(InputError, match=r"no target 'U0' in these structures; available targets: energy_like"):
        get_target(frames, "U0")
    with pytest.raises(InputError, match="missing or not numeric in 6 of 6|no target 'name'"):
        get_target(frames, "name")


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------

def test_random_split_reproducible_and_complete():
    tr, te = random_split(100, 0.2, seed=7)
    tr2, te2 = random_split(100, 0.2, seed=7)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert len(te) == 20 and len(tr) == 80
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(100))
    assert not np.array_equal(random_split(100, 0.2, seed=8)[1], te)
    assert np.all(np.diff(te) > 0) and not np.all(np.diff(tr) > 0)  # test sorted, train shuffled
    assert len(random_split(10, 3, seed=0)[1]) == 3
    for bad in (0, 10, 0.0, 1.0, -1, True, "a"):
        with pytest.raises(InputError):
            random_split(10, bad, seed=0)
    with pytest.raises(InputError, match="at least 2 structures"):
        random_split(1, 0.5, seed=0)


def _naive_fps(D2, first, m):
    chosen = [first]
    while len(chosen) < m:
        best = max((i for i in range(len(D2)) if i not in chosen), key=lambda i: min(D2[i, j] for j in chosen))
        chosen.append(best)
    return chosen


def test_fps_split_spreads_points_and_matches_a_naive_oracle():
    # Three tight clusters on a line: FPS with 3 points must take one from each.
    x = np.concatenate([np.full(10, 0.0), np.full(10, 5.0), np.full(10, 11.0)]) + \
        np.random.default_rng(0).normal(scale=0.01, size=30)
    X = np.c_[x, np.ones_like(x)]
    K = X @ X.T  # linear kernel: d² = (x_i - x_j)²
    for seed in range(5):
        train, test = fps_split(K, 3, seed=seed)
        assert sorted(np.round(x[train] / 5.5).astype(int).tolist()) == [0, 1, 2]
        assert len(test) == 27 and set(train) | set(test) == set(range(30))
    # against a plain-Python greedy max-min on an RBF kernel
    pts = np.random.default_rng(1).normal(size=(40, 3))
    D2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    K = np.exp(-D2 / 4)
    train, _ = fps_split(K, 12, seed=3)
    d2k = np.diag(K)[:, None] + np.diag(K)[None] - 2 * K
    assert train.tolist() == _naive_fps(d2k, int(train[0]), 12)
    # FPS covers the data better than a random subset of the same size (max distance to the training set)
    cover_fps = d2k[:, train].min(axis=1).max()
    cover_rnd = d2k[:, random_split(40, 28, seed=0)[0]].min(axis=1).max()
    assert cover_fps < cover_rnd
    with pytest.raises(InputError, match="square"):
        fps_split(np.zeros((3, 4, 4)), 2)
    with pytest.raises(InputError, match="not symmetric"):
        fps_split(np.triu(np.ones((4, 4))), 2)
    with pytest.raises(InputError, match="NaN"):
        fps_split(np.full((3, 3), np.nan), 1)
    with pytest.raises(InputError, match="n_train=4"):
        fps_split(np.eye(4), 4)


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------

def test_summarize_gold(gold_sample):
    s = summarize(gold_sample)
    assert s["n_structures"] == 500 and s["n_periodic"] == 200 and s["n_nonperiodic"] == 300
    assert s["elements"] == {"Au": {"atoms": s["n_atoms_total"], "structures": 500}}
    assert s["atoms_per_structure"]["min"] == 4 and s["atoms_per_structure"]["max"] == 40
    assert s["targets"]["energy"]["unit"] == "eV" and s["targets"]["stress"]["n_valid"] == 200
    assert sum(s["atoms_per_structure"]["histogram"].values()) == 500


# ----------------------------------------------------------------------------------------------------------------
# The one neighbour list (wkviz.geometry.neighbor_pairs)
# ----------------------------------------------------------------------------------------------------------------

def _pair_set(i, j, D):
    return sorted((int(a), int(b), tuple(np.round(d, 6))) for a, b, d in zip(i, j, D))


def test_neighbor_pairs_below_the_engine_cutoffs_are_ases_pairs(gold_sample, qm9_sample):
    """Short cutoffs (the closest-pair check) take a KD-tree over lattice images instead of ase's neighbor_list;
    the pairs, their vectors and the grouping by centre must be the same, also for skewed and partly periodic
    cells where more than one image per direction can hold a neighbour."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    from wkviz.geometry import neighbor_pairs

    rng = np.random.default_rng(0)
    skew = Atoms("H3", positions=rng.random((3, 3)) * 2, cell=[[2, 0, 0], [1.9, 0.3, 0], [0.5, 0.2, 1.5]], pbc=True)
    wire = Atoms("H2", positions=[[0, 0, 0], [0.3, 0.2, 0.7]], cell=[0.2, 0, 0], pbc=[True, False, False])
    slab = bulk("Au", "fcc", a=4.08, cubic=True)
    slab.pbc = [True, True, False]
    dup = Atoms("H400", positions=np.concatenate([rng.random((399, 3)) * 8, [[1.0, 1.0, 1.0]]]))
    dup.positions[7] = [1.0, 1.0, 1.03]
    cases = gold_sample[::50] + qm9_sample[:5] + [skew, wire, slab, dup]
    for atoms in cases:
        for cutoff in (0.1, 0.45):
            i, j, D = neighbor_pairs(atoms, cutoff)
            assert np.all(np.diff(i) >= 0)
            assert _pair_set(i, j, D) == _pair_set(*neighbor_list("ijD", atoms, cutoff, self_interaction=False))
    assert len(neighbor_pairs(wire, 0.45)[0]) > 0 and len(neighbor_pairs(dup, 0.1)[0]) == 2


def test_neighbor_pairs_is_ases_list_for_the_engine(gold_sample):
    """From the smallest cutoff a Hypers accepts, the pairs are ase's, in its order: the kernels depend on it."""
    from ase.neighborlist import neighbor_list

    from wkviz.geometry import neighbor_pairs
    from wkviz.hypers import Hypers

    for atoms in gold_sample[::100]:
        for cutoff in (Hypers.spec("cutoff").bounds[0], 5.0):
            got, ref = neighbor_pairs(atoms, cutoff), neighbor_list("ijD", atoms, cutoff, self_interaction=False)
            for a, b in zip(got, ref):
                assert np.array_equal(a, b)
    lone = Atoms("Ar", positions=[[0, 0, 0]])
    assert all(len(x) == 0 for x in neighbor_pairs(lone, 5.0))
