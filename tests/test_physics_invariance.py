"""Symmetry laws of the public kernels (MATH.md §9): rotations, inversion, permutations, translations,
periodic images, smoothness at the cutoff, symmetric requests and thread safety.

Every law is checked on the output of ``WignerKernel(...).compute`` only; the Wigner matrices D²(Q) used for
the λ=2 law are built here from Cartesian Y_2 (tests/reference.py), never taken from wkviz.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference as ref
from wkviz.hypers import Hypers

HYPERS = Hypers(density_scaling=None, radial_scale=None, nu_max=4, lambda_max=3, cutoff=4.0, cutoff_width=0.6, density_width=0.4)
RTOL = 1e-10


def assert_rel_close(got, want, rtol, what):
    """max |got - want| ≤ rtol · max |want|, with a message naming the quantity."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    scale = np.abs(want).max()
    err = np.abs(got - want).max()
    assert scale > 0, f"{what}: expected array is identically zero, the test would be vacuous"
    assert err <= rtol * scale, f"{what}: max|Δ| = {err:.3e}, scale {scale:.3e}, rel {err / scale:.2e} > {rtol:.0e}"


def transformed(atoms, Q=None, shift=None):
    """Copy of ``atoms`` with positions (and cell) mapped by x -> Q x + shift."""
    out = atoms.copy()
    if Q is not None:
        out.positions = out.positions @ Q.T
        if out.pbc.any():
            out.set_cell(np.asarray(out.get_cell()) @ Q.T, scale_atoms=False)
    if shift is not None:
        out.positions = out.positions + shift
        if out.pbc.any():
            out.wrap()
    return out


def d2(Q):
    return ref.wigner_d_real(2, Q, ylm=lambda l, v: ref.real_y2_cartesian(v))


