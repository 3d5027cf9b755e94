"""Gradients of structure-to-environment Wigner kernels with respect to atomic positions and cell strain.

What a force-trained sparse model needs (the GAP route): for structures A and fixed *active* environments c_m,
the invariant sum kernels K^ν(A, c_m) = Σ_{i∈A, Z_i=Z_m} w_i k^ν(i, c_m) (the ``centers_B`` kernels of
:class:`wkviz.engine.kernels.WignerKernel`) and their first derivatives ∂K^ν/∂r_a for every atom a of A, plus
the strain derivative ∂K^ν/∂ε_{αβ} = Σ_{i, j∈i} (r_ij)_β ∂K^ν/∂(r_ij)_α of periodic cells (stress = (1/V) ∂E/∂ε).
The active environments do not move, so no second derivatives are needed.

The chain rule, step by step (the same schedule, parity labels and normalisation as the energy kernels):

1. density coefficients c_i[l, f, m] = Σ_{j∈i} w(r_ij) φ_ln(r_ij) Y_lm(r̂_ij) (f = channel·n_max + n, species
   mixing applied afterwards, as in :class:`~wkviz.engine.density.DensityExpansion`) and their derivatives
   with respect to each neighbour vector r_ij: (wφ)' Y r̂ + wφ ∇Y;
2. ν=1 blocks H^l(i, c) = Σ_f c_i[l, f, :] ⊗ c_c[l, f, :];
3. the Wigner iteration runs forward on every pair and then backwards (reverse mode over the plan's flat
   program, :func:`_forward_adjoint`), which gives ∂k^ν(i, c)/∂H^l[m, m'] for every ν;
4. ∂k^ν/∂c_i = Σ_m' G^l[m, m'] c_c[l, f, m'], contracted with step 1 per neighbour, then scattered to the atoms
   (+ on neighbour j, − on centre i; periodic images of i cancel) and into the strain derivative.

The radial functions φ_ln are the optimal basis of :func:`wkviz.engine.density.radial_basis`, interpolated here
by cubic Hermite splines on its table (values and fourth-order finite-difference slopes): the interpolant is C¹,
so kernels and their gradients are exact derivatives of one smooth function (the energy route's 4-point
Lagrange interpolant has kinks at the nodes). The kernels agree with the energy route to ~1e-9 relative.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..errors import InputError, MemoryBudgetError
from ..hypers import Hypers
from ..runtime import ENGINE_LOCK, check_cancel
from .density import block_offsets, radial_basis, species_mixing
from .kernels import DEFAULT_MEMORY_BUDGET, _as_centres, _as_frames, _centre_environments
from .neighbors import environments_for
from .spherical import _sph_norms
from .wigner import build_plan

__all__ = ["ActiveEnvironments", "KernelGradients", "active_kernel", "gradient_bytes", "kernel_gradients",
           "prepare_active"]


# ----------------------------------------------------------------------------------------------------------------
# spherical harmonics with their gradients


@njit(cache=True)
def _sph_grad_into(x, y, z, l_max, norms, q, dq, cs, out, dout):
    # Y_lm(r̂) = P_lm(x, y, z) on the unit sphere, P = N_lm Q_l^m(z)·Re/Im (x+iy)^m (as sph_harm_into); out = P,
    # dout[:, k] = ∂P/∂(x, y, z)[k] as if x, y, z were independent (projected onto the sphere by the caller)
    for m in range(l_max + 1):
        if m == 0:
            q[0, 0] = 1.0
            dq[0, 0] = 0.0
        else:
            q[m, m] = q[m - 1, m - 1] * (2 * m - 1)
            dq[m, m] = 0.0
        if m + 1 <= l_max:
            q[m + 1, m] = (2 * m + 1) * z * q[m, m]
            dq[m + 1, m] = (2 * m + 1) * q[m, m]
        for l in range(m + 2, l_max + 1):
            q[l, m] = ((2 * l - 1) * z * q[l - 1, m] - (l + m - 1) * q[l - 2, m]) / (l - m)
            dq[l, m] = ((2 * l - 1) * (q[l - 1, m] + z * dq[l - 1, m]) - (l + m - 1) * dq[l - 2, m]) / (l - m)
    # cs[m] = (Re, Im) of (x + iy)^m
    cs[0, 0] = 1.0
    cs[0, 1] = 0.0
    for m in range(1, l_max + 1):
        cs[m, 0] = cs[m - 1, 0] * x - cs[m - 1, 1] * y
        cs[m, 1] = cs[m - 1, 1] * x + cs[m - 1, 0] * y
    for m in range(l_max + 1):
        c = cs[m, 0]
        s = cs[m, 1]
        if m > 0:
            dcx, dsx = m * cs[m - 1, 0], m * cs[m - 1, 1]
            dcy, dsy = -m * cs[m - 1, 1], m * cs[m - 1, 0]
        else:
            dcx = dsx = dcy = dsy = 0.0
        for l in range(m, l_max + 1):
            base = l * l + l
            v = norms[l, m] * q[l, m]
            dv = norms[l, m] * dq[l, m]
            if m == 0:
                out[base] = v
                dout[base, 0] = 0.0
                dout[base, 1] = 0.0
                dout[base, 2] = dv
            else:
                out[base + m] = v * c
                dout[base + m, 0] = v * dcx
                dout[base + m, 1] = v * dcy
                dout[base + m, 2] = dv * c
                out[base - m] = v * s
                dout[base - m, 0] = v * dsx
                dout[base - m, 1] = v * dsy
                dout[base - m, 2] = dv * s


@njit(cache=True)
def _harmonics_with_gradients(vectors, l_max):
    """Y_lm(r̂) (n, (L+1)²) and ∇_r Y_lm (n, (L+1)², 3) of each vector r (non-zero)."""
    n = vectors.shape[0]
    nl = (l_max + 1) ** 2
    out = np.zeros((n, nl))
    grad = np.zeros((n, nl, 3))
    norms = _sph_norms(l_max)
    q = np.zeros((l_max + 1, l_max + 1))
    dq = np.zeros((l_max + 1, l_max + 1))
    cs = np.zeros((l_max + 1, 2))
    dp = np.zeros((nl, 3))
    for k in range(n):
        r = math.sqrt(vectors[k, 0] ** 2 + vectors[k, 1] ** 2 + vectors[k, 2] ** 2)
        u0, u1, u2 = vectors[k, 0] / r, vectors[k, 1] / r, vectors[k, 2] / r
        _sph_grad_into(u0, u1, u2, l_max, norms, q, dq, cs, out[k], dp)
        # ∂r̂/∂r = (I − r̂r̂ᵀ)/r
        for t in range(nl):
            radial = dp[t, 0] * u0 + dp[t, 1] * u1 + dp[t, 2] * u2
            grad[k, t, 0] = (dp[t, 0] - radial * u0) / r
            grad[k, t, 1] = (dp[t, 1] - radial * u1) / r
            grad[k, t, 2] = (dp[t, 2] - radial * u2) / r
    return out, grad


# ----------------------------------------------------------------------------------------------------------------
# radial functions: C¹ cubic Hermite interpolation of the optimal basis' table


@njit(cache=True)
def _hermite(r, table, slope, h):
    n_l, n_n, n_g = table.shape
    val = np.zeros((r.shape[0], n_l, n_n))
    der = np.zeros((r.shape[0], n_l, n_n))
    for k in range(r.shape[0]):
        t = r[k] / h
        g = int(t)
        if g > n_g - 2:
            g = n_g - 2
        u = t - g
        u2 = u * u
        u3 = u2 * u
        h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1.0, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
        d00, d10, d01, d11 = 6 * u2 - 6 * u, 3 * u2 - 4 * u + 1.0, -6 * u2 + 6 * u, 3 * u2 - 2 * u
        for l in range(n_l):
            for n in range(n_n):
                a, b = table[l, n, g], table[l, n, g + 1]
                sa, sb = h * slope[l, n, g], h * slope[l, n, g + 1]
                val[k, l, n] = h00 * a + h10 * sa + h01 * b + h11 * sb
                der[k, l, n] = (d00 * a + d10 * sa + d01 * b + d11 * sb) / h
    return val, der


class _HermiteRadial:
    """φ_ln(r) and φ'_ln(r) from the table of a :class:`~wkviz.engine.density.RadialBasis`."""

    def __init__(self, basis):
        table = basis.table
        h = basis.spacing
        slope = np.gradient(table, h, axis=2, edge_order=2)
        # fourth-order central differences inside (the table is smooth on the scale of its spacing)
        slope[:, :, 2:-2] = (-table[:, :, 4:] + 8 * table[:, :, 3:-1] - 8 * table[:, :, 1:-3]
                             + table[:, :, :-4]) / (12 * h)
        self.table = np.ascontiguousarray(table)
        self.slope = np.ascontiguousarray(slope)
        self.spacing = float(h)
        self.n_max = basis.n_max
        self.l_max = basis.l_max

    def evaluate(self, r):
        r = np.ascontiguousarray(np.asarray(r, dtype=np.float64).ravel())
        return _hermite(r, self.table, self.slope, self.spacing)


