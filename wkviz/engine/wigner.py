"""The Wigner iteration: real Clebsch–Gordan products of ν=1 kernels, with parity, in Numba.

Notation (MATH.md §4–7). For one pair of environments, F^ν_{λσ}[μ, μ'] are the D-coefficients of h(R)^ν,
kept per parity σ and truncated at λ ≤ L. F^1_l = s_l H^l, and

    F^{ν+1}_{λσ}[μ,μ'] = Σ C^{l1 l2 λ}[m1,m2,μ] C^{l1 l2 λ}[m1',m2',μ'] F^ν_{l1σ1}[m1,m1'] F^1_{l2}[m2,m2'],
    σ = σ1 (−1)^{l1+l2+λ}.

The kernel is k^ν_{λσ} = t_λ F^ν_{λσ}. ``normalization="exact"``: s_l = 1, t_λ = 8π²/(2λ+1), so
k^ν = ∫dR D^λ(R) h(R)^ν. ``"reference"`` (lab-cosmo code): s_l = 8π²/(2l+1), t_λ = 1.

A *plan* turns this into one flat program: every row of a per-pair scratch vector (row 0 = 1, then the packed
ν=1 blocks, then the blocks of each order, then the outputs) that is not an input is a sum of terms
coef·row[a]·row[b], with coef = C·C. The reduced schedule stops the equivariant recursion at
n_eq = ⌈ν_max/2⌉ and gets the invariants of higher order by contractions
k^ν = t_0 Σ_{lσ} F^{n_eq}_{lσ} : F^{ν−n_eq}_{lσ}/(2l+1); these outputs are rows of the same program.

Performance notes (BENCHMARKS.md has the numbers):
* pairs are the SIMD dimension: the scratch holds CHUNK pairs per row, so every term is CHUNK/LANES vector
  multiplies and fused multiply-adds over contiguous memory, with the coefficient baked into a broadcast;
* at the 1→2 step both factors are F^1 of the same pair, so the terms (a, b) and (b, a) are merged
  (15 875 → 8 041 terms at L=3);
* one term is added by ``_add_term``, which spells the CHUNK-wide update out as LANES-wide vector operations
  (see there why), and the accumulator of the row being computed stays in vector registers across its terms;
* the kernel reads the ν=1 blocks straight from wherever the caller keeps them (packed per pair, or the
  matrix products of the radial-basis route) through a gather table, so no per-pair seed array is built.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

import numba
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .spherical import real_cg

EIGHT_PI2 = 8.0 * math.pi**2


def _vector_lanes() -> int:
    """Doubles per vector register of the CPU Numba compiles for: 8 with AVX-512, else 4 (AVX2; older CPUs
    split each 4-wide operation in two, with the same results)."""
    from numba.core import config

    if config.CPU_FEATURES is not None:
        return 8 if "+avx512f" in config.CPU_FEATURES else 4
    if config.CPU_NAME is not None:  # a named (e.g. generic, portable) target: assume no AVX-512
        return 4
    import llvmlite.binding as llvm

    return 8 if llvm.get_host_cpu_features().get("avx512f", False) else 4


# Doubles per vector operation of _add_term.
LANES = _vector_lanes()
# Pairs per chunk, the SIMD dimension: 8 vectors per row. The accumulator (8 registers) and each term's
# temporaries fit the vector registers, and the rows the 1→2 step reads (85 × 512 B at L=3 with AVX-512)
# fit in L1. Measured (AVX-512) against 32 and 128 pairs: both slower (more loop overhead per flop; L1 misses).
CHUNK = 8 * LANES
# Fused multiply-adds allowed; no nnan/ninf, so NaN or inf inputs stay visible.
_FASTMATH = {"contract"}


@intrinsic
def _add_term(typingctx, scratch, acc, blk, a, b, w):
    """acc[blk, :] += w · scratch[blk, a, :] · scratch[blk, b, :] for the CHUNK pairs of a chunk.

    Why an intrinsic: written as a loop over the CHUNK pairs, LLVM vectorises it at the width it prefers for
    this CPU (256 bits even on AVX-512 CPUs, its default there) and keeps the accumulator in memory between
    terms. Spelled out as CHUNK/LANES operations on LANES-wide vectors, each term costs one multiply and one
    fused multiply-add per LANES pairs, with the loads folded in, and LLVM keeps the accumulator in registers
    across the term loop (the parallel loop's arrays are marked as not aliasing). Measured on the 2-core
    AVX-512 machine: 1.5-1.6× the throughput of the plain loop (unrolled by 8 terms).

    ``a`` and ``b`` must be valid rows: there are no bounds or negative-index checks.
    """
    ok = (isinstance(scratch, types.Array) and scratch.ndim == 3 and scratch.layout == "C"
          and isinstance(acc, types.Array) and acc.ndim == 2 and acc.layout == "C"
          and scratch.dtype == types.float64 and acc.dtype == types.float64)
    if not ok:
        return None
    sig = types.void(scratch, acc, blk, a, b, w)

    def codegen(context, builder, signature, args):
        s_ty, acc_ty = signature.args[0], signature.args[1]
        s_arr = context.make_array(s_ty)(context, builder, args[0])
        acc_arr = context.make_array(acc_ty)(context, builder, args[1])
        blk_v, a_v, b_v, w_v = args[2:]
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(ir.DoubleType(), LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                             f"llvm.fma.v{LANES}f64")
        zero = ir.Constant(i64, 0)
        row_a = cgutils.get_item_pointer(context, builder, s_ty, s_arr, [blk_v, a_v, zero])
        row_b = cgutils.get_item_pointer(context, builder, s_ty, s_arr, [blk_v, b_v, zero])
        row_acc = cgutils.get_item_pointer(context, builder, acc_ty, acc_arr, [blk_v, zero])
        # broadcast w to all lanes
        w_vec = builder.insert_element(ir.Constant(vec, ir.Undefined), w_v, ir.Constant(i32, 0))
        w_vec = builder.shuffle_vector(w_vec, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(i32, LANES),
                                                                                         [0] * LANES))

        def at(row, v):
            return builder.bitcast(builder.gep(row, [ir.Constant(i64, v * LANES)]), vec.as_pointer())

        for v in range(CHUNK // LANES):
            x_a = builder.load(at(row_a, v), align=8)
            x_b = builder.load(at(row_b, v), align=8)
            total = builder.load(at(row_acc, v), align=8)
            # (w·a)·b + acc, rounded as the plain loop with contraction would
            builder.store(builder.call(fma, [builder.fmul(x_a, w_vec), x_b, total]), at(row_acc, v), align=8)
        return context.get_dummy_value()

    return sig, codegen


@dataclass(frozen=True)
class Plan:
    """The flat program of one iteration schedule (see module docstring).

    Attributes
    ----------
    n_seed : int
        Packed ν=1 components, Σ_l (2l+1)² (``density.block_offsets`` layout); scratch rows 1..n_seed.
    n_rows : int
        Rows of the per-pair scratch: constant, seed, CG blocks and outputs.
    seed_scale : ndarray of shape (n_seed,)
        s_l of each seed component.
    rows, ptr, a, b, coef
        Rows computed (in order) and their CSR term lists ``row[rows[k]] = Σ coef[t]·row[a[t]]·row[b[t]]``,
        t in ``ptr[k]:ptr[k+1]`` (``ptr`` unsigned: the kernel's term index then needs no negative-index
        check).
    out_rows : ndarray
        Scratch row of each output.
    outputs : tuple
        Description of each output: ("inv", nu) or ("tensor", nu, lam, mu, mu2).
    n_terms_step, n_terms_out : int
        Terms of the CG steps and of the outputs.
    n_terms : int
        Terms the kernel executes per pair (their sum; the cost model).
    """

    lambda_max: int
    nu_max: int
    normalization: str
    seed_scale: np.ndarray
    n_seed: int
    n_rows: int
    rows: np.ndarray
    ptr: np.ndarray
    a: np.ndarray
    b: np.ndarray
    coef: np.ndarray
    out_rows: np.ndarray
    outputs: tuple
    n_terms_step: int
    n_terms_out: int
    n_terms: int

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
    """The program for one (L, ν_max, schedule, normalization, requested tensor λs) combination.

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

    program = []  # (row, {(a, b): coef})
    cg = {}

    def coupling(l1, l2, lam):
        key = (l1, l2, lam)
        if key not in cg:
            c = real_cg(l1, l2, lam)
            by_mu = {}
            for m1, m2, mu in zip(*np.nonzero(c)):
                by_mu.setdefault(mu, []).append((m1, m2, c[m1, m2, mu]))
            cg[key] = by_mu
        return cg[key]

    def add(terms, a, b, c):
        # both factors ν=1 rows (the 1→2 step): row[a]·row[b] = row[b]·row[a], keep one canonical order
        if a <= n_seed and b <= n_seed and a > b:
            a, b = b, a
        terms[(a, b)] = terms.get((a, b), 0.0) + c

    # invariant-only requests need at the last full step only λ=0; tensors need all λ up to their order
    for nu in range(2, n_eq + 1):
        lam_top = L
        if full and not tensor_lams and nu == nu_max:
            lam_top = 0
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
                            lst = terms.setdefault((lam, parity, mu, mu2), {})
                            for m1, m2, c1 in by_mu.get(mu, ()):
                                for m1p, m2p, c2 in by_mu.get(mu2, ()):
                                    add(lst, a0 + m1 * d1 + m1p, b0 + m2 * d2 + m2p, c1 * c2)
        new = {}
        for lam in range(L + 1):
            for parity in (1, -1):
                if not any(k[0] == lam and k[1] == parity for k in terms):
                    continue
                new[(lam, parity)] = row
                d = 2 * lam + 1
                for mu in range(d):
                    for mu2 in range(d):
                        program.append((row + mu * d + mu2, terms.get((lam, parity, mu, mu2), {})))
                row += d * d
        blocks[nu] = new
    n_terms_step = sum(sum(1 for c in tm.values() if c != 0.0) for _, tm in program)

    outputs = []
    out_rows = []

    def emit(desc, terms):
        nonlocal row
        outputs.append(desc)
        out_rows.append(row)
        tm = {}
        for a, b, c in terms:
            tm[(a, b)] = tm.get((a, b), 0.0) + c
        program.append((row, tm))
        row += 1

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
                    emit(("tensor", nu, lam, mu, mu2), [] if r0 is None else [(r0 + mu * d + mu2, 0, t[lam])])
    n_terms_out = sum(sum(1 for c in tm.values() if c != 0.0) for _, tm in program) - n_terms_step

    rows, ptr, ta, tb, tc = [], [0], [], [], []
    for r, tm in program:
        rows.append(r)
        # sorted by (a, b): neighbouring terms then read neighbouring rows
        for (a, b), c in sorted(tm.items()):
            if c != 0.0:
                ta.append(a)
                tb.append(b)
                tc.append(c)
        ptr.append(len(ta))

    as_int = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return Plan(
        lambda_max=L, nu_max=nu_max, normalization=normalization,
        seed_scale=np.concatenate([np.full((2 * l + 1) ** 2, seed_scale[l]) for l in range(L + 1)]),
        n_seed=n_seed, n_rows=row, rows=as_int(rows), ptr=np.asarray(ptr, dtype=np.uint64), a=as_int(ta),
        b=as_int(tb),
        coef=np.asarray(tc, dtype=np.float64), out_rows=as_int(out_rows), outputs=tuple(outputs),
        n_terms_step=n_terms_step, n_terms_out=n_terms_out, n_terms=len(ta),
    )


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _run(src, gather, scale, pair_i, pair_j, program, scratch, acc, out):
    """Run a plan's program on every pair; out[o, p] = output o of pair p.

    src : flat buffer holding the ν=1 blocks; seed component k of pair p is
        scale[k] · src[gather[k, 0] + pair_i[p]·gather[k, 1] + pair_j[p]·gather[k, 2]].
    program : (rows, ptr, a, b, coef, out_rows) of the Plan.
    scratch : (n_blocks, n_rows, CHUNK) work rows, one slab per parallel block.
    acc : (n_blocks, CHUNK) accumulator of the row being computed, one per parallel block.
    """
    rows, ptr, ta, tb, tc, out_rows = program
    n_pairs = pair_i.shape[0]
    n_seed = gather.shape[0]
    n_blocks = scratch.shape[0]
    n_chunks = (n_pairs + CHUNK - 1) // CHUNK
    per_block = (n_chunks + n_blocks - 1) // n_blocks
    # The body indexes scratch[blk, row, q] and acc[blk, q] directly instead of taking views: Numba then finds
    # no aliases inside the parallel loop and tells LLVM that its array arguments do not overlap. Accumulating
    # in acc (not in the scratch row being computed) then lets LLVM keep the accumulator in registers while
    # the row's terms stream through.
    for blk in prange(n_blocks):
        for c in range(blk * per_block, min(n_chunks, (blk + 1) * per_block)):
            p0 = c * CHUNK
            n = min(CHUNK, n_pairs - p0)
            for q in range(CHUNK):
                scratch[blk, 0, q] = 1.0
            for k in range(n_seed):
                base = gather[k, 0]
                si = gather[k, 1]
                sj = gather[k, 2]
                s_k = scale[k]
                for q in range(n):
                    scratch[blk, 1 + k, q] = s_k * src[base + pair_i[p0 + q] * si + pair_j[p0 + q] * sj]
                for q in range(n, CHUNK):
                    scratch[blk, 1 + k, q] = 0.0
            for k in range(rows.shape[0]):
                for q in range(CHUNK):
                    acc[blk, q] = 0.0
                for t in range(ptr[k], ptr[k + 1]):
                    _add_term(scratch, acc, blk, ta[t], tb[t], tc[t])
                r = rows[k]
                for q in range(CHUNK):
                    scratch[blk, r, q] = acc[blk, q]
            for o in range(out_rows.shape[0]):
                r = out_rows[o]
                for q in range(n):
                    out[o, p0 + q] = scratch[blk, r, q]


def packed_gather(plan: Plan) -> np.ndarray:
    """Gather table for seed blocks packed per pair: src = seed[n_pairs, n_seed], pair_i = p, pair_j = 0."""
    k = np.arange(plan.n_seed, dtype=np.int64)
    return np.stack([k, np.full(plan.n_seed, plan.n_seed), np.zeros(plan.n_seed, dtype=np.int64)], axis=1)


def matrix_gather(plan: Plan, n_i: int, n_j: int) -> tuple[np.ndarray, int]:
    """Gather table for the radial-basis layout, and the length of its buffer.

    The layout: for l = 0..L one after another, the matrix H^l[(i, m), (j, m')] of shape (n_i (2l+1), n_j (2l+1)),
    row-major (what ``density.basis_nu1_blocks`` writes into ``out``).
    """
    g = np.zeros((plan.n_seed, 3), dtype=np.int64)
    offset = 0
    k = 0
    for l in range(plan.lambda_max + 1):
        d = 2 * l + 1
        for m in range(d):
            for mm in range(d):
                g[k] = (offset + m * n_j * d + mm, d * n_j * d, d)
                k += 1
        offset += n_i * d * n_j * d
    return g, offset


def _n_blocks(n_pairs):
    # one contiguous range of chunks per thread: every chunk costs the same, so this is balanced
    return int(max(1, min(numba.get_num_threads(), -(-n_pairs // CHUNK))))


def run_plan(plan: Plan, src: np.ndarray, gather: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray) -> np.ndarray:
    """Outputs of every pair, shape (n_outputs, n_pairs), reading the ν=1 blocks through a gather table.

    Parameters
    ----------
    plan : Plan
    src : ndarray
        Buffer holding the ν=1 blocks (any shape; read as flat).
    gather : ndarray of shape (n_seed, 3)
        ``packed_gather`` or ``matrix_gather`` table: component k of pair p (before the seed scale s_l) is
        src.flat[gather[k, 0] + pair_i[p] gather[k, 1] + pair_j[p] gather[k, 2]].
    pair_i, pair_j : ndarray of int
        Pair coordinates in the layout.
    """
    src = np.ascontiguousarray(src, dtype=np.float64).reshape(-1)
    pair_i = np.ascontiguousarray(pair_i, dtype=np.int64)
    pair_j = np.ascontiguousarray(pair_j, dtype=np.int64)
    gather = np.ascontiguousarray(gather, dtype=np.int64)
    if gather.shape != (plan.n_seed, 3):
        raise ValueError(f"gather table has shape {gather.shape}, plan expects ({plan.n_seed}, 3)")
    n_pairs = len(pair_i)
    if len(pair_j) != n_pairs:
        raise ValueError("pair_i and pair_j differ in length")
    out = np.empty((len(plan.outputs), n_pairs))
    if n_pairs == 0:
        return out
    # the kernel does not bounds-check its reads: check the extreme addresses here (all strides are ≥ 0)
    if pair_i.min() < 0 or pair_j.min() < 0 or gather.min() < 0 or \
            (gather[:, 0] + pair_i.max() * gather[:, 1] + pair_j.max() * gather[:, 2]).max() >= src.size:
        raise ValueError("the gather table and pair indices address outside the source buffer")
    n_blocks = _n_blocks(n_pairs)
    scratch = np.empty((n_blocks, plan.n_rows, CHUNK))
    acc = np.empty((n_blocks, CHUNK))
    program = (plan.rows, plan.ptr, plan.a, plan.b, plan.coef, plan.out_rows)
    _run(src, gather, plan.seed_scale, pair_i, pair_j, program, scratch, acc, out)
    return out


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
    seed_blocks = np.asarray(seed_blocks, dtype=np.float64)
    n_pairs, n_seed = seed_blocks.shape
    if n_seed != plan.n_seed:
        raise ValueError(f"seed has {n_seed} components, plan expects {plan.n_seed}")
    idx = np.arange(n_pairs, dtype=np.int64)
    return run_plan(plan, seed_blocks, packed_gather(plan), idx, np.zeros_like(idx)).T
