"""Energy-and-force models: a sparse (projected-process) GP on active environments, the GAP route.

The energy of a structure is a sum of atomic energies ε(i) drawn from a GP with the mixed Wigner kernel
k(i, i') = Σ_ν c_ν k^ν(i, i') / s_ν (same element only; s_ν = mean self-kernel of the active environments, so
the c_ν are comparable), plus a per-element baseline. With M active environments the projected-process
approximation gives E(A) = Σ_m α_m k(A, c_m) + b·n_A, k(A, c_m) = Σ_ν c_ν K^ν(A, c_m)/s_ν, and the forces are
its exact derivative, F_a = −∂E/∂r_a = −Σ_m α_m ∂k(A, c_m)/∂r_a (:func:`wkviz.engine.gradients.kernel_gradients`):
forces are derivative observations of the same latent function, so no second derivatives are needed.

Fitting: with noise σ_E·√n_A on the energy of a structure of n_A atoms (GAP's per-atom energy noise; σ_E per
structure with ``sigma_per_atom=False``) and σ_F on force components (separate regularisation),
Σ = diag(σ_E² n_A, …, σ_F², …) and Nyström features Φ = K_NM P, P = U S^{-1/2} from K_MM = U S Uᵀ (eigenvalues
below 1e-10 × the largest dropped, as in :mod:`wkviz.models.sparse`),

    z = (I + Φᵀ Σ⁻¹ Φ)⁻¹ Φᵀ Σ⁻¹ y,   α = P z.

The body-order weights c_ν and the noises σ_E, σ_F maximise the log evidence log N(y | 0, Φ Φᵀ + Σ), evaluated
exactly in the M-dimensional space (Woodbury). Φᵀ Σ⁻¹ Φ is formed as ZᵀZ from the R factors of the stacked per-ν
kernels and targets (computed once), so it stays positive semi-definite in floating point, the quadratic form is
an explicit residual norm (no cancellation at small σ), and each evaluation costs O(ν M³) whatever the number of
force components. The noises are kept above 1e-4 × the spread of the data. L-BFGS-B with the evidence's analytic
gradient (:meth:`EnergyForceModel._solve`, about twice the cost of a value) from three starting shapes does the
search.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import scipy.linalg
import scipy.optimize

from ..engine.gradients import active_kernel, kernel_gradients, prepare_active
from ..engine.neighbors import environments_for
from ..errors import InputError
from ..files import atomic_write
from ..hypers import Hypers
from ..runtime import blas_threads, check_cancel
from .active import select_active_environments

__all__ = ["CV_FOLDS", "DEFAULT_ACTIVE", "ENERGY_NOISE_CHOICES", "EnergyForceModel", "describe_noise_choice",
           "energy_of", "environment_clusters", "forces_of"]

# K_MM eigenvalues below this fraction of the largest are dropped (as in wkviz.models.sparse)
_RCOND = 1e-10
_FORMAT = "wkviz-energy-force-model"
#: How σ_E is chosen (``EnergyForceModel(energy_noise=)``; the CLI's ``--energy-noise``); the first is the default.
ENERGY_NOISE_CHOICES = ("cv", "evidence")
# log σ_E steps below the evidence's choice tried by the "cv" choice
_CV_SHIFTS = tuple(-0.5 * k for k in range(11))
#: Folds of the "cv" choice of σ_E unless ``EnergyForceModel(cv_folds=)`` says otherwise.
CV_FOLDS = 5
#: Active environments of an energy+force model unless the user says otherwise (CLI, app, benchmarks). Chosen on
#: 100 fresh EMT gold clusters (BENCHMARKS.md §12c): from 200 to 400 the validation errors fell by 31 % on energies and
#: 27 % on forces; 800 tied with 400 on both at three times the fit time.
DEFAULT_ACTIVE = 400
_VERSION = 1


def forces_of(atoms, key: str = "forces") -> np.ndarray | None:
    """Forces (n_atoms, 3) of a structure from ``atoms.arrays[key]`` or its calculator results; None if absent."""
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    if key in results:
        return np.asarray(results[key], dtype=np.float64)
    return None


def energy_of(atoms, key: str = "energy") -> float | None:
    """The scalar ``key`` (eV) of a structure: ``atoms.info[key]`` or its calculator's result; None if absent or not
    a single number."""
    value = atoms.info.get(key)
    if value is None:
        results = getattr(getattr(atoms, "calc", None), "results", None) or {}
        value = results.get(key)
    if value is None or np.size(value) != 1:
        return None
    return float(np.asarray(value).ravel()[0])


def environment_clusters(frames, centres, hypers) -> list:
    """Each environment as a small molecule: the centre at the origin (atom 0) and its neighbours within the
    cutoff (periodic images included) at r_ij, so atom 0 of the cluster has exactly the original environment.
    This is how a model keeps its active environments independently of the training structures."""
    from ase import Atoms

    env = environments_for(frames, hypers)
    out = []
    for c in np.asarray(centres, dtype=np.int64):
        s, e = env.offsets[c], env.offsets[c + 1]
        numbers = np.concatenate([[env.numbers[c]], env.neighbor_numbers[s:e]])
        positions = np.concatenate([np.zeros((1, 3)), env.vectors[s:e]])
        out.append(Atoms(numbers=numbers, positions=positions))
    return out


def _r_factor(X):
    """R of X = QR (RᵀR = XᵀX; min(rows, columns) rows). With the targets as X's last column, R's last column holds
    them in the same orthonormal basis, so residuals ‖y − K w‖ = ‖R_K w − r_y‖ come out without cancellation."""
    return np.linalg.qr(X, mode="r")


def _cluster_centres(clusters):
    return np.concatenate([[0], np.cumsum([len(a) for a in clusters])[:-1]]).astype(np.int64)


def describe_noise_choice(summary: dict) -> str:
    """How the noises of a fitted model were chosen, in one sentence (the CLI and the app show it).

    Parameters
    ----------
    summary : dict
        :meth:`EnergyForceModel.summary` of a fitted model.
    """
    unit = "eV/√atom" if summary.get("sigma_per_atom") else "eV"
    se = f"σ_E = {summary['sigma_energy']:.3g} {unit}"
    if summary.get("sigma_force") is None:
        return f"Body-order weights and {se} chosen by the evidence."
    sf = f"σ_F = {summary['sigma_force']:.3g} eV/Å"
    cv = summary.get("energy_noise_cv") or []
    if not cv:
        return f"Body-order weights, {se} and {sf} chosen by the evidence."
    return (f"Body-order weights and {sf} chosen by the evidence; {se} by {summary.get('cv_folds', CV_FOLDS)}-fold "
            f"cross-validation of energies and forces (the evidence's σ_E: {cv[0]['sigma_energy']:.3g} {unit}).")


class EnergyForceModel:
    """Sparse GP potential on energies and (optionally) forces.

    Parameters
    ----------
    hypers : Hypers
    n_active : int
        Active environments (FPS over the training environments, split over the elements); default
        :data:`DEFAULT_ACTIVE`.
    nus : sequence of int, optional
        Body orders used (default 0..nu_max; ν = 0 is a per-element constant whose level the energies fix).
    seed : int
        FPS seed.
    energy_noise : {"cv", "evidence"}
        How σ_E of an energy+force fit is chosen. ``"evidence"``: with c_ν and σ_F, by the evidence. ``"cv"``
        (default): the evidence chooses c_ν, σ_F and an upper end for σ_E; σ_E is then lowered in steps of
        e^0.5 down to e^-5 × that, and the step with the smallest product of the cross-validated energy and force
        RMSEs (``cv_folds`` folds of training structures) is kept. The evidence treats the force components as
        independent observations, while the model's force errors are correlated within a structure, so it trades
        the energies for the forces: on 100 fresh EMT gold clusters ``"cv"`` lowered the energy error from a tie
        with the energy-only model to clearly below it at the same force error (BENCHMARKS.md §12c). Energy-only
        fits use the evidence either way.
    cv_folds : int
        Folds of the ``"cv"`` choice (default :data:`CV_FOLDS`).
    sigma_per_atom : bool
        True (default): the energy noise of a structure of n atoms is σ_E·√n (σ_E in eV per √atom, GAP's
        ``sigma_per_atom``: the errors of n atomic energies add up as independent terms); False: σ_E per structure,
        whatever its size. On 200 EMT gold clusters the evidence prefers the per-atom form (by 26 nats with forces,
        2 nats without), and on 100 fresh clusters it lowered the energy+force model's energy error per cluster by
        0.004 ± 0.002 eV (BENCHMARKS.md §12).

    Attributes (after :meth:`fit`)
    ------------------------------
    weights_ : ndarray (n_nus,)
        c_ν of the mixed kernel (normalised units).
    sigma_energy_, sigma_force_ : float
        Noise levels chosen, eV (per √atom with ``sigma_per_atom``) and eV/Å (σ_F is None for an energy-only fit).
    energy_noise_cv_ : list of dict
        With ``energy_noise="cv"`` and forces: per σ_E tried, its value and the cross-validated energy RMSE (eV per
        √atom with ``sigma_per_atom``) and force RMSE (eV/Å); the first row is the evidence's σ_E. Else empty.
    log_evidence_ : float
        At the chosen θ (below the maximum when ``energy_noise="cv"`` lowered σ_E).
    theta_evidence_ : ndarray
        θ = [log c_ν…, log σ_E, (log σ_F)] at the evidence's maximum.
    alpha_ : ndarray (M,)
        Weights of the active environments.
    baseline_ : dict
        Energy per element (eV).
    """

    def __init__(self, hypers: Hypers | None = None, *, n_active: int = DEFAULT_ACTIVE, nus=None, seed: int = 0,
                 sigma_per_atom: bool = True, energy_noise: str = ENERGY_NOISE_CHOICES[0], cv_folds: int = CV_FOLDS):
        self.hypers = hypers or Hypers()
        self.n_active = int(n_active)
        self.nus = None if nus is None else [int(n) for n in nus]
        self.seed = int(seed)
        self.sigma_per_atom = bool(sigma_per_atom)
        if energy_noise not in ENERGY_NOISE_CHOICES:
            raise InputError(f"energy_noise must be one of {', '.join(ENERGY_NOISE_CHOICES)}, got {energy_noise!r}")
        self.energy_noise = energy_noise
        if int(cv_folds) < 2:
            raise InputError(f"cv_folds must be at least 2, got {cv_folds}")
        self.cv_folds = int(cv_folds)

    # ------------------------------------------------------------------------------------------------------------
    def fit(self, frames, energies, forces=None, *, progress=None, cancel=None) -> "EnergyForceModel":
        """Fit on structures with energies (eV) and, when given, forces (a list of (n_atoms, 3) arrays in eV/Å,
        or None to fit energies only).

        ``progress(fraction, message)`` is called along the way; ``cancel`` is checked between steps.
        """
        t0 = time.perf_counter()
        frames = list(frames)
        y_e = np.asarray(energies, dtype=np.float64).ravel()
        if len(y_e) != len(frames):
            raise InputError(f"{len(y_e)} energies for {len(frames)} structures; give one energy per structure")
        if not np.all(np.isfinite(y_e)):
            raise InputError("the energies hold NaN or infinite values; remove those structures")
        y_f = None
        if forces is not None:
            forces = list(forces)
            if len(forces) != len(frames):
                raise InputError(f"{len(forces)} force arrays for {len(frames)} structures; give one per structure")
            for k, (f, a) in enumerate(zip(forces, frames)):
                if f is None or np.shape(f) != (len(a), 3):
                    raise InputError(f"structure {k} has no forces of shape ({len(a)}, 3); give forces for every "
                                     "structure or fit energies only")
            y_f = np.concatenate([np.asarray(f, dtype=np.float64).ravel() for f in forces])
            if not np.all(np.isfinite(y_f)):
                raise InputError("the forces hold NaN or infinite values; remove those structures")
        h = self.hypers
        nus = self.nus if self.nus is not None else list(range(h.nu_max + 1))
        if any(n < 0 or n > h.nu_max for n in nus):
            raise InputError(f"body orders must be between 0 and nu_max={h.nu_max}, got {nus}")
        self.nus_ = np.asarray(nus, dtype=np.int64)
        report = progress or (lambda f, m: None)

        report(0.0, "selecting active environments")
        n_total = sum(len(a) for a in frames)
        centres = select_active_environments(frames, min(self.n_active, n_total), h, seed=self.seed)
        self.clusters_ = environment_clusters(frames, centres, h)
        cc = _cluster_centres(self.clusters_)
        check_cancel(cancel, "model fit")
        K_MM = active_kernel(self.clusters_, cc, h)
        report(0.05, "kernel gradients")
        res = kernel_gradients(frames, self.clusters_, cc, h, gradients=y_f is not None, cancel=cancel,
                               progress=lambda f, eta: report(0.05 + 0.85 * f, "kernel gradients"))
        self.species_active_ = res.species_B
        # small factorisations (M below SMALL_SOLVE): OpenBLAS threads would only busy-wait
        try:
            with blas_threads(len(res.species_B)):
                report(0.9, "factorising the kernels")
                self._prepare(frames, res, K_MM, y_e, y_f)
                report(0.92, "maximising the evidence")
                self._optimise(cancel)
                self.energy_noise_cv_ = []
                if self._NF and self.energy_noise == "cv":
                    report(0.95, "choosing the energy noise by cross-validation")
                    self._choose_energy_noise(cancel)
        finally:  # the stacked kernels (N × ν M each) are only needed while fitting, also when it was cancelled
            for name in ("_XE", "_XF", "_force_owner"):
                self.__dict__.pop(name, None)
        self.fit_seconds_ = time.perf_counter() - t0
        report(1.0, "done")
        return self

    def _prepare(self, frames, res, K_MM, y_e, y_f):
        """Per-ν scales, the energy baseline and the Gram blocks the evidence reads."""
        nus = self.nus_
        self.scales_ = np.array([max(float(np.mean(np.diag(K_MM[nu]))), 1e-300) for nu in nus])
        # per-element baseline by least squares on the element counts
        self.species_ = np.unique(np.concatenate([a.numbers for a in frames]))
        counts = self._counts(frames)
        coef, *_ = np.linalg.lstsq(counts, y_e, rcond=None)
        self.baseline_ = {int(z): float(c) for z, c in zip(self.species_, coef)}
        r_e = y_e - counts @ coef
        KE = [res.K[nu] / s for nu, s in zip(nus, self.scales_)]  # (N, M) each
        n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
        # noise of structure i: σ_E·√n_i (per atom) or σ_E; whitening the rows by √n_i makes it σ_E for all
        row = 1.0 / np.sqrt(n_atoms) if self.sigma_per_atom else np.ones_like(n_atoms)
        self._logdet_e = 2.0 * float(np.sum(np.log(1.0 / row)))  # Σ log n_i (per atom) or 0
        KE = [k * row[:, None] for k in KE]
        r_e = r_e * row
        self._KMM = [K_MM[nu] / s for nu, s in zip(nus, self.scales_)]
        # R with Rᵀ R = [K^ν…]ᵀ [K^ν…]: the mixed Gram matrix is then (Σ_ν c_ν R_ν P)ᵀ(…), formed from an
        # explicit factor (positive semi-definite in floating point too) at O(ν M²·M) per evidence evaluation
        self._XE = np.hstack(KE + [r_e[:, None]])
        self._RE = _r_factor(self._XE)
        self._NE = len(r_e)
        # the spread per √atom either way (r_e is already whitened by √n with sigma_per_atom)
        self._std_e = float(np.std(r_e if self.sigma_per_atom else r_e / np.sqrt(n_atoms))) or 1.0
        if y_f is not None:
            # force rows: F = −∂E/∂r
            KF = [-res.dK[nu].reshape(-1, res.dK.shape[-1]) / s for nu, s in zip(nus, self.scales_)]
            self._XF = np.hstack(KF + [y_f[:, None]])
            self._RF = _r_factor(self._XF)
            self._force_owner = np.repeat(np.arange(len(frames)), 3 * n_atoms.astype(np.int64))
            self._NF = len(y_f)
            self._std_f = float(np.std(y_f)) or 1.0
        else:
            self._NF = 0

    def _counts(self, frames):
        return np.array([[np.sum(a.numbers == z) for z in self.species_] for a in frames], dtype=np.float64)

    # ------------------------------------------------------------------------------------------------------------
    def _solve(self, theta, gradient: bool = False, factors=None):
        """(log evidence, α, gradient of the log evidence in θ or None) at θ = [log c_ν…, log σ_E, (log σ_F)].

        ``factors`` = (R_E, R_F) of a subset of the training rows gives that subset's α (the evidence returned is
        then not meaningful).

        With P = W S^{-1/2} from K = Σ c_ν K_MM^ν = W S Wᵀ (kept eigenvalues), Y^X_ν = R^X_ν P for the per-ν
        column blocks of the R factors of the energies and forces (X), Z_X = Σ_ν c_ν Y^X_ν / σ_X, t_X the R factors'
        target column / σ_X, A = I + Σ_X Z_XᵀZ_X = L Lᵀ, z = A⁻¹ Σ_X Z_Xᵀ t_X, α = P z and e_X = Z_X z − t_X:

            log p = −½ (Σ_X ‖e_X‖² + ‖z‖²) − ½ (log|A| + log|Σ|) − (N/2) log 2π,
            ∂/∂c_ν = −Σ_X [(Y^X_ν z)ᵀ e_X / σ_X + Σ_ν' c_ν' ⟨V^X_ν, V^X_ν'⟩ / σ_X²] − ½ αᵀK^ν α
                     − ½ tr((P A⁻¹ Pᵀ − P Pᵀ) K^ν),
            ∂/∂log σ_X = ‖e_X‖² + ‖Σ_ν c_ν V^X_ν‖² / σ_X² − N_X,     V^X_ν = L⁻¹ Y^X_νᵀ.

        The residuals are explicit (no cancellation at small σ) and everything goes through P-projected factors
        (forming Φᵀ Σ⁻¹ Φ from Gram blocks instead loses nats to the dynamic range of P). The gradient costs about
        twice an evaluation instead of 2 (ν + 2) + 1 evaluations for central differences; the kept subspace W is
        held fixed in it (exact when no eigenvalue is dropped).
        """
        n = len(self.nus_)
        c = np.exp(theta[:n])
        M = self._KMM[0].shape[0]
        RE, RF = factors if factors is not None else (self._RE, self._RF if self._NF else None)
        sources = [(RE, math.exp(theta[n]), self._NE)]
        if self._NF:
            sources.append((RF, math.exp(theta[n + 1]), self._NF))
        K = sum(ci * k for ci, k in zip(c, self._KMM))
        S, U = np.linalg.eigh(0.5 * (K + K.T))
        keep = S > _RCOND * S.max()
        P = U[:, keep] / np.sqrt(S[keep])  # Nyström features Φ = K_NM P, Φ Φᵀ = K_NM K_MM⁺ K_MN
        Ys, Zs, ts = [], [], []
        for R, sig, _ in sources:
            # R is upper trapezoidal: the block of ν_k has no non-zero row below (k + 1) M
            Y = [R[:(k + 1) * M, k * M:(k + 1) * M] @ P for k in range(n)]
            Z = np.zeros((len(R), P.shape[1]))
            for k, (ck, y) in enumerate(zip(c, Y)):
                Z[:len(y)] += ck * y
            Ys.append(Y)
            Zs.append(Z / sig)
            ts.append(R[:, -1] / sig)
        A = np.eye(P.shape[1])
        for Z in Zs:
            A += Z.T @ Z
        try:
            la = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return -np.inf, None, None
        z = scipy.linalg.cho_solve((la, True), sum(Z.T @ t for Z, t in zip(Zs, ts)))
        alpha = P @ z
        errs = [Z @ z - t for Z, t in zip(Zs, ts)]
        quad = float(sum(e @ e for e in errs) + z @ z)
        logdet = 2.0 * np.sum(np.log(np.diag(la))) + self._logdet_e
        logdet += sum(N * 2.0 * math.log(sig) for _, sig, N in sources)
        n_obs = self._NE + self._NF
        ev = -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * math.log(2 * math.pi)
        if not gradient:
            return ev, alpha, None
        LP = scipy.linalg.solve_triangular(la, P.T, lower=True)
        D = LP.T @ LP - P @ P.T + np.outer(alpha, alpha)  # P A⁻¹ Pᵀ − P Pᵀ + α αᵀ
        dc = -0.5 * np.array([np.vdot(k, D) for k in self._KMM])
        dsig = []
        for (_, sig, N), Y, e in zip(sources, Ys, errs):
            V = [scipy.linalg.solve_triangular(la, y.T, lower=True) for y in Y]  # L⁻¹ Y_νᵀ, (r, rows_ν)
            G = np.empty((n, n))
            for k in range(n):
                for l in range(k, n):
                    w = min(V[k].shape[1], V[l].shape[1])
                    G[k, l] = G[l, k] = np.vdot(V[k][:, :w], V[l][:, :w])
            dc -= np.array([(y @ z) @ e[:len(y)] for y in Y]) / sig + (G @ c) / sig ** 2
            dsig.append(float(e @ e) + float(c @ G @ c) / sig ** 2 - N)
        return ev, alpha, np.concatenate([c * dc, dsig])

    def _optimise(self, cancel):
        n = len(self.nus_)
        # start: equal weights with a signal of the residuals' size per atom; noises a tenth of the spread
        x0 = [math.log(self._std_e ** 2 / n + 1e-12)] * n + [math.log(0.1 * self._std_e * 3 + 1e-6)]
        if self._NF:
            x0.append(math.log(0.1 * self._std_f + 1e-6))
        x0 = np.array(x0)
        # noise floors at 1e-4 of the data's spread: below them the fit only interpolates (and N ≤ M allows it)
        floors = [1e-4 * self._std_e] + ([1e-4 * self._std_f] if self._NF else [])
        bounds = [(x - 25.0, x + 25.0) for x in x0[:n]] + [(math.log(f), math.log(f) + 25.0) for f in floors]

        def with_gradient(theta):
            check_cancel(cancel, "model fit")
            ev, _, g = self._solve(theta, gradient=True)
            return (-ev, -g) if np.isfinite(ev) else (1e300, np.zeros_like(theta))

        best = None
        # a few starting shapes (equal weights, low orders first, high orders first): the ν = 0 weight is nearly
        # degenerate with the per-element baseline, so the surface is flat along it and a single start can stop early
        for tilt in (0.0, -2.0, 2.0):
            start = x0.copy()
            start[:n] += tilt * (np.arange(n) - (n - 1) / 2)
            r = scipy.optimize.minimize(with_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                        options={"maxiter": 500})
            if best is None or r.fun < best.fun:
                best = r
        self.theta_evidence_ = np.array(best.x)
        self._set_theta(self.theta_evidence_.copy())

    def _set_theta(self, theta):
        """The model at θ: weights, noises, evidence and the active environments' weights."""
        n = len(self.nus_)
        ev, alpha, _ = self._solve(theta)
        self.theta_ = theta
        self.weights_ = np.exp(theta[:n])
        self.sigma_energy_ = float(math.exp(theta[n]))
        self.sigma_force_ = float(math.exp(theta[n + 1])) if self._NF else None
        self.log_evidence_ = float(ev)
        self.alpha_ = alpha
        # one weight row per ν (0..nu_max) for the prediction: E = Σ_ν Σ_m W[ν, m] K^ν(A, c_m)
        W = np.zeros((self.hypers.nu_max + 1, len(alpha)))
        for c, nu, s in zip(self.weights_, self.nus_, self.scales_):
            W[nu] = c / s * alpha
        self.active_weights_ = W

    def _choose_energy_noise(self, cancel):
        """Lower σ_E from the evidence's choice to the step with the smallest product of cross-validated energy and
        force RMSEs (``energy_noise="cv"``); c_ν and σ_F stay the evidence's. The folds share the per-element
        baseline fitted on all training energies (one number per element: a negligible leak)."""
        n = len(self.nus_)
        nm = self._XE.shape[1] - 1
        floor = math.log(1e-4 * self._std_e)
        shifts = [d for d in _CV_SHIFTS if self.theta_evidence_[n] + d >= floor]
        folds = min(self.cv_folds, self._NE)
        fold_of = np.random.default_rng(self.seed).permutation(self._NE) % folds
        err_e = np.zeros((len(shifts), self._NE))
        sq_f = np.zeros(len(shifts))
        for k in range(folds):
            check_cancel(cancel, "model fit")
            held = fold_of == k
            held_f = held[self._force_owner]
            factors = (_r_factor(self._XE[~held]), _r_factor(self._XF[~held_f]))
            for i, d in enumerate(shifts):
                theta = self.theta_evidence_.copy()
                theta[n] += d
                _, alpha, _ = self._solve(theta, factors=factors)
                if alpha is None:
                    err_e[i] = np.inf
                    continue
                w = np.repeat(np.exp(theta[:n]), len(alpha)) * np.tile(alpha, n)
                err_e[i, held] = self._XE[held, :nm] @ w - self._XE[held, -1]
                e_f = self._XF[held_f, :nm] @ w - self._XF[held_f, -1]
                sq_f[i] += float(e_f @ e_f)
        rmse_e = np.sqrt(np.mean(err_e ** 2, axis=1))
        rmse_f = np.sqrt(sq_f / self._NF)
        score = np.log(rmse_e) + np.log(rmse_f)
        best = int(np.argmin(np.where(np.isfinite(score), score, np.inf)))
        self.energy_noise_cv_ = [{"sigma_energy": float(math.exp(self.theta_evidence_[n] + d)),
                                  "cv_rmse_energy": float(e), "cv_rmse_force": float(f)}
                                 for d, e, f in zip(shifts, rmse_e, rmse_f)]
        theta = self.theta_evidence_.copy()
        theta[n] += shifts[best]
        self._set_theta(theta)

    # ------------------------------------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "active_weights_"):
            raise InputError("the model is not fitted yet; call fit() first or load a saved model")

    def predict(self, frames, *, forces: bool = True, stress: bool = False):
        """Energies (eV) of ``frames``, and per structure forces (n_atoms, 3) in eV/Å and, with ``stress``, the
        stress (3, 3) in eV/Å³ (periodic structures; ASE's sign convention, σ = (1/V) ∂E/∂ε).

        Returns ``energies`` or ``(energies, forces_list)`` or ``(energies, forces_list, stresses)``.
        """
        self._check_fitted()
        frames = list(frames)
        for a in frames:
            unknown = set(np.unique(a.numbers)) - set(self.baseline_)
            if unknown:
                raise InputError(f"the model was not trained on element(s) {sorted(unknown)}; predict structures of "
                                 f"{sorted(self.baseline_)} only")
        need_grad = forces or stress
        W = self.active_weights_
        if getattr(self, "_active", None) is None:
            # the active side once per model: an MD step then only expands the structure itself
            self._active = prepare_active(self.clusters_, _cluster_centres(self.clusters_), self.hypers,
                                          channels=list(self.baseline_))
        res = kernel_gradients(frames, self._active, None, self.hypers, gradients=need_grad,
                               weights=W if need_grad else None)
        base = np.array([sum(self.baseline_[int(z)] for z in a.numbers) for a in frames])
        E = np.einsum("vnm,vm->n", res.K, W) + base
        if not need_grad:
            return E
        start = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
        F = [-res.energy_gradient[start[k]:start[k + 1]] for k in range(len(frames))]
        if not stress:
            return E, F
        S = []
        for k, a in enumerate(frames):
            if a.pbc.all() and a.cell.rank == 3:
                dE = res.energy_strain[k]
                S.append(0.5 * (dE + dE.T) / a.get_volume())
            else:
                S.append(np.full((3, 3), np.nan))
        return E, F, S

    def summary(self) -> dict:
        self._check_fitted()
        return {"nus": self.nus_.tolist(), "weights": self.weights_.tolist(), "scales": self.scales_.tolist(),
                "sigma_energy": self.sigma_energy_, "sigma_force": self.sigma_force_,
                "sigma_per_atom": self.sigma_per_atom, "energy_noise": self.energy_noise,
                "energy_noise_cv": getattr(self, "energy_noise_cv_", []), "cv_folds": self.cv_folds,
                "log_evidence": self.log_evidence_, "n_active": len(self.alpha_),
                "baseline": {str(k): v for k, v in self.baseline_.items()}}

    # ------------------------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the fitted model as npz: arrays for the active environments and weights, and a JSON string
        (``meta``) with the format name and version, hyperparameters, body orders, weights, noises, baseline.
        No pickle: read it back with :meth:`load` (``np.load(..., allow_pickle=False)``)."""
        self._check_fitted()
        meta = {"format": _FORMAT, "version": _VERSION, "hypers": self.hypers.to_dict(),
                "n_active": self.n_active, "seed": self.seed, **self.summary()}
        numbers = np.concatenate([a.numbers for a in self.clusters_]).astype(np.int64)
        positions = np.concatenate([a.positions for a in self.clusters_])
        lengths = np.array([len(a) for a in self.clusters_], dtype=np.int64)
        with atomic_write(path, "wb") as fh:  # an interrupted save leaves the previous model file intact
            np.savez(fh, meta=np.array(json.dumps(meta, sort_keys=True)), active_numbers=numbers,
                     active_positions=positions, active_lengths=lengths, active_weights=self.active_weights_,
                     alpha=self.alpha_)

    @classmethod
    def load(cls, path) -> "EnergyForceModel":
        """Read a model written by :meth:`save`."""
        from ase import Atoms

        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path} is not a wkviz energy-force model file ({exc}); write one with "
                             "`python -m wkviz fit ... --forces forces --save-model model.npz`") from None
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise InputError(f"{path} is not a wkviz energy-force model of version {_VERSION}; refit and save it")
        # files written before sigma_per_atom existed had σ_E per structure
        model = cls(Hypers.from_dict(meta["hypers"]), n_active=meta["n_active"], nus=meta["nus"], seed=meta["seed"],
                    sigma_per_atom=bool(meta.get("sigma_per_atom", False)),
                    energy_noise=meta.get("energy_noise", "evidence"),  # older files: the evidence's σ_E
                    cv_folds=meta.get("cv_folds", CV_FOLDS))
        model.energy_noise_cv_ = list(meta.get("energy_noise_cv", []))
        model.nus_ = np.asarray(meta["nus"], dtype=np.int64)
        model.weights_ = np.asarray(meta["weights"])
        model.scales_ = np.asarray(meta["scales"])
        model.sigma_energy_ = meta["sigma_energy"]
        model.sigma_force_ = meta["sigma_force"]
        model.log_evidence_ = meta["log_evidence"]
        model.baseline_ = {int(k): float(v) for k, v in meta["baseline"].items()}
        ends = np.cumsum(arrays["active_lengths"])
        starts = ends - arrays["active_lengths"]
        model.clusters_ = [Atoms(numbers=arrays["active_numbers"][s:e], positions=arrays["active_positions"][s:e])
                           for s, e in zip(starts, ends)]
        model.active_weights_ = arrays["active_weights"]
        model.alpha_ = arrays["alpha"]
        return model