def _weights_and_slopes(distances, numbers, hypers):
    """w(r) (cutoff function × radial weight × hydrogen weight) of each neighbour and dw/dr."""
    r = np.asarray(distances, dtype=np.float64)
    rc, width = hypers.cutoff, hypers.cutoff_width
    t = np.clip((r - rc + width) / width, 0.0, 1.0)
    fc = 0.5 * (1.0 + np.cos(np.pi * t))
    inside = (t > 0.0) & (t < 1.0)
    dfc = np.where(inside, -0.5 * np.pi / width * np.sin(np.pi * t), 0.0)
    if hypers.radial_scale is None:
        u, du = np.ones_like(r), np.zeros_like(r)
    else:
        r0, m = float(hypers.radial_scale), float(hypers.radial_exponent)
        p = (r / r0) ** m
        u = 1.0 / (1.0 + p)
        du = -m * (r / r0) ** (m - 1.0) / r0 * u * u
    w = fc * u
    dw = dfc * u + fc * du
    if hypers.hydrogen_weight != 1.0:
        hw = np.where(numbers == 1, float(hypers.hydrogen_weight), 1.0)
        w, dw = w * hw, dw * hw
    return w, dw


class _Density:
    """Density coefficients of a set of environments (and, on request, their neighbour-vector derivatives)."""

    def __init__(self, hypers, channels):
        self.hypers = hypers
        self.L = hypers.lambda_max
        self.radial = _HermiteRadial(radial_basis(hypers))
        self.n_max = self.radial.n_max
        self.channels = np.asarray(channels, dtype=np.int64)
        self.mixing = species_mixing(self.channels, hypers.species_coupling)

    def expand(self, env, rows, want_grad):
        """For the neighbour rows ``rows`` of ``env``: terms t[row, l, n, m] = w φ_ln Y_lm (m padded to 2L+1),
        their channel, and (want_grad) ∂t/∂r_row of shape (rows, l, n, m, 3)."""
        L = self.L
        vec = np.ascontiguousarray(env.vectors[rows])
        dist = env.distances[rows]
        znb = env.neighbor_numbers[rows]
        lookup = {int(z): k for k, z in enumerate(self.channels)}
        channel = np.array([lookup.get(int(z), -1) for z in znb], dtype=np.int64)
        w, dw = _weights_and_slopes(dist, znb, self.hypers)
        phi, dphi = self.radial.evaluate(dist)
        if len(rows):
            ylm, dylm = _harmonics_with_gradients(vec, L)
        else:
            ylm, dylm = np.zeros((0, (L + 1) ** 2)), np.zeros((0, (L + 1) ** 2, 3))
        n = len(rows)
        Y = np.zeros((n, L + 1, 2 * L + 1))
        dY = np.zeros((n, L + 1, 2 * L + 1, 3))
        for l in range(L + 1):
            Y[:, l, :2 * l + 1] = ylm[:, l * l:(l + 1) ** 2]
            dY[:, l, :2 * l + 1] = dylm[:, l * l:(l + 1) ** 2]
        wphi = w[:, None, None] * phi  # (n, l, n_max)
        terms = wphi[:, :, :, None] * Y[:, :, None, :]
        grad = None
        if want_grad:
            dwphi = dw[:, None, None] * phi + w[:, None, None] * dphi
            rhat = vec / dist[:, None]
            grad = (dwphi[:, :, :, None, None] * Y[:, :, None, :, None] * rhat[:, None, None, None, :]
                    + wphi[:, :, :, None, None] * dY[:, :, None, :, :])
        return terms, channel, grad

    def coefficients(self, env, centres, terms, channel, rows_of):
        """Mixed coefficients c[i, l, f, m] of the given centres (``rows_of[k]``: positions in ``terms``)."""
        L, n_max, n_ch = self.L, self.n_max, len(self.channels)
        out = np.zeros((len(centres), L + 1, n_ch, n_max, 2 * L + 1))
        for k, rows in enumerate(rows_of):
            keep = rows[channel[rows] >= 0]
            np.add.at(out[k].transpose(1, 0, 2, 3), channel[keep], terms[keep])
        if self.mixing is not None:
            out = np.einsum("ilcnm,cq->ilqnm", out, self.mixing, optimize=True)
        return np.ascontiguousarray(out.reshape(len(centres), L + 1, n_ch * n_max, 2 * L + 1))