def rotations_for(kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == "inversion":
        return [-np.eye(3)] * n
    if kind == "proper":
        return [ref.random_rotation(rng) for _ in range(n)]
    if kind == "improper":
        return [ref.random_rotation(rng, improper=True) for _ in range(n)]
    return [ref.random_rotation(rng, improper=bool(k % 2)) for k in range(n)]


@pytest.fixture(scope="module")
def baseline():
    """Symmetric request on the molecules + periodic cell, computed once for the module."""
    from conftest import make_molecules, make_periodic_cell
    from wkviz.engine.kernels import WignerKernel

    frames = make_molecules() + [make_periodic_cell()]
    res = WignerKernel(hypers=HYPERS).compute(frames, atomic=True, tensor_rank=(1, 2))
    return frames, res


def test_baseline_shapes_and_nontrivial(baseline):
    frames, res = baseline
    n, nat, nu = len(frames), sum(len(f) for f in frames), HYPERS.nu_max
    assert res.K.shape == (nu + 1, n, n)
    assert res.K_atomic.shape == (nu + 1, nat, nat)
    assert res.K_vector.shape == (nu + 1, n, 3, n, 3)
    assert res.K_tensor.shape == (nu + 1, n, 5, n, 5)
    for v in range(1, nu + 1):
        # rattled, asymmetric structures: every output is far from zero, so the laws below are not vacuous
        assert np.abs(res.K_vector[v]).max() > 1e-3 * np.abs(res.K[v]).max(), f"K_vector[{v}] is ~0"
        assert np.abs(res.K_tensor[v]).max() > 1e-3 * np.abs(res.K[v]).max(), f"K_tensor[{v}] is ~0"
    assert np.all(res.K_vector[0] == 0) and np.all(res.K_tensor[0] == 0)


@pytest.mark.parametrize("kind", ["proper", "improper", "mixed", "inversion"])
def test_rotation_and_inversion_laws(engine, baseline, kind):
    """K, K_atomic invariant; K_vector(QA, B) = Q K; K_tensor(QA, B) = D²(Q) K; both sides for A = B."""
    frames, res0 = baseline
    Qs = rotations_for(kind, len(frames), seed={"proper": 1, "improper": 2, "mixed": 3, "inversion": 4}[kind])
    rotated = [transformed(f, Q) for f, Q in zip(frames, Qs)]
    D2s = [d2(Q) for Q in Qs]

    one = engine(rotated, HYPERS, frames_B=frames, atomic=True, tensor_rank=(1, 2))  # K(QA, B)
    both = engine(rotated, HYPERS, atomic=True, tensor_rank=(1, 2))  # K(QA, QA)
    for nu in range(HYPERS.nu_max + 1):
        assert_rel_close(one.K[nu], res0.K[nu], RTOL, f"K[{nu}](QA, B) vs K(A, B) [{kind}]")
        assert_rel_close(both.K[nu], res0.K[nu], RTOL, f"K[{nu}](QA, QA) vs K(A, A) [{kind}]")
        assert_rel_close(one.K_atomic[nu], res0.K_atomic[nu], RTOL, f"K_atomic[{nu}](QA, B) [{kind}]")
        if nu == 0:
            continue
        v0, t0 = res0.K_vector[nu], res0.K_tensor[nu]
        want_v1 = np.einsum("aij,ajbk->aibk", np.array(Qs), v0)
        want_v2 = np.einsum("aij,ajbk,blk->aibl", np.array(Qs), v0, np.array(Qs))
        want_t1 = np.einsum("aij,ajbk->aibk", np.array(D2s), t0)
        want_t2 = np.einsum("aij,ajbk,blk->aibl", np.array(D2s), t0, np.array(D2s))
        assert_rel_close(one.K_vector[nu], want_v1, RTOL, f"K_vector[{nu}](QA, B) = Q K(A, B) [{kind}]")
        assert_rel_close(both.K_vector[nu], want_v2, RTOL, f"K_vector[{nu}](QA, QB) = Q K Qᵀ [{kind}]")
        assert_rel_close(one.K_tensor[nu], want_t1, RTOL, f"K_tensor[{nu}](QA, B) = D²(Q) K [{kind}]")
        assert_rel_close(both.K_tensor[nu], want_t2, RTOL, f"K_tensor[{nu}](QA, QB) = D² K D²ᵀ [{kind}]")
    if kind == "inversion":
        # polar vectors flip: K(-A, B) = -K(A, B); rank-2 tensors do not
        assert_rel_close(one.K_vector[1:], -res0.K_vector[1:], RTOL, "K_vector(-A, B) = -K_vector(A, B)")
        assert_rel_close(one.K_tensor[1:], res0.K_tensor[1:], RTOL, "K_tensor(-A, B) = K_tensor(A, B)")


def test_right_side_law_for_vectors_and_tensors(engine, baseline):
    """K(A, QB) = K(A, B) Qᵀ and K(A, B) D²(Q)ᵀ, mixed proper/improper Q per structure."""
    frames, res0 = baseline
    Qs = rotations_for("mixed", len(frames), seed=5)
    rotated = [transformed(f, Q) for f, Q in zip(frames, Qs)]
    res = engine(frames, HYPERS, frames_B=rotated, atomic=True, tensor_rank=(1, 2))
    for nu in range(1, HYPERS.nu_max + 1):
        assert_rel_close(res.K[nu], res0.K[nu], RTOL, f"K[{nu}](A, QB)")
        want_v = np.einsum("aibk,blk->aibl", res0.K_vector[nu], np.array(Qs))
        want_t = np.einsum("aibk,blk->aibl", res0.K_tensor[nu], np.array([d2(Q) for Q in Qs]))
        assert_rel_close(res.K_vector[nu], want_v, RTOL, f"K_vector[{nu}](A, QB) = K Qᵀ")
        assert_rel_close(res.K_tensor[nu], want_t, RTOL, f"K_tensor[{nu}](A, QB) = K D²(Q)ᵀ")


def test_permutation_invariance(engine, baseline):
    frames, res0 = baseline
    rng = np.random.default_rng(6)
    perms = [rng.permutation(len(f)) for f in frames]
    shuffled = [f[p] for f, p in zip(frames, perms)]
    res = engine(shuffled, HYPERS, atomic=True, tensor_rank=(1, 2))
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in frames])])
    order = np.concatenate([o + p for o, p in zip(offsets[:-1], perms)])  # new atom k = old atom order[k]
    for nu in range(HYPERS.nu_max + 1):
        assert_rel_close(res.K[nu], res0.K[nu], RTOL, f"K[{nu}] after shuffling atoms")
        assert_rel_close(res.K_atomic[nu], res0.K_atomic[nu][np.ix_(order, order)], RTOL,
                         f"K_atomic[{nu}] after shuffling atoms (rows follow the atoms)")
        if nu:
            assert_rel_close(res.K_vector[nu], res0.K_vector[nu], RTOL, f"K_vector[{nu}] after shuffling")
            assert_rel_close(res.K_tensor[nu], res0.K_tensor[nu], RTOL, f"K_tensor[{nu}] after shuffling")


