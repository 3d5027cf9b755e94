"""Energy-and-force models on the bundled EMT gold data, and NVE molecular dynamics with the learned potential.

Parts:

* ``--part clusters``: 200 training / 100 test gold clusters (a random split, ``--seed``), energy-only vs
  energy+force :class:`wkviz.models.forces.EnergyForceModel` (same hyperparameters, same active environments, energy
  noise σ_E·√n_atoms unless ``--sigma-per-structure``):
  energy MAE (eV) and force MAE (eV/Å per Cartesian component), each ± the standard error over test structures
  (per-structure mean absolute force error for the force spread). Saves the energy+force model (``--model``) for
  the MD part.
* ``--part bulk``: the same on the 200 periodic cells (120 / 80), plus the stress MAE of the force model.
* ``--part validate``: for choices made without the test split. Trains on the 200 training clusters of the
  ``--part clusters`` split (same ``--seed``) and scores on ``--n-validation`` FRESH EMT gold clusters made by
  ``scripts/make_sample_data.py``'s ``gold_clusters`` (the bundled set's recipe) with ``--validation-seed``; for each
  M of ``--n-active 200,400,800`` the energy-only and energy+force models (same hyperparameters and seed, so the same
  active environments): energy and force MAE ± se, σ_E / σ_F, weights, log evidence, fit time split into phases
  (wall and CPU seconds: active environments and K_MM, kernel gradients, R factors, evidence search), and the paired
  per-cluster difference. Everything, with the load average at start and end, goes to ``--out`` (JSON, rewritten
  after every M).
* ``--part md``: NVE (velocity Verlet, ``--timestep`` fs, ``--steps``) from test clusters at 300 K, with the learned
  potential and with EMT itself, same start and velocities; drift = linear slope of the total energy (eV/ps,
  per atom too) and its fluctuation (std), mean ± se over ``--runs`` starting clusters.

Run (2-core machine, shared)::

    .venv/bin/python benchmarks/bench_forces.py --part clusters --model /tmp/gold_model.npz
    .venv/bin/python benchmarks/bench_forces.py --part bulk
    .venv/bin/python benchmarks/bench_forces.py --part md --model /tmp/gold_model.npz
    nice -n 10 .venv/bin/python benchmarks/bench_forces.py --part validate --n-active 200,400 --out validate.json

``--n-active`` takes a comma list for ``--part validate``; the other parts use its first value.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from wkviz.data.samples import load_sample
from wkviz.evaluation.forces import GOLD_FORCE_HYPERS
from wkviz.models.forces import DEFAULT_ACTIVE, EnergyForceModel, forces_of

ROOT = Path(__file__).resolve().parent.parent

# EMT's gold interactions reach about 5.4 Å plus a smooth tail: a 6 Å cutoff (switching from 5 Å) sees them all
GOLD = GOLD_FORCE_HYPERS  # one place: wkviz.evaluation.forces


def _se(x):
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _split(frames, n_train, n_test, seed):
    idx = np.random.default_rng(seed).permutation(len(frames))
    return [frames[i] for i in idx[:n_train]], [frames[i] for i in idx[n_train:n_train + n_test]]


def _errors(model, test, stress=False):
    E_true = np.array([a.get_potential_energy() for a in test])
    out = model.predict(test, stress=stress)
    E, F = out[0], out[1]
    e_abs = np.abs(E - E_true)
    f_abs = [np.abs(f - forces_of(a)).mean() for f, a in zip(F, test)]
    f_all = np.concatenate([(f - forces_of(a)).ravel() for f, a in zip(F, test)])
    row = {"energy_abs": e_abs.tolist(), "force_abs": [float(x) for x in f_abs],
           "energy_mae": float(e_abs.mean()), "energy_mae_se": _se(e_abs),
           "energy_mae_per_atom": float(np.mean(e_abs / [len(a) for a in test])),
           "force_mae": float(np.abs(f_all).mean()), "force_mae_se": _se(f_abs),
           "force_rmse": float(np.sqrt(np.mean(f_all ** 2))), "n_test": len(test)}
    if stress:
        s_err = [np.abs(s - a.get_stress(voigt=False)).mean() for s, a in zip(out[2], test)]
        if s_err:
            row["stress_mae"] = float(np.mean(s_err))
            row["stress_mae_se"] = _se(s_err)
    return row


def _paired(rows, what):
    """Energy+force minus energy-only absolute error per structure: mean, standard error, count better."""
    d = np.subtract(rows["energy+force"][f"{what}_abs"], rows["energy"][f"{what}_abs"])
    return {"mean": float(d.mean()), "se": _se(d), "better": int((d < 0).sum()), "n": len(d)}


def accuracy(kind, n_train, n_test, n_active, seed, model_path, hypers, sigma_per_atom=True):
    frames = [a for a in load_sample("gold") if a.info.get("config_type") == kind]
    train, test = _split(frames, n_train, n_test, seed)
    E = [a.get_potential_energy() for a in train]
    F = [forces_of(a) for a in train]
    rows = {}
    for name, forces in (("energy", None), ("energy+force", F)):
        t0 = time.perf_counter()
        model = EnergyForceModel(hypers, n_active=n_active, seed=seed, sigma_per_atom=sigma_per_atom).fit(
            train, E, forces)
        fit_s = time.perf_counter() - t0
        row = _errors(model, test, stress=kind == "bulk")
        row.update(fit_seconds=fit_s, **{k: v for k, v in model.summary().items() if k != "baseline"})
        rows[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if not k.endswith("_abs")}), flush=True)
        if forces is not None and model_path:
            model.save(model_path)
    # paired over the same test structures: energy+force minus energy-only absolute error, per structure
    for what in ("energy", "force"):
        p = _paired(rows, what)
        print(f"paired {what}: {p['mean']:+.5g} ± {p['se']:.2g} (energy+force better on {p['better']} of "
              f"{p['n']} test structures)", flush=True)
    return rows


def _make_sample_data():
    """scripts/make_sample_data.py as a module: the one place the gold recipe is written."""
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_clusters(n, seed):
    """n EMT gold clusters with the bundled set's recipe and another seed, written to extxyz and read back as
    :func:`load_sample` reads the bundled ones (same rounding, energies and forces on a single-point calculator)."""
    import ase.io

    from wkviz.data.io import read_structures

    frames = _make_sample_data().gold_clusters(n, seed)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return read_structures(buf.getvalue().encode(), filename="fresh_gold.extxyz")


class _PhaseClock:
    """A ``progress`` callback for :meth:`EnergyForceModel.fit` that stamps wall and CPU time at every call, so the
    fit splits into its phases: active environments + K_MM (until the first "kernel gradients" message), kernel
    gradients (until the last one), R factors and baseline (until "maximising the evidence"), the evidence search
    (until the cross-validation of σ_E, or "done"), that cross-validation (until "done"; zero without it)."""

    def __init__(self):
        self.marks = [(time.perf_counter(), time.process_time(), 0.0, "start")]

    def __call__(self, fraction, message):
        self.marks.append((time.perf_counter(), time.process_time(), float(fraction), message))

    def phases(self):
        def first(msg):
            return next(m for m in self.marks if m[3] == msg)

        def last(msg):
            return [m for m in self.marks if m[3] == msg][-1]

        done = first("done")
        cv = next((m for m in self.marks if m[3] == "choosing the energy noise by cross-validation"), done)
        bounds = [("active_environments", self.marks[0], first("kernel gradients")),
                  ("kernel_gradients", first("kernel gradients"), last("kernel gradients")),
                  ("r_factors", last("kernel gradients"), first("maximising the evidence")),
                  ("evidence_search", first("maximising the evidence"), cv),
                  ("energy_noise_cv", cv, done)]
        return {name: {"wall_s": b[0] - a[0], "cpu_s": b[1] - a[1]} for name, a, b in bounds}


def _line(M, name, row):
    ph = row["phases"]
    sf = f" / {row['sigma_force']:.4g} eV/Å" if row["sigma_force"] is not None else ""
    unit = "eV/√atom" if row["sigma_per_atom"] else "eV"
    return (f"M={M} {name:>12}: energy {row['energy_mae']:.4f} ± {row['energy_mae_se']:.4f} eV, forces "
            f"{row['force_mae']:.4f} ± {row['force_mae_se']:.4f} eV/Å, σ_E {row['sigma_energy']:.4g} {unit}{sf}, "
            f"c_ν [{', '.join(f'{w:.3g}' for w in row['weights'])}], log evidence {row['log_evidence']:.2f}, fit "
            f"{row['fit_seconds']:.1f} s (" + ", ".join(f"{k} {v['wall_s']:.1f} s / {v['cpu_s']:.1f} CPU s"
                                                       for k, v in ph.items()) + ")")


def validate(n_actives, seed, validation_seed, n_validation, hypers, sigma_per_atom, out_path):
    """Energy-only vs energy+force on fresh clusters for each M; returns the report written to ``out_path``."""
    report = {"command": [sys.executable] + sys.argv, "load_start": os.getloadavg(), "hypers": hypers.to_dict(),
              "seed": seed, "validation_seed": validation_seed, "n_validation": n_validation,
              "sigma_per_atom": sigma_per_atom, "results": []}
    frames = [a for a in load_sample("gold") if a.info.get("config_type") == "cluster"]
    train, _ = _split(frames, 200, 100, seed)  # the --part clusters split: its test clusters are never read
    t0 = time.perf_counter()
    fresh = fresh_clusters(n_validation, validation_seed)
    report.update(n_train=len(train), train_atoms=sum(len(a) for a in train),
                  validation_atoms=sum(len(a) for a in fresh), validation_seconds=time.perf_counter() - t0)
    print(f"{len(train)} training clusters ({report['train_atoms']} atoms), {len(fresh)} fresh clusters "
          f"({report['validation_atoms']} atoms, seed {validation_seed}, made in {report['validation_seconds']:.1f} s)",
          flush=True)
    E = [a.get_potential_energy() for a in train]
    F = [forces_of(a) for a in train]
    for M in n_actives:
        rows = {}
        for name, forces in (("energy", None), ("energy+force", F)):
            clock = _PhaseClock()
            load = os.getloadavg()
            t1 = time.perf_counter()
            model = EnergyForceModel(hypers, n_active=M, seed=seed, sigma_per_atom=sigma_per_atom).fit(
                train, E, forces, progress=clock)
            fit_s = time.perf_counter() - t1
            t1 = time.perf_counter()
            row = _errors(model, fresh)
            row.update(fit_seconds=fit_s, model_fit_seconds=model.fit_seconds_, phases=clock.phases(),
                       predict_seconds=time.perf_counter() - t1, load_at_fit=load,
                       **{k: v for k, v in model.summary().items() if k != "baseline"})
            rows[name] = row
            print(_line(M, name, row), flush=True)
        paired = {what: _paired(rows, what) for what in ("energy", "force")}
        for what, p in paired.items():
            print(f"M={M} paired {what} (energy+force − energy-only): {p['mean']:+.4f} ± {p['se']:.4f} "
                  f"(energy+force better on {p['better']} of {p['n']})", flush=True)
        report["results"].append({"n_active": M, "models": rows, "paired": paired})
        report["load_end"] = os.getloadavg()
        if out_path:  # after every M: a long run keeps what it has
            Path(out_path).write_text(json.dumps(report, indent=1))
    return report


def _n_active(text):
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--n-active wants positive integers separated by commas, got {text!r}")
    return values


def _nve(atoms, calc, steps, timestep_fs, temperature, seed):
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
    t0 = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - t0
    etot = np.array(etot)
    t_ps = np.arange(len(etot)) * timestep_fs / 1000.0
    slope = float(np.polyfit(t_ps, etot, 1)[0])
    return {"drift_eV_per_ps": slope, "drift_meV_per_atom_ps": 1000 * slope / len(atoms),
            "end_minus_start_eV": float(etot[-1] - etot[0]), "std_eV": float(np.std(etot)),
            "seconds": seconds, "n_atoms": len(atoms)}


def md(model_path, steps, timestep, temperature, runs, seed):
    from ase.calculators.emt import EMT

    from wkviz.calculator import WignerCalculator

    frames = [a for a in load_sample("gold") if a.info.get("config_type") == "cluster"]
    _, test = _split(frames, 200, 100, seed)
    starts = sorted(test, key=len)[:runs]  # the smallest test clusters: MD cost grows with the atoms
    calc = WignerCalculator.load(model_path)
    out = {"wigner": [], "emt": []}
    for k, atoms in enumerate(starts):
        for name, c in (("wigner", calc), ("emt", EMT())):
            r = _nve(atoms, c, steps, timestep, temperature, seed + k)
            out[name].append(r)
            print(name, k, json.dumps(r), flush=True)
    for name, rs in out.items():
        d = [abs(r["drift_meV_per_atom_ps"]) for r in rs]
        s = [r["std_eV"] for r in rs]
        print(f"{name}: |drift| {np.mean(d):.4f} ± {_se(d):.4f} meV/atom/ps, std(E_tot) {np.mean(s) * 1000:.3f} ± "
              f"{_se(s) * 1000:.3f} meV (n={len(rs)}), {np.mean([r['seconds'] for r in rs]) / steps * 1000:.1f} ms/step",
              flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("clusters", "bulk", "md", "validate"), required=True)
    p.add_argument("--n-active", type=_n_active, default=[DEFAULT_ACTIVE],
                   help="active environments; a comma list (200,400,800) for --part validate, else the first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-seed", type=int, default=1001, help="seed of the fresh clusters (--part validate)")
    p.add_argument("--n-validation", type=int, default=100, help="fresh clusters (--part validate)")
    p.add_argument("--out", default="results.json", help="JSON report of --part validate")
    p.add_argument("--model", default="", help="where the clusters part saves its model and the md part reads it")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--timestep", type=float, default=2.0, help="fs")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cutoff", type=float, default=GOLD.cutoff, help="Å (default 6)")
    p.add_argument("--sigma-per-structure", action="store_true",
                   help="energy noise σ_E per structure instead of the default σ_E·√n_atoms")
    args = p.parse_args()
    hypers = GOLD.replace(cutoff=args.cutoff)
    print("load", os.getloadavg(), "hypers", hypers.to_json(), flush=True)
    if args.part == "clusters":
        accuracy("cluster", 200, 100, args.n_active[0], args.seed, args.model, hypers, not args.sigma_per_structure)
    elif args.part == "bulk":
        accuracy("bulk", 120, 80, args.n_active[0], args.seed, args.model, hypers, not args.sigma_per_structure)
    elif args.part == "validate":
        validate(args.n_active, args.seed, args.validation_seed, args.n_validation, hypers,
                 not args.sigma_per_structure, args.out)
    else:
        md(args.model, args.steps, args.timestep, args.temperature, args.runs, args.seed)
    print("load", os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