# ----------------------------------------------------------------------------------------------------------------
# the Wigner iteration, forward and backward


@njit(parallel=True, cache=True)
def _forward_adjoint(seed, scale, rows, ptr, ta, tb, tc, out_rows, n_rows, want_grad, vals, grads):
    """vals[p, o] = output o of pair p; grads[p, o, k] = ∂ output o / ∂ seed[p, k] (reverse mode, all outputs
    at once). ``seed`` holds the ν=1 blocks before the seed scale s_l."""
    n_pairs, n_seed = seed.shape
    n_out = out_rows.shape[0]
    n_prog = rows.shape[0]
    n_blocks = min(n_pairs, 64)
    for blk in prange(n_blocks):
        row = np.zeros(n_rows)
        adj = np.zeros((n_rows, n_out))
        for p in range(blk, n_pairs, n_blocks):
            row[0] = 1.0
            for k in range(n_seed):
                row[1 + k] = scale[k] * seed[p, k]
            for k in range(n_prog):
                s = 0.0
                for t in range(ptr[k], ptr[k + 1]):
                    s += tc[t] * row[ta[t]] * row[tb[t]]
                row[rows[k]] = s
            for o in range(n_out):
                vals[p, o] = row[out_rows[o]]
            if not want_grad:
                continue
            adj[:, :] = 0.0
            for o in range(n_out):
                adj[out_rows[o], o] = 1.0
            for k in range(n_prog - 1, -1, -1):
                r = rows[k]
                live = False
                for o in range(n_out):
                    if adj[r, o] != 0.0:
                        live = True
                        break
                if not live:
                    continue
                for t in range(ptr[k], ptr[k + 1]):
                    a = ta[t]
                    b = tb[t]
                    ca = tc[t] * row[b]
                    cb = tc[t] * row[a]
                    for o in range(n_out):
                        g = adj[r, o]
                        adj[a, o] += ca * g
                        adj[b, o] += cb * g
            for o in range(n_out):
                for k in range(n_seed):
                    grads[p, o, k] = scale[k] * adj[1 + k, o]


