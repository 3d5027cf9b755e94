"""The Wigner iteration: real Clebsch–Gordan products of ν=1 kernels, with parity, in Numba.

Notation (MATH.md §4–7). For one pair of environments, F^ν_{λσ}[μ, μ'] are the D-coefficients of h(R)^ν,
kept per parity σ and truncated at λ ≤ L. F^1_l = s_l H^l, and

    F^{ν+1}_{λσ}[μ,μ'] = Σ C^{l1 l2 λ}[m1,m2,μ] C^{l1 l2 λ}[m1',m2',μ'] F^ν_{l1σ1}[m1,m1'] F^1_{l2}[m2,m2'],
    σ = σ1 (−1)^{l1+l2+λ}.

The kernel is k^ν_{λσ} = t_λ F^ν_{λσ}. ``normalization="exact"``: s_l = 1, t_λ = 8π²/(2λ+1), so
k^ν = ∫dR D^λ(R) h(R)^ν. ``"reference"`` (lab-cosmo code): s_l = 8π²/(2l+1), t_λ = 1.

A *plan* turns this into flat term lists: every coefficient (λσμμ' ← l1σ1m1m1' × l2m2m2') is one term
(out_row, a_row, b_row, coef) with coef = C·C, all rows living in one scratch array per chunk of pairs.
The Numba kernel then runs ``F[out] += coef·F[a]·F[b]`` over a chunk of pairs at a time, so that pairs are
the contiguous, SIMD dimension. The reduced schedule stops the equivariant recursion at n_eq = ⌈ν_max/2⌉
and gets the invariants of higher order by contractions k^ν = t_0 Σ_{lσ} F^{n_eq}_{lσ} : F^{ν−n_eq}_{lσ}/(2l+1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .spherical import real_cg

EIGHT_PI2 = 8.0 * math.pi**2

# Pairs per chunk: the SIMD dimension. 32 doubles = 8 AVX2 vectors per row; a chunk's scratch stays in L2.
CHUNK = 32


@dataclass(frozen=True)
class Plan:
    """Flat term lists of one iteration schedule (see module docstring).

    Attributes
    ----------
    n_rows : int
        Rows of the per-chunk scratch: row 0 is constant 1, rows 1..n_seed the packed ν=1 blocks.
    step_rows, step_ptr, step_a, step_b, step_coef
        Rows computed by CG steps (in order) and their CSR term lists.
    out_ptr, out_a, out_b, out_coef
        CSR term lists of the outputs: per ν the invariant, then requested tensor components.
    outputs : tuple
        Description of each output: ("inv", nu) or ("tensor", nu, lam, mu, mu2).
    """

    lambda_max: int
    nu_max: int
    normalization: str
    seed_scale: np.ndarray
    n_seed: int
    n_rows: int
    step_rows: np.ndarray
    step_ptr: np.ndarray
    step_a: np.ndarray
    step_b: np.ndarray
    step_coef: np.ndarray
    out_ptr: np.ndarray
    out_a: np.ndarray
    out_b: np.ndarray
    out_coef: np.ndarray
    outputs: tuple
    n_terms_step: int
    n_terms_out: int

    def output_index(self, kind, *key) -> int:
        return self.outputs.index((kind,) + tuple(key))


def _norm_factors(normalization, L):
    if normalization == "exact":
        seed = np.ones(L + 1)
        t = np.array([EIGHT_PI2 / (2 * lam + 1) for lam in range(L + 1)])
    else:
        seed = np.array([EIGHT_PI2 / (2 * l + 1) for l in range(L + 1)])
        t = np.ones(L + 1)
    return seed, t


@functools.lru_cache(maxsize=64)
def build_plan(lambda_max: int, nu_max: int, schedule: str, normalization: str, tensor_lams: tuple = ()) -> Plan:
    """Term lists for one (L, ν_max, schedule, normalization, requested tensor λs) combination.

    Tensor outputs (λ in ``tensor_lams``, parity +1) force the full recursion up to ν_max; invariants are
    identical in both schedules (MATH.md §7), only the cost differs.
    """
    L = lambda_max
    seed_scale, t = _norm_factors(normalization, L)
    if any(lam > L for lam in tensor_lams):
        raise ValueError(f"tensor outputs of order λ={max(tensor_lams)} need lambda_max ≥ {max(tensor_lams)}")
    full = schedule == "full" or bool(tensor_lams)
    n_eq = nu_max if full else nu_max - nu_max // 2

    # rows: 0 = constant one; then blocks per order. blocks[nu] = {(lam, parity): first_row}
    blocks = {1: {}}
    row = 1
    for l in range(L + 1):
        blocks[1][(l, 1)] = row
        row += (2 * l + 1) ** 2
    n_seed = row - 1

    step_rows, ptr, ta, tb, tc = [], [0], [], [], []
    cg = {}

    def coupling(l1, l2, lam):
        key = (l1, l2, lam)
        if key not in cg:
            c = real_cg(l1, l2, lam)
            nz = [(m1, m2, mu, c[m1, m2, mu]) for m1, m2, mu in zip(*np.nonzero(c))]
            by_mu = {}
            for m1, m2, mu, v in nz:
                by_mu.setdefault(mu, []).append((m1, m2, v))
            cg[key] = by_mu
        return cg[key]

    # invariant-only requests need at the last full step only λ=0; tensors need all λ up to their order
    for nu in range(2, n_eq + 1):
        lam_top = L
        if full and not tensor_lams and nu == nu_max:
            lam_top = 0
        new = {}
        terms = {}
        for (l1, s1), a0 in blocks[nu - 1].items():
            for l2 in range(L + 1):
                b0 = blocks[1][(l2, 1)]
                for lam in range(abs(l1 - l2), min(l1 + l2, lam_top) + 1):
                    parity = s1 * (-1) ** (l1 + l2 + lam)
                    by_mu = coupling(l1, l2, lam)
                    d1, d2, d = 2 * l1 + 1, 2 * l2 + 1, 2 * lam + 1
                    for mu in range(d):
                        for mu2 in range(d):
                            key = (lam, parity, mu, mu2)
                            lst = terms.setdefault(key, [])
                            for m1, m2, c1 in by_mu.get(mu, ()):
                                for m1p, m2p, c2 in by_mu.get(mu2, ()):
                                    lst.append((a0 + m1 * d1 + m1p, b0 + m2 * d2 + m2p, c1 * c2))
        for lam in range(L + 1):
            for parity in (1, -1):
                if not any(k[0] == lam and k[1] == parity for k in terms):
                    continue
                new[(lam, parity)] = row
                d = 2 * lam + 1
                for mu in range(d):
                    for mu2 in range(d):
                        lst = terms.get((lam, parity, mu, mu2), [])
                        step_rows.append(row + mu * d + mu2)
                        for a, b, c in lst:
                            ta.append(a)
                            tb.append(b)
                            tc.append(c)
                        ptr.append(len(ta))
                row += d * d
        blocks[nu] = new

    outputs = []
    optr, oa, ob, oc = [0], [], [], []

    def emit(desc, terms):
        outputs.append(desc)
        for a, b, c in terms:
            oa.append(a)
            ob.append(b)
            oc.append(c)
        optr.append(len(oa))

    for nu in range(1, nu_max + 1):
        if nu <= n_eq:
            emit(("inv", nu), [(blocks[nu][(0, 1)], 0, t[0])])
        else:
            a_blocks, b_blocks = blocks[n_eq], blocks[nu - n_eq]
            terms = []
            for (l, parity), a0 in a_blocks.items():
                if (l, parity) not in b_blocks:
                    continue
                b0 = b_blocks[(l, parity)]
                d = 2 * l + 1
                for k in range(d * d):
                    terms.append((a0 + k, b0 + k, t[0] / d))
            emit(("inv", nu), terms)
    for lam in tensor_lams:
        d = 2 * lam + 1
        for nu in range(1, nu_max + 1):
            r0 = blocks[nu].get((lam, 1))
            for mu in range(d):
                for mu2 in range(d):
                    terms = [] if r0 is None else [(r0 + mu * d + mu2, 0, t[lam])]
                    emit(("tensor", nu, lam, mu, mu2), terms)

    as_int = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return Plan(
        lambda_max=L, nu_max=nu_max, normalization=normalization,
        seed_scale=np.concatenate([np.full((2 * l + 1) ** 2, seed_scale[l]) for l in range(L + 1)]),
        n_seed=n_seed, n_rows=row,
        step_rows=as_int(step_rows), step_ptr=as_int(ptr), step_a=as_int(ta), step_b=as_int(tb),
        step_coef=np.asarray(tc, dtype=np.float64),
        out_ptr=as_int(optr), out_a=as_int(oa), out_b=as_int(ob), out_coef=np.asarray(oc, dtype=np.float64),
        outputs=tuple(outputs), n_terms_step=len(ta), n_terms_out=len(oa),
    )


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _iterate(seed, n_rows, step_rows, step_ptr, step_a, step_b, step_coef, out_ptr, out_a, out_b, out_coef, out):
    # seed[c, n_seed, CH] -> out[c, n_out, CH]; each chunk c is independent
    n_chunks = seed.shape[0]
    n_seed = seed.shape[1]
    ch = seed.shape[2]
    n_out = out_ptr.shape[0] - 1
    for c in prange(n_chunks):
        f = np.zeros((n_rows, ch))
        for q in range(ch):
            f[0, q] = 1.0
        for k in range(n_seed):
            for q in range(ch):
                f[1 + k, q] = seed[c, k, q]
        for o in range(step_rows.shape[0]):
            r = step_rows[o]
            for t in range(step_ptr[o], step_ptr[o + 1]):
                a = step_a[t]
                b = step_b[t]
                w = step_coef[t]
                for q in range(ch):
                    f[r, q] += w * f[a, q] * f[b, q]
        for o in range(n_out):
            for q in range(ch):
                out[c, o, q] = 0.0
            for t in range(out_ptr[o], out_ptr[o + 1]):
                a = out_a[t]
                b = out_b[t]
                w = out_coef[t]
                for q in range(ch):
                    out[c, o, q] += w * f[a, q] * f[b, q]


def iterate(plan: Plan, seed_blocks: np.ndarray) -> np.ndarray:
    """Run a plan on packed ν=1 blocks.

    Parameters
    ----------
    plan : Plan
    seed_blocks : ndarray of shape (n_pairs, n_seed)
        Packed H^l blocks of each pair (``density.block_offsets`` layout), *before* the seed scale s_l.

    Returns
    -------
    ndarray of shape (n_pairs, n_outputs)
        The plan's outputs (invariants k^ν for ν = 1..ν_max, then tensor components) of every pair.
    """
    n_pairs, n_seed = seed_blocks.shape
    if n_seed != plan.n_seed:
        raise ValueError(f"seed has {n_seed} components, plan expects {plan.n_seed}")
    n_chunks = max(1, -(-n_pairs // CHUNK))
    padded = np.zeros((n_chunks * CHUNK, n_seed))
    padded[:n_pairs] = seed_blocks * plan.seed_scale[None, :]
    chunked = np.ascontiguousarray(padded.reshape(n_chunks, CHUNK, n_seed).transpose(0, 2, 1))
    out = np.empty((n_chunks, len(plan.outputs), CHUNK))
    _iterate(chunked, plan.n_rows, plan.step_rows, plan.step_ptr, plan.step_a, plan.step_b, plan.step_coef,
             plan.out_ptr, plan.out_a, plan.out_b, plan.out_coef, out)
    return out.transpose(0, 2, 1).reshape(n_chunks * CHUNK, -1)[:n_pairs]

