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

__all__ = ["WignerCalculator", "run_md", "check_md_settings", "MD_SETTING_NAMES"]


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


#: How :func:`check_md_settings` names each setting in its messages (the CLI passes its flags instead).
MD_SETTING_NAMES = {"steps": "steps", "timestep_fs": "the time step", "temperature_K": "the temperature",
                    "interval": "interval", "friction_per_fs": "the Langevin friction"}


def check_md_settings(*, steps, timestep_fs, temperature_K, interval, friction_per_fs=None, names=None) -> None:
    """Raise :class:`InputError` naming the first MD setting out of bounds (the bounds of :func:`run_md`).

    ``names`` maps a parameter to how the message calls it (default :data:`MD_SETTING_NAMES`; the CLI passes
    ``--steps`` etc., so a bad flag is refused before a model is read).
    """
    n = {**MD_SETTING_NAMES, **(names or {})}
    if steps < 1:
        raise InputError(f"{n['steps']} must be at least 1, got {steps}")
    if not 0 < timestep_fs <= 10:
        raise InputError(f"{n['timestep_fs']} must be above 0 and at most 10 fs, got {timestep_fs}")
    if temperature_K < 0:
        raise InputError(f"{n['temperature_K']} must be at least 0 K, got {temperature_K}")
    if interval < 1:
        raise InputError(f"{n['interval']} must be at least 1, got {interval}")
    if friction_per_fs is not None and not friction_per_fs > 0:
        raise InputError(f"{n['friction_per_fs']} must be above 0 (1/fs), got {friction_per_fs}")


def run_md(atoms, calc, *, steps: int, timestep_fs: float = 1.0, temperature_K: float = 300.0, seed: int = 0,
           interval: int = 1, friction_per_fs: float | None = None, progress=None, cancel=None) -> dict:
    """Molecular dynamics of ``atoms`` with any ASE calculator: NVE (velocity Verlet) or, with
    ``friction_per_fs``, Langevin at ``temperature_K``. The one MD loop of wkviz (CLI ``md``, the Teach page).

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
        Temperature of the initial velocities (and of the Langevin bath) in K.
    seed : int
        Seed of the initial velocities and of the Langevin noise.
    interval : int
        Record a frame every ``interval``-th step (step 0 and the last step always).
    friction_per_fs : float, optional
        Langevin friction in 1/fs (above 0); without it the run is NVE.
    progress : callable, optional
        ``progress(fraction, eta_seconds)`` after every step.
    cancel : threading.Event-like, optional
        Checked after every step (:func:`wkviz.runtime.check_cancel`).

    Returns
    -------
    dict
        Recorded frames: ``time_fs`` (n_frames,), ``positions``, ``momenta`` and ``forces`` (n_frames, n_atoms, 3)
        in Å, ase units (amu·Å/ase time) and eV/Å,
        ``kinetic``, ``potential``, ``total`` (n_frames,) in eV, ``temperature_K`` (n_frames,); every step:
        ``step_time_fs`` and ``step_total`` (eV); ``numbers`` (n_atoms,), ``cell`` (3, 3), ``pbc`` (3,), ``masses``
        (n_atoms,), ``ensemble`` ("NVE" or "Langevin") and ``drift_eV_per_ps`` (linear slope of the total energy
        over every step).
    """
    import time

    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    steps, interval = int(steps), int(interval)
    check_md_settings(steps=steps, timestep_fs=timestep_fs, temperature_K=temperature_K, interval=interval,
                      friction_per_fs=friction_per_fs)
    atoms = atoms.copy()
    # the file's own labels would clash with (and be mistaken for) the calculator's
    for key in ("energy", "free_energy", "stress"):
        atoms.info.pop(key, None)
    atoms.arrays.pop("forces", None)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    # thermalize_momenta replaces MaxwellBoltzmannDistribution from ase 3.29 on
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    if not atoms.pbc.any():
        vd.ZeroRotation(atoms)
    if friction_per_fs is None:
        dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    else:
        dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    rec = {k: [] for k in ("time_fs", "positions", "momenta", "forces", "kinetic", "potential", "temperature_K")}
    step_t, step_total = [], []
    start = time.perf_counter()

    def record():
        step = dyn.nsteps
        e_pot = float(atoms.get_potential_energy())
        e_kin = float(atoms.get_kinetic_energy())
        step_t.append(step * timestep_fs)
        step_total.append(e_pot + e_kin)
        if step % interval == 0 or step == steps:
            rec["time_fs"].append(step * timestep_fs)
            rec["positions"].append(atoms.positions.copy())
            rec["momenta"].append(atoms.get_momenta())
            rec["forces"].append(np.array(atoms.get_forces()))
            rec["potential"].append(e_pot)
            rec["kinetic"].append(e_kin)
            rec["temperature_K"].append(float(atoms.get_temperature()))
        check_cancel(cancel, "molecular dynamics")
        if progress is not None and step > 0:
            elapsed = time.perf_counter() - start
            progress(step / steps, elapsed * (steps - step) / step)

    dyn.attach(record, interval=1)  # called at step 0 and after every step
    dyn.run(steps)
    out = {k: np.asarray(v) for k, v in rec.items()}
    out["total"] = out["kinetic"] + out["potential"]
    out["step_time_fs"], out["step_total"] = np.asarray(step_t), np.asarray(step_total)
    t_ps = out["step_time_fs"] / 1000.0
    out["drift_eV_per_ps"] = float(np.polyfit(t_ps, out["step_total"], 1)[0]) if len(t_ps) > 1 else 0.0
    out.update(numbers=atoms.numbers.copy(), cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(),
               masses=atoms.get_masses().copy(), ensemble="NVE" if friction_per_fs is None else "Langevin")
    return out