def _seed_blocks(coef_i, coef_c, L):
    """Packed H^l blocks (pairs, n_seed) of every (i, c) pair: pair p = i·n_c + c."""
    ni, nc = coef_i.shape[0], coef_c.shape[0]
    off = block_offsets(L)
    seed = np.zeros((ni, nc, off[-1]))
    for l in range(L + 1):
        d = 2 * l + 1
        h = np.einsum("ifm,cfn->icmn", coef_i[:, l, :, :d], coef_c[:, l, :, :d], optimize=True)
        seed[:, :, off[l]:off[l + 1]] = h.reshape(ni, nc, d * d)
    return seed.reshape(ni * nc, off[-1])


def _run_pairs(plan, seed, want_grad):
    n_pairs = seed.shape[0]
    n_out = len(plan.outputs)
    vals = np.zeros((n_pairs, n_out))
    grads = np.zeros((n_pairs, n_out, plan.n_seed) if want_grad else (1, 1, 1))
    if n_pairs:
        with ENGINE_LOCK:
            _forward_adjoint(np.ascontiguousarray(seed), plan.seed_scale, plan.rows, plan.ptr, plan.a, plan.b,
                             plan.coef, plan.out_rows, plan.n_rows, want_grad, vals, grads)
    return vals, grads


# ----------------------------------------------------------------------------------------------------------------
# public API


