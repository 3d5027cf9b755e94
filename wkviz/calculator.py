"""An ASE calculator from a fitted energy-and-force model: energies, forces and (periodic cells) stress.

    >>> calc = WignerCalculator.load("model.npz")   # doctest: +SKIP
    >>> atoms.calc = calc; atoms.get_forces()        # doctest: +SKIP

The model file is :meth:`wkviz.models.forces.EnergyForceModel.save`'s npz (arrays) with a JSON string inside (format
name and version, hyperparameters, body orders and weights, noises, per-element baseline); it is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .errors import InputError
from .models.forces import EnergyForceModel
from .runtime import check_cancel

__all__ = ["WignerCalculator", "run_md"]


class WignerCalculator(Calculator):
    """ASE calculator of a fitted :class:`~wkviz.models.forces.EnergyForceModel`.

    Parameters
    ----------
    model : EnergyForceModel
        A fitted model (or use :meth:`load` with a saved model file).

    Implemented properties: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt
    order xx, yy, zz, yz, xz, xy; periodic cells only) and ``energies`` is not provided.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: EnergyForceModel, **kwargs):
        super().__init__(**kwargs)
        if not hasattr(model, "active_weights_"):
            raise InputError("WignerCalculator needs a fitted model; fit it first or load a saved model file")
        self.model = model

    @classmethod
    def load(cls, path, **kwargs) -> "WignerCalculator":
        """The calculator of a model file written by ``EnergyForceModel.save`` (or ``fit --save-model``)."""
        return cls(EnergyForceModel.load(path), **kwargs)

    def save(self, path) -> None:
        """Write the model file (npz + JSON, no pickle)."""
        self.model.save(path)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not (self.atoms.pbc.all() and self.atoms.cell.rank == 3):
            raise InputError("stress needs a periodic cell (pbc on all three axes); this structure has none")
        E, F, S = self.model.predict([self.atoms], forces=True, stress=True)
        self.results["energy"] = float(E[0])
        self.results["free_energy"] = float(E[0])
        self.results["forces"] = F[0]
        if np.all(np.isfinite(S[0])):
            s = S[0]
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def run_md(atoms, calc, *, steps: int, timestep_fs: float = 1.0, temperature_K: float = 300.0, seed: int = 0,
           interval: int = 1, progress=None, cancel=None) -> dict:
    """Short NVE molecular dynamics (velocity Verlet) of ``atoms`` with any ASE calculator.

    Velocities start from a Maxwell–Boltzmann distribution at ``temperature_K`` drawn with ``seed``, without net
    momentum (and rotation, for a cluster), so two calculators given the same structure and seed start from the same
    positions and velocities. ``atoms`` itself is not changed.

    Parameters
    ----------
    atoms : ase.Atoms
        Starting structure.
    calc : ase.calculators.calculator.Calculator
        E.g. a :class:`WignerCalculator` or ase's EMT.
    steps : int
        Number of time steps (at least 1).
    timestep_fs : float
        Time step in fs (above 0, at most 10).
    temperature_K : float
        Temperature of the initial velocities in K.
    seed : int
        Seed of the initial velocities.
    interval : int
        Record every ``interval``-th step (step 0 and the last step always).
    progress : callable, optional
        ``progress(fraction, eta_seconds)`` after every step.
    cancel : threading.Event-like, optional
        Checked after every step (:func:`wkviz.runtime.check_cancel`).

    Returns
    -------
    dict
        ``time_fs`` (n_frames,), ``positions`` (n_frames, n_atoms, 3) in Å, ``kinetic``, ``potential``, ``total``
        (n_frames,) in eV, ``numbers`` (n_atoms,), ``cell`` (3, 3), ``pbc`` (3,) and ``drift_eV_per_ps`` (linear
        slope of the total energy over all recorded frames).
    """
    import time

    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    steps, interval = int(steps), int(interval)
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if not 0 < timestep_fs <= 10:
        raise InputError(f"the time step must be above 0 and at most 10 fs, got {timestep_fs}")
    if temperature_K < 0:
        raise InputError(f"the temperature must be at least 0 K, got {temperature_K}")
    if interval < 1:
        raise InputError(f"interval must be at least 1, got {interval}")
    atoms = atoms.copy()
    for key in ("energy", "free_energy", "stress"):
        atoms.info.pop(key, None)
    atoms.arrays.pop("forces", None)
    atoms.calc = calc
    # thermalize_momenta replaces MaxwellBoltzmannDistribution from ase 3.29 on
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    vd.Stationary(atoms)
    if not atoms.pbc.any():
        vd.ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    t_fs, pos, e_kin, e_pot = [], [], [], []
    start = time.perf_counter()

    def record():
        step = dyn.nsteps
        if step % interval == 0 or step == steps:
            t_fs.append(step * timestep_fs)
            pos.append(atoms.positions.copy())
            e_pot.append(float(atoms.get_potential_energy()))
            e_kin.append(float(atoms.get_kinetic_energy()))
        check_cancel(cancel, "molecular dynamics")
        if progress is not None and step > 0:
            elapsed = time.perf_counter() - start
            progress(step / steps, elapsed * (steps - step) / step)

    dyn.attach(record, interval=1)  # called at step 0 and after every step
    dyn.run(steps)
    t = np.asarray(t_fs)
    total = np.asarray(e_kin) + np.asarray(e_pot)
    drift = float(np.polyfit(t / 1000.0, total, 1)[0]) if len(t) > 1 else 0.0
    return {"time_fs": t, "positions": np.asarray(pos), "kinetic": np.asarray(e_kin), "potential": np.asarray(e_pot),
            "total": total, "numbers": atoms.numbers.copy(), "cell": atoms.cell.array.copy(),
            "pbc": atoms.pbc.copy(), "drift_eV_per_ps": drift}