def test_translation_invariance(engine, baseline):
    frames, res0 = baseline
    rng = np.random.default_rng(7)
    moved = [transformed(f, shift=rng.uniform(-9, 9, size=3)) for f in frames]  # periodic cell is re-wrapped
    res = engine(moved, HYPERS, atomic=True, tensor_rank=(1, 2))
    for nu in range(HYPERS.nu_max + 1):
        assert_rel_close(res.K[nu], res0.K[nu], RTOL, f"K[{nu}] after translation")
        assert_rel_close(res.K_atomic[nu], res0.K_atomic[nu], RTOL, f"K_atomic[{nu}] after translation")
        if nu:
            assert_rel_close(res.K_vector[nu], res0.K_vector[nu], RTOL, f"K_vector[{nu}] after translation")
            assert_rel_close(res.K_tensor[nu], res0.K_tensor[nu], RTOL, f"K_tensor[{nu}] after translation")


def test_periodic_supercell_gives_the_same_atom_kernels(engine, periodic_cell):
    """A cell and its 2×1×1 supercell describe the same crystal: per-atom kernels are equal."""
    cell = periodic_cell
    sup = cell.repeat((2, 1, 1))  # atoms k and k + len(cell) are images of atom k
    n = len(cell)
    res = engine([cell, sup], HYPERS, atomic=True, tensor_rank=(1, 2))
    img = np.concatenate([np.arange(n), np.tile(np.arange(n), 2)])  # all 3n atoms -> cell atom
    for nu in range(1, HYPERS.nu_max + 1):
        kc = res.K_atomic[nu][:n, :n]
        assert_rel_close(res.K_atomic[nu], kc[np.ix_(img, img)], RTOL, f"K_atomic[{nu}] cell vs supercell atoms")
        assert_rel_close(res.K[nu], res.K[nu][0, 0] * np.array([[1, 2], [2, 4]]), RTOL,
                         f"K[{nu}]: supercell sums = 2× / 4× the cell's")
        v = res.K_vector[nu]
        assert_rel_close(v[1, :, 1, :], 4 * v[0, :, 0, :], RTOL, f"K_vector[{nu}] supercell = 4× cell")
        t = res.K_tensor[nu]
        assert_rel_close(t[0, :, 1, :], 2 * t[0, :, 0, :], RTOL, f"K_tensor[{nu}] cell–supercell = 2× cell")


def _crossing_structure(d):
    """C at the origin, H at distance d on a generic axis: only the C–H distance crosses r_c = 4 Å."""
    from ase import Atoms

    u = np.array([0.8, 0.36, 0.48])
    u /= np.linalg.norm(u)
    pos = [[0, 0, 0], d * u, [0.2, 1.1, -0.3], [-0.9, -0.5, 0.6], [0.5, -1.0, -0.7]]
    return Atoms("CHOHN", positions=pos)


def test_smooth_when_a_neighbour_crosses_the_cutoff(engine, molecules):
    """Value and first derivative of every kernel are continuous at r = r_c (shifted cosine is C¹)."""
    rc = HYPERS.cutoff
    probes = molecules[:3]
    eps = 2e-3
    ks = np.array([-3, -2, -1, 1, 2, 3])

    def outputs(d):
        res = engine([_crossing_structure(d)] + probes, HYPERS, atomic=True, tensor_rank=(1, 2))
        return np.concatenate([res.K[1:, 0].ravel(), res.K_atomic[1:, 0].ravel(),
                               res.K_vector[1:, 0].ravel(), res.K_tensor[1:, 0].ravel()])

    vals = np.array([outputs(rc + k * eps) for k in ks])
    # the neighbour matters: well inside the cutoff the outputs differ from the far side
    inside = outputs(rc - 0.3)
    assert np.abs(inside - vals[-1]).max() > 1e-3 * np.abs(vals).max()

    def extrapolate(side):
        x = ks[side] * eps
        coef = np.polynomial.polynomial.polyfit(x, vals[side], 2)  # per output column
        return coef[0], coef[1]

    left_v, left_d = extrapolate(slice(0, 3))
    right_v, right_d = extrapolate(slice(3, 6))
    scale = np.abs(vals).max()
    slope_scale = np.abs(inside - vals[-1]).max() / 0.3
    jump_v = np.abs(left_v - right_v).max()
    jump_d = np.abs(left_d - right_d).max()
    assert jump_v <= 1e-6 * scale, f"value jumps at r_c by {jump_v:.3e} (scale {scale:.3e})"
    assert jump_d <= 1e-3 * slope_scale, f"derivative jumps at r_c by {jump_d:.3e} (slope scale {slope_scale:.3e})"
    # and the change across the cutoff vanishes as the step shrinks
    steps = [np.abs(outputs(rc - e) - outputs(rc + e)).max() for e in (1e-2, 1e-3, 1e-4)]
    assert steps[1] < 0.2 * steps[0] and steps[2] < 0.2 * steps[1], f"|K(r_c-ε) - K(r_c+ε)| = {steps}"