@dataclass
class KernelGradients:
    """Structure-to-environment kernels and their derivatives.

    Attributes
    ----------
    K : ndarray of shape (nu_max+1, n_A, M)
        K[ν, a, m] = Σ_{i∈a, Z_i = Z_m} w_i k^ν(i, c_m) (as ``WignerKernel.compute(A, B, centers_B=...)``;
        K[0] = the weighted count of atoms of c_m's element).
    dK : ndarray of shape (nu_max+1, atoms_A, 3, M) or None
        ∂K[ν, a(atom), m]/∂r_atom (Å⁻¹ units of K), atoms of all structures of A in order. dK[0] = 0.
    dK_strain : ndarray of shape (nu_max+1, n_A, 3, 3, M) or None
        ∂K/∂ε_{αβ} under the homogeneous deformation r → (1 + ε) r of positions and cell.
    species_B : ndarray of int
        Element of each active environment.
    n_atoms_A : ndarray of int
    seconds : float
    energy, energy_gradient, energy_strain : ndarray or None
        With ``weights``: E(A), ∂E/∂r_atom and ∂E/∂ε of the weighted sum (see :func:`kernel_gradients`).
    """

    K: np.ndarray
    dK: np.ndarray | None
    dK_strain: np.ndarray | None
    species_B: np.ndarray
    n_atoms_A: np.ndarray
    seconds: float = 0.0
    energy: np.ndarray | None = None
    energy_gradient: np.ndarray | None = None
    energy_strain: np.ndarray | None = None


@dataclass
class ActiveEnvironments:
    """The fixed side of :func:`kernel_gradients`, prepared once (:func:`prepare_active`): density coefficients of
    the active environments on the gradient route's radial functions. A model passes it instead of ``frames_B``
    so that every energy/force evaluation (an MD step) skips the neighbour search and expansion of the M
    environments."""

    hypers: Hypers
    density: "_Density"
    coef: np.ndarray
    numbers: np.ndarray


def prepare_active(frames_B, centers_B, hypers: Hypers, channels=None) -> ActiveEnvironments:
    """Prepare the active environments ``centers_B`` (global atom indices into ``frames_B``) for
    :func:`kernel_gradients`; ``channels``: extra neighbour elements the structures of A may have (the union with
    the active environments' own neighbour elements gets a density channel)."""
    frames_B = _as_frames(frames_B, "frames_B")
    centres = _as_centres(centers_B, frames_B)
    env_b = _centre_environments(frames_B, centres, hypers)
    extra = np.zeros(0, dtype=np.int64) if channels is None else np.asarray(channels, dtype=np.int64).ravel()
    dens = _Density(hypers, np.union1d(np.unique(env_b.neighbor_numbers), np.unique(extra)))
    rows, channel, _ = dens.expand(env_b, np.arange(len(env_b.distances)), False)
    coef = dens.coefficients(env_b, np.arange(len(centres)), rows, channel,
                             [np.arange(env_b.offsets[c], env_b.offsets[c + 1]) for c in range(len(centres))])
    return ActiveEnvironments(hypers=hypers, density=dens, coef=coef, numbers=env_b.numbers.copy())


