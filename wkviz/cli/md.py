"""``python -m wkviz md model.npz start.xyz --steps N --timestep FS --temperature K --out traj.extxyz``.

Molecular dynamics with a saved energy-and-force model (:class:`wkviz.calculator.WignerCalculator`): NVE (velocity
Verlet) by default, Langevin at ``--temperature`` when ``--friction`` is given. Velocities start from a
Maxwell–Boltzmann distribution at ``--temperature`` (``--seed``), without net momentum or rotation. Progress on
stderr; the trajectory (positions, momenta, energy, forces every ``--interval`` steps) is written atomically, so
``--out`` is never half-written. The dynamics is :func:`wkviz.calculator.run_md`. The last stdout line is
``STEPS=<n> E_START=<eV> E_END=<eV> DRIFT=<eV/ps>`` (total energy, linear slope).
"""

from __future__ import annotations

import time

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


def run_md(args) -> int:
    """Run ``md`` from parsed arguments; returns the exit code (0)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from .. import calculator
    from ..files import check_output_path, write_atomic_bytes
    from ..views.export import structures_extxyz

    calculator.check_md_settings(steps=args.steps, timestep_fs=args.timestep, temperature_K=args.temperature,
                                 interval=args.interval, friction_per_fs=args.friction,
                                 names={"steps": "--steps", "timestep_fs": "--timestep",
                                        "temperature_K": "--temperature", "interval": "--interval",
                                        "friction_per_fs": "--friction"})
    check_output_path(args.out, example="traj.extxyz")
    calc = calculator.WignerCalculator.load(args.model)
    start = read_structures(args.start, "starting")[0]
    kind = "NVE (velocity Verlet)" if args.friction is None else f"Langevin (friction {args.friction} /fs)"
    note(f"wkviz md: {len(start)} atoms, {args.steps} steps of {args.timestep} fs, {kind}, {args.temperature} K")
    t0 = time.perf_counter()
    run = calculator.run_md(start, calc, steps=args.steps, timestep_fs=args.timestep,
                            temperature_K=args.temperature, seed=args.seed, interval=args.interval,
                            friction_per_fs=args.friction, progress=ProgressLine("md"))
    frames = []
    for k, t_fs in enumerate(run["time_fs"]):
        snap = Atoms(numbers=run["numbers"], positions=run["positions"][k], momenta=run["momenta"][k],
                     cell=run["cell"], pbc=run["pbc"])
        snap.calc = SinglePointCalculator(snap, energy=float(run["potential"][k]), forces=run["forces"][k])
        snap.info.update(step=int(round(t_fs / args.timestep)), time_fs=float(t_fs),
                         total_energy=float(run["total"][k]), temperature_K=float(run["temperature_K"][k]))
        frames.append(snap)
    write_atomic_bytes(args.out, structures_extxyz(frames))  # --out is never half-written
    note(f"wrote {len(frames)} frames to {args.out} in {time.perf_counter() - t0:.1f} s")
    total = run["step_total"]
    print(f"STEPS={args.steps} E_START={total[0]:.8g} E_END={total[-1]:.8g} DRIFT={run['drift_eV_per_ps']:.6g}")
    return 0