def test_symmetric_request_equals_explicit_copy_and_is_symmetric(engine, baseline):
    frames, res0 = baseline
    res = engine(frames, HYPERS, frames_B=[f.copy() for f in frames], atomic=True, tensor_rank=(1, 2))
    for nu in range(HYPERS.nu_max + 1):
        assert_rel_close(res0.K[nu], res.K[nu], 1e-12, f"K[{nu}] symmetric request vs B = copy of A")
        assert_rel_close(res0.K_atomic[nu], res.K_atomic[nu], 1e-12, f"K_atomic[{nu}] symmetric vs copy")
        assert_rel_close(res0.K[nu], res0.K[nu].T, 1e-14, f"K[{nu}] is symmetric")
        assert_rel_close(res0.K_atomic[nu], res0.K_atomic[nu].T, 1e-14, f"K_atomic[{nu}] is symmetric")
        if nu:
            assert_rel_close(res0.K_vector[nu], res.K_vector[nu], 1e-12, f"K_vector[{nu}] symmetric vs copy")
            assert_rel_close(res0.K_tensor[nu], res.K_tensor[nu], 1e-12, f"K_tensor[{nu}] symmetric vs copy")
            for name in ("K_vector", "K_tensor"):
                arr = getattr(res0, name)[nu]
                assert_rel_close(arr, arr.transpose(2, 3, 0, 1), 1e-14, f"{name}[{nu}](A, A) is symmetric")


_THREAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    import numpy as np
    sys.path.insert(0, {tests!r})
    from conftest import make_molecules, make_periodic_cell
    from wkviz.hypers import Hypers
    from wkviz.engine.kernels import WignerKernel

    jobs = [
        (make_molecules(), Hypers(density_scaling=None, radial_scale=None, nu_max=4, lambda_max=3, cutoff=4.0, cutoff_width=0.6, density_width=0.4)),
        ([make_periodic_cell()] + make_molecules()[:2],
         Hypers(density_scaling=None, radial_scale=None, nu_max=3, lambda_max=2, cutoff=4.5, cutoff_width=0.5, density_width=0.5, schedule="full")),
    ]

    def run(frames, h):
        r = WignerKernel(hypers=h).compute(frames, atomic=True, tensor_rank=(1, 2))
        return [r.K, r.K_atomic, r.K_vector, r.K_tensor]

    sequential = [run(*job) for job in jobs]
    worst = 0.0
    for rep in range(3):
        out = [None, None]
        threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, run(*jobs[k]))) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(2):
            for a, b in zip(out[k], sequential[k]):
                worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    print(json.dumps({{"worst_rel": worst}}))
    """
)


def test_two_threads_give_the_sequential_results(engine):
    """Two concurrent computations equal sequential ones (run in a subprocess: a threading-layer abort must
    fail this test, not kill the test session)."""
    script = _THREAD_SCRIPT.format(tests=str(pathlib.Path(__file__).resolve().parent))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, f"concurrent computation crashed (rc={proc.returncode}): {proc.stderr[-2000:]}"
    worst = json.loads(proc.stdout.strip().splitlines()[-1])["worst_rel"]
    assert worst <= 1e-14, f"concurrent results differ from sequential ones by {worst:.2e} relative"