def gradient_bytes(n_structures, n_atoms, n_active, nu_max, gradients=True) -> int:
    """Bytes of the outputs of :func:`kernel_gradients`."""
    per = n_structures * n_active
    if gradients:
        per += 3 * n_atoms * n_active + 9 * n_structures * n_active
    return 8 * (nu_max + 1) * per


def _channels(env_a, env_b):
    return np.union1d(np.unique(env_a.neighbor_numbers), np.unique(env_b.neighbor_numbers))


def kernel_gradients(frames_A, frames_B, centers_B, hypers: Hypers | None = None, *, gradients: bool = True,
                     weights=None, memory_budget: int = DEFAULT_MEMORY_BUDGET, progress=None,
                     cancel=None) -> KernelGradients:
    """Invariant kernels between structures A and active environments of B, with their position and strain
    derivatives.

    Parameters
    ----------
    frames_A : sequence of ase.Atoms
        The structures that move (training or prediction structures); molecules or periodic cells.
    frames_B : sequence of ase.Atoms or ActiveEnvironments
        Structures holding the active environments, or the environments prepared by :func:`prepare_active`
        (``centers_B`` is then ignored).
    centers_B : sequence of int
        Global atom indices into the atoms of ``frames_B`` (structure 0's atoms first).
    hypers : Hypers, optional
        ``nu1_route`` is ignored (this route differentiates density coefficients on the optimal radial basis).
    gradients : bool
        False: only ``K`` (e.g. the energy of a structure).
    weights : ndarray of shape (nu_max+1, M), optional
        Only the derivatives of the weighted sum E(A) = Σ_ν Σ_m weights[ν, m] K^ν(A, c_m) (a fitted model's energy)
        are needed: they are contracted before the per-neighbour work, which is then M·ν_max times smaller.
        ``dK`` and ``dK_strain`` are None; the result carries ``energy`` (n_A,), ``energy_gradient``
        (atoms_A, 3) and ``energy_strain`` (n_A, 3, 3).
    memory_budget : int
        Bytes; a request whose outputs would not fit is refused before any work.
    progress : callable, optional
        ``progress(fraction_done, eta_seconds)`` after every structure.
    cancel : threading.Event or callable, optional

    Returns
    -------
    KernelGradients
    """
    start = time.perf_counter()
    h = hypers or Hypers()
    frames_A = _as_frames(frames_A, "frames_A")
    env_a = environments_for(frames_A, h)
    if isinstance(frames_B, ActiveEnvironments):
        active = frames_B
        if active.hypers != h:
            raise InputError("the prepared active environments were made with other hyperparameters; prepare them "
                             "again with these")
        missing = np.setdiff1d(np.unique(env_a.neighbor_numbers), active.density.channels)
        if missing.size:
            raise InputError(f"element(s) {missing.tolist()} appear as neighbours but the prepared active "
                             "environments have no density channel for them; prepare them with those channels")
    else:
        active = prepare_active(frames_B, centers_B, h, channels=env_a.neighbor_numbers)
    n_atoms = np.array([len(a) for a in frames_A], dtype=np.int64)
    M = len(active.numbers)
    W = None
    if weights is not None:
        W = np.asarray(weights, dtype=np.float64)
        if W.shape != (h.nu_max + 1, M):
            raise InputError(f"weights must have shape (nu_max+1, M) = ({h.nu_max + 1}, {M}), got {W.shape}")
        gradients = True
    need = gradient_bytes(len(frames_A), int(n_atoms.sum()), M if W is None else 1, h.nu_max, gradients)
    if need > memory_budget:
        raise MemoryBudgetError(
            f"the kernel gradients need {need / 2**30:.2f} GiB but the memory budget is "
            f"{memory_budget / 2**30:.2f} GiB; use fewer structures or active environments, or raise the budget")
    plan = build_plan(h.lambda_max, h.nu_max, h.schedule, h.normalization)
    inv = np.array([plan.output_index("inv", nu) for nu in range(1, h.nu_max + 1)])
    dens, coef_b, zb = active.density, active.coef, active.numbers
    wc = h.hydrogen_center_weight
    nu1 = h.nu_max + 1
    K = np.zeros((nu1, len(frames_A), M))
    full = gradients and W is None
    dK = np.zeros((nu1, int(n_atoms.sum()), 3, M)) if full else None
    dS = np.zeros((nu1, len(frames_A), 3, 3, M)) if full else None
    dE = np.zeros((int(n_atoms.sum()), 3))
    dE_strain = np.zeros((len(frames_A), 3, 3))
    atom_start = np.concatenate([[0], np.cumsum(n_atoms)])
    L, n_max, n_ch = h.lambda_max, dens.n_max, len(dens.channels)
    U = dens.mixing
    total = max(1, int(n_atoms.sum()))
    if progress is not None:
        progress(0.0, None)
    for s in range(len(frames_A)):
        check_cancel(cancel, "kernel gradients")
        a0, a1 = atom_start[s], atom_start[s + 1]
        w_atoms = np.where(env_a.numbers[a0:a1] == 1, wc, 1.0)
        K[0, s] = [np.sum(w_atoms[env_a.numbers[a0:a1] == z]) for z in zb]
        r0, r1 = env_a.offsets[a0], env_a.offsets[a1]
        rows = np.arange(r0, r1)
        terms, channel, grad = dens.expand(env_a, rows, gradients)
        rows_of = [np.arange(env_a.offsets[c] - r0, env_a.offsets[c + 1] - r0) for c in range(a0, a1)]
        coef_a = dens.coefficients(env_a, np.arange(a0, a1), terms, channel, rows_of)
        for z in np.unique(env_a.numbers[a0:a1]):
            ci = np.flatnonzero(env_a.numbers[a0:a1] == z)
            cm = np.flatnonzero(zb == z)
            if len(cm) == 0:
                continue
            wz = wc if z == 1 else 1.0
            seed = _seed_blocks(coef_a[ci], coef_b[cm], L)
            vals, G = _run_pairs(plan, seed, gradients)
            vals = vals[:, inv].reshape(len(ci), len(cm), h.nu_max)
            K[1:, s, cm] += wz * vals.sum(axis=0).T
            if not gradients:
                continue
            G = G[:, inv].reshape(len(ci), len(cm), h.nu_max, -1)
            if W is not None:  # one output: Σ_ν Σ_m W[ν, m] k^ν(i, c_m)
                G = np.einsum("icvs,vc->ics", G, W[1:, cm], optimize=True)[:, :, None, :]
            acc, acc_strain = _contract(G, coef_b[cm], grad, channel, rows_of, ci,
                                        env_a.neighbor_index[r0:r1], env_a.vectors[r0:r1], U, L, n_ch, n_max,
                                        a1 - a0, W is not None)
            acc *= wz
            acc_strain *= wz
            if W is None:
                n_v = G.shape[2]
                dK[1:, a0:a1][..., cm] += acc.reshape(a1 - a0, 3, len(cm), n_v).transpose(3, 0, 1, 2)
                dS[1:, s][..., cm] += acc_strain.reshape(3, 3, len(cm), n_v).transpose(3, 0, 1, 2)
            else:
                dE[a0:a1] += acc[..., 0]
                dE_strain[s] += acc_strain[..., 0]
        if progress is not None:
            done = a1 / total
            el = time.perf_counter() - start
            progress(done, el * (1 - done) / done if done > 0 else None)
    out = KernelGradients(K=K, dK=dK, dK_strain=dS, species_B=zb.copy(), n_atoms_A=n_atoms,
                          seconds=time.perf_counter() - start)
    if W is not None:
        out.energy = np.einsum("vnm,vm->n", K, W)
        out.energy_gradient, out.energy_strain = dE, dE_strain
    return out


