"""Kernel gradients (wkviz.engine.gradients) against central finite differences, the energy route's kernels,
translation and strain: molecules (QM9 defaults: species coupling, hydrogen weights, radial weight) and periodic
gold cells, every ν ≤ nu_max, both schedules."""

from __future__ import annotations

import ase.build
import numpy as np
import pytest

from wkviz.data.samples import load_sample
from wkviz.engine.gradients import _harmonics_with_gradients, active_kernel, kernel_gradients
from wkviz.engine.kernels import WignerKernel
from wkviz.errors import InputError, MemoryBudgetError
from wkviz.hypers import Hypers

GOLD = Hypers(nu_max=3, lambda_max=2, cutoff=4.0, cutoff_width=0.5, density_width=0.5, radial_scale=None)
EPS = 1e-5


@pytest.fixture(scope="module")
def gold():
    frames = load_sample("gold")
    cluster = next(a for a in frames if not a.pbc.any() and len(a) <= 12)
    cell = next(a for a in frames if a.pbc.any() and len(a) <= 8)
    active = [next(a for a in frames if not a.pbc.any() and len(a) >= 13)]
    return cluster, cell, active


def _molecule():
    atoms = ase.build.molecule("CH3OH")
    atoms.rattle(stdev=0.05, seed=3)
    return atoms


def _fd_positions(atoms, B, centres, hypers, atom_ids):
    out = np.zeros((hypers.nu_max + 1, len(atom_ids), 3, len(centres)))
    for k, a in enumerate(atom_ids):
        for x in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, x] += EPS
            minus.positions[a, x] -= EPS
            Kp = kernel_gradients([plus], B, centres, hypers, gradients=False).K[:, 0]
            Km = kernel_gradients([minus], B, centres, hypers, gradients=False).K[:, 0]
            out[:, k, x] = (Kp - Km) / (2 * EPS)
    return out


def _relative(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_harmonic_gradients_are_finite_differences():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 3))
    _, grad = _harmonics_with_gradients(v, 4)
    for x in range(3):
        d = np.zeros(3)
        d[x] = 1e-6
        fd = (_harmonics_with_gradients(v + d, 4)[0] - _harmonics_with_gradients(v - d, 4)[0]) / 2e-6
        assert np.abs(fd - grad[:, :, x]).max() < 1e-8


def test_kernels_equal_the_energy_route(gold):
    cluster, cell, active = gold
    centres = [0, 4, 9]
    res = kernel_gradients([cluster, cell], active, centres, GOLD)
    ref = WignerKernel(GOLD).compute([cluster, cell], active, centers_B=centres)
    assert _relative(res.K, ref.K) < 1e-8
    mol = _molecule()
    h = Hypers(nu_max=3, lambda_max=2)
    res = kernel_gradients([mol], [mol], [0, 1, 3], h)
    ref = WignerKernel(h).compute([mol], [mol], centers_B=[0, 1, 3])
    assert _relative(res.K, ref.K) < 1e-8


@pytest.mark.parametrize("schedule", ["reduced", "full"])
def test_position_gradients_are_central_differences_on_a_gold_cluster_and_cell(gold, schedule):
    cluster, cell, active = gold
    h = GOLD.replace(schedule=schedule)
    centres = [1, 6]
    res = kernel_gradients([cluster, cell], active, centres, h)
    for s, atoms in enumerate([cluster, cell]):
        start = 0 if s == 0 else len(cluster)
        ids = [0, len(atoms) - 1]
        fd = _fd_positions(atoms, active, centres, h, ids)
        for nu in range(1, h.nu_max + 1):  # every body order on its own
            an = res.dK[nu, [start + a for a in ids]]
            assert _relative(an, fd[nu]) < 1e-7, (s, nu)
    assert np.all(res.dK[0] == 0)


def test_position_gradients_of_a_molecule_with_qm9_defaults():
    mol = _molecule()
    h = Hypers(nu_max=4, lambda_max=2)  # coupling 0.95, hydrogen weights, radial weight: the defaults
    centres = [0, 1, 2]  # C, O and a hydrogen environment
    res = kernel_gradients([mol], [ase.build.molecule("CH3OH")], centres, h)
    fd = _fd_positions(mol, [ase.build.molecule("CH3OH")], centres, h, range(len(mol)))
    for nu in range(1, 5):
        assert _relative(res.dK[nu], fd[nu]) < 1e-7, nu


def test_translation_invariance_zero_sum_and_strain_of_a_cell(gold):
    cluster, cell, active = gold
    centres = [2, 5]
    res = kernel_gradients([cluster, cell], active, centres, GOLD)
    n = len(cluster)
    # moving every atom together changes nothing: Σ_a ∂K/∂r_a = 0 (cluster and cell alike)
    for rows in (slice(0, n), slice(n, None)):
        total = res.dK[:, rows].sum(axis=1)
        assert np.abs(total).max() < 1e-10 * np.abs(res.dK).max()
    # strain derivative of the cell against finite differences of the deformed cell
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        vals = []
        for sign in (1, -1):
            F = np.eye(3)
            F[a, b] += sign * EPS
            at = cell.copy()
            at.set_cell(cell.cell[:] @ F.T, scale_atoms=False)
            at.positions = cell.positions @ F.T
            vals.append(kernel_gradients([at], active, centres, GOLD, gradients=False).K[:, 0])
        fd = (vals[0] - vals[1]) / (2 * EPS)
        an = res.dK_strain[:, 1, a, b]
        assert _relative(an[1:], fd[1:]) < 1e-7, (a, b)


def test_active_kernel_is_the_atom_kernel(gold):
    _, _, active = gold
    centres = [0, 3, 8]
    K = active_kernel(active, centres, GOLD)
    ref = WignerKernel(GOLD).compute(active, atomic=True)
    assert _relative(K, ref.K_atomic[:, centres][:, :, centres]) < 1e-8


def test_bad_requests_are_refused_up_front(gold):
    cluster, _, active = gold
    with pytest.raises(MemoryBudgetError, match="kernel gradients need"):
        kernel_gradients([cluster] * 10, active, list(range(10)), GOLD, memory_budget=1000)
    with pytest.raises(InputError, match="centers_B holds atom index"):
        kernel_gradients([cluster], active, [10**6], GOLD)


def test_weighted_gradients_are_the_contracted_full_gradients(gold):
    cluster, cell, active = gold
    centres = [0, 3, 7, 11]
    W = np.random.default_rng(2).normal(size=(GOLD.nu_max + 1, len(centres)))
    full = kernel_gradients([cluster, cell], active, centres, GOLD)
    res = kernel_gradients([cluster, cell], active, centres, GOLD, weights=W)
    assert res.dK is None
    assert np.allclose(res.energy, np.einsum("vnm,vm->n", full.K, W), rtol=1e-13, atol=0)
    ref = np.einsum("vaxm,vm->ax", full.dK, W)
    assert np.abs(res.energy_gradient - ref).max() <= 1e-12 * np.abs(ref).max()
    ref = np.einsum("vnabm,vm->nab", full.dK_strain, W)
    assert np.abs(res.energy_strain - ref).max() <= 1e-12 * np.abs(ref).max()
