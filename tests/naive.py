"""Slow, plain-NumPy oracles for the Numba kernels (compared element-wise in test_engine_internals.py)."""

import math

import numpy as np

from wkviz.engine.spherical import real_cg

EIGHT_PI2 = 8 * math.pi**2


def cg_product(f_nu, f_one, lambda_max, lam_top=None):
    """One step of the recursion on dicts {(λ, parity): matrix}, straight from MATH.md §4–5."""
    lam_top = lambda_max if lam_top is None else lam_top
    out = {}
    for (l1, s1), a in f_nu.items():
        for (l2, s2), b in f_one.items():
            for lam in range(abs(l1 - l2), min(l1 + l2, lam_top) + 1):
                c = real_cg(l1, l2, lam)
                parity = s1 * s2 * (-1) ** (l1 + l2 + lam)
                # F[μ, μ'] = Σ C[m1, m2, μ] C[m1', m2', μ'] A[m1, m1'] B[m2, m2']
                block = np.einsum("abu,cdv,ac,bd->uv", c, c, a, b)
                key = (lam, parity)
                out[key] = out.get(key, 0.0) + block
    return out


def wigner_invariants(h_blocks, nu_max, lambda_max, normalization="exact"):
    """Invariant k^ν_{0,+} for ν = 1..nu_max of one pair from its ν=1 blocks H^l, by the full recursion."""
    if normalization == "exact":
        seed = {(l, 1): h_blocks[l] for l in range(lambda_max + 1)}
        t0 = EIGHT_PI2
    else:
        seed = {(l, 1): EIGHT_PI2 / (2 * l + 1) * h_blocks[l] for l in range(lambda_max + 1)}
        t0 = 1.0
    f = dict(seed)
    out = [t0 * f[(0, 1)][0, 0]]
    for _ in range(2, nu_max + 1):
        f = cg_product(f, seed, lambda_max)
        out.append(t0 * f[(0, 1)][0, 0])
    return np.array(out), f


def wigner_tensor_blocks(h_blocks, nu_max, lambda_max, lam):
    """k^ν_{λ,+} (exact normalization) for ν = 1..nu_max, full recursion."""
    seed = {(l, 1): h_blocks[l] for l in range(lambda_max + 1)}
    f = dict(seed)
    t = EIGHT_PI2 / (2 * lam + 1)
    out = [t * f[(lam, 1)]]
    for _ in range(2, nu_max + 1):
        f = cg_product(f, seed, lambda_max)
        out.append(t * f.get((lam, 1), np.zeros((2 * lam + 1, 2 * lam + 1))))
    return out