def _contract(G, coef_c, grad, channel, rows_of, ci, neighbour_atoms, vectors, U, L, n_ch, n_max, n_atoms,
              summed):
    """Steps 3–4 of the module docstring for the centres ``ci`` of one structure and element.

    G[k, c, v, :] = ∂(output v of pair (ci[k], c))/∂H (packed); returns the position derivatives (n_atoms, 3, C·V)
    and the strain derivatives (3, 3, C·V) of every output (one summed output when ``summed``).
    """
    off = block_offsets(L)
    n_c, n_v = G.shape[1], G.shape[2]
    n_out = 1 if summed else n_c * n_v
    acc = np.zeros((n_atoms, 3, n_out))
    acc_strain = np.zeros((3, 3, n_out))
    for k, i in enumerate(ci):
        # ∂k^ν(i, c)/∂c_i[l, f, m] = Σ_m' G^l[m, m'] c_c[l, f, m'], per l
        B = np.zeros((n_c, n_v, L + 1, n_ch * n_max, 2 * L + 1))
        for l in range(L + 1):
            d = 2 * l + 1
            g = G[k, :, :, off[l]:off[l + 1]].reshape(n_c, n_v, d, d)
            B[:, :, l, :, :d] = np.einsum("cvmn,cfn->cvfm", g, coef_c[:, l, :, :d], optimize=True)
        if summed:
            B = B.sum(axis=(0, 1))[None]
        B = B.reshape(n_out, L + 1, n_ch, n_max, 2 * L + 1)
        if U is not None:  # mixed coefficients c U: back to the neighbours' own channels
            B = np.einsum("olqnm,aq->olanm", B, U, optimize=True)
        rr = rows_of[i]
        # per neighbour row: Σ_{l,n,m} B[o, l, channel, n, m] ∂t[row, l, n, m, :]
        dk = np.zeros((n_out, len(rr), 3))
        for a in np.unique(channel[rr]):
            if a < 0:
                continue
            mask = channel[rr] == a
            sel = rr[mask]
            lhs = B[:, :, a].reshape(n_out, -1)
            rhs = grad[sel].reshape(len(sel), -1, 3).transpose(1, 0, 2).reshape(lhs.shape[1], -1)
            dk[:, mask] = (lhs @ rhs).reshape(n_out, len(sel), 3)
        # neighbour j moves r_ij by +dr, centre i by −dr (a periodic image of i cancels itself)
        np.add.at(acc, neighbour_atoms[rr], dk.transpose(1, 2, 0))
        acc[i] -= dk.sum(axis=1).T
        acc_strain += np.einsum("ora,rb->abo", dk, vectors[rr], optimize=True)
    return acc, acc_strain


