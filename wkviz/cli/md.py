"""``python -m wkviz md model.npz start.xyz --steps N --timestep FS --temperature K --out traj.extxyz``.

Molecular dynamics with a saved energy-and-force model (:class:`wkviz.calculator.WignerCalculator`): NVE (velocity
Verlet) by default, Langevin at ``--temperature`` when ``--friction`` is given. Velocities start from a
Maxwell–Boltzmann distribution at ``--temperature`` (``--seed``), without net momentum or rotation. Progress on
stderr; the trajectory (positions, velocities, energy, forces every ``--interval`` steps) is written to a temporary
file next to ``--out`` and moved into place at the end, so ``--out`` is never half-written. The last stdout line is
``STEPS=<n> E_START=<eV> E_END=<eV> DRIFT=<eV/ps>`` (total energy, linear slope).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError
from .common import ProgressLine, note, read_structures

__all__ = ["add_md_parser", "run_md"]


def add_md_parser(subparsers):
    """Register ``md``; returns the parser."""
    p = subparsers.add_parser("md", help="molecular dynamics with a saved energy-and-force model",
                              description="Molecular dynamics (NVE, or Langevin with --friction) with a model saved "
                                          "by `fit --forces ... --save-model`; last stdout line "
                                          "STEPS=<n> E_START=<eV> E_END=<eV> DRIFT=<eV/ps>.")
    p.add_argument("model", help="model file written by `fit --forces ... --save-model`")
    p.add_argument("start", help="starting structure (first frame of any file ase can read)")
    p.add_argument("--steps", type=int, required=True, help="number of time steps")
    p.add_argument("--timestep", type=float, default=1.0, metavar="FS", help="time step in fs (default 1)")
    p.add_argument("--temperature", type=float, default=300.0, metavar="K",
                   help="initial (NVE) or bath (Langevin) temperature in K (default 300)")
    p.add_argument("--friction", type=float, default=None, metavar="PER_FS",
                   help="Langevin friction in 1/fs (e.g. 0.01); without it the run is NVE")
    p.add_argument("--interval", type=int, default=10, help="write every N-th step (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the Langevin noise")
    p.add_argument("--out", required=True, help="trajectory file (extxyz)")
    p.set_defaults(func=run_md)
    return p


def _check(args):
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if not 0 < args.timestep <= 10:
        raise InputError(f"--timestep must be above 0 and at most 10 fs, got {args.timestep}")
    if args.temperature < 0:
        raise InputError(f"--temperature must be at least 0 K, got {args.temperature}")
    if args.friction is not None and args.friction <= 0:
        raise InputError(f"--friction must be above 0 (1/fs), got {args.friction}")
    if args.interval < 1:
        raise InputError(f"--interval must be at least 1, got {args.interval}")


def run_md(args) -> int:
    """Run ``md`` from parsed arguments; returns the exit code (0)."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from ..calculator import WignerCalculator

    _check(args)
    calc = WignerCalculator.load(args.model)
    atoms = read_structures(args.start, "starting")[0].copy()
    # the file's own labels would clash with (and be mistaken for) the model's in the trajectory
    for key in ("energy", "free_energy", "stress"):
        atoms.info.pop(key, None)
    atoms.arrays.pop("forces", None)
    atoms.calc = calc
    rng = np.random.default_rng(args.seed)
    # thermalize_momenta replaces MaxwellBoltzmannDistribution from ase 3.29 on
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=args.temperature, rng=rng)
    vd.Stationary(atoms)
    if not atoms.pbc.any():
        vd.ZeroRotation(atoms)
    dt = args.timestep * units.fs
    if args.friction is None:
        dyn = VelocityVerlet(atoms, timestep=dt)
        kind = "NVE (velocity Verlet)"
    else:
        dyn = Langevin(atoms, timestep=dt, temperature_K=args.temperature, friction=args.friction / units.fs,
                       fixcm=False, rng=rng)
        kind = f"Langevin (friction {args.friction} /fs)"
    note(f"wkviz md: {len(atoms)} atoms, {args.steps} steps of {args.timestep} fs, {kind}, {args.temperature} K")
    frames, etot = [], []
    progress = ProgressLine("md")
    start = time.perf_counter()

    def record():
        step = dyn.nsteps
        e_pot = atoms.get_potential_energy()
        e_tot = e_pot + atoms.get_kinetic_energy()
        etot.append(e_tot)
        if step % args.interval == 0 or step == args.steps:
            snap = atoms.copy()
            snap.calc = SinglePointCalculator(snap, energy=e_pot, forces=atoms.get_forces())
            snap.info.update(step=step, time_fs=step * args.timestep, total_energy=e_tot,
                             temperature_K=float(atoms.get_temperature()))
            frames.append(snap)
        elapsed = time.perf_counter() - start
        frac = step / args.steps
        progress(frac, elapsed * (1 - frac) / frac if frac > 0 else None)

    dyn.attach(record, interval=1)  # called at step 0 and after every step
    dyn.run(args.steps)
    tmp = f"{args.out}.tmp-{os.getpid()}"
    try:
        write(tmp, frames, format="extxyz")
        os.replace(tmp, args.out)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise InputError(f"cannot write {args.out}: {exc.strerror}; check the directory exists and is writable") \
            from None
    note(f"wrote {len(frames)} frames to {args.out} in {time.perf_counter() - start:.1f} s")
    t_ps = np.arange(len(etot)) * args.timestep / 1000.0
    drift = float(np.polyfit(t_ps, etot, 1)[0]) if len(etot) > 1 else 0.0
    print(f"STEPS={args.steps} E_START={etot[0]:.8g} E_END={etot[-1]:.8g} DRIFT={drift:.6g}")
    return 0