def active_kernel(frames_B, centers_B, hypers: Hypers | None = None) -> np.ndarray:
    """k^ν(c_m, c_m') between active environments, shape (nu_max+1, M, M) (0 between different elements;
    K[0] = same-element indicator), on the same radial functions as :func:`kernel_gradients`."""
    h = hypers or Hypers()
    frames_B = _as_frames(frames_B, "frames_B")
    centres = _as_centres(centers_B, frames_B)
    M = len(centres)
    plan = build_plan(h.lambda_max, h.nu_max, h.schedule, h.normalization)
    inv = np.array([plan.output_index("inv", nu) for nu in range(1, h.nu_max + 1)])
    env_b = _centre_environments(frames_B, centres, h)
    dens = _Density(h, _channels(env_b, env_b))
    tb, chb, _ = dens.expand(env_b, np.arange(len(env_b.distances)), False)
    coef = dens.coefficients(env_b, np.arange(M), tb, chb,
                             [np.arange(env_b.offsets[c], env_b.offsets[c + 1]) for c in range(M)])
    zb = env_b.numbers
    out = np.zeros((h.nu_max + 1, M, M))
    out[0] = zb[:, None] == zb[None, :]
    for z in np.unique(zb):
        cm = np.flatnonzero(zb == z)
        vals, _ = _run_pairs(plan, _seed_blocks(coef[cm], coef[cm], h.lambda_max), False)
        vals = vals[:, inv].reshape(len(cm), len(cm), h.nu_max)
        out[1:, cm[:, None], cm[None, :]] = vals.transpose(2, 0, 1)
    return out
