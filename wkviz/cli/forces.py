"""``python -m wkviz fit --target energy --forces forces [--save-model model.npz]`` (DESIGN.md §3b).

With ``--forces`` the fit is an energy-and-force sparse GP on FPS active environments
(:class:`wkviz.models.forces.EnergyForceModel`): energies from ``atoms.info[TARGET]`` (or the calculator results),
forces from ``atoms.arrays[KEY]`` (or the calculator results). stdout ends with
``FORCE_MAE=<float> FORCE_RMSE=<float>`` (eV/Å per Cartesian component) and then ``MAE=<float> RMSE=<float>``
(energy, eV).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from .common import FitProgress, check_out, hypers_from_args, note, note_preset, preset_from_args, read_structures

__all__ = ["add_force_flags", "run_force_fit"]


def add_force_flags(parser) -> None:
    """Add ``--forces``, ``--save-model`` and ``--active-environments`` (unless another part defined it) to ``fit``."""
    g = parser.add_argument_group("energy-and-force models")
    g.add_argument("--forces", metavar="KEY", default=None,
                   help="fit energies and forces: per-atom forces in atoms.arrays[KEY] or the calculator results "
                        "(eV/Å); the model is a sparse GP on active environments")
    g.add_argument("--save-model", metavar="NPZ", default=None,
                   help="with --forces: write the fitted model (npz + JSON, no pickle) for `wkviz md` and the ASE "
                        "calculator")
    from ..models.forces import CV_FOLDS, DEFAULT_ACTIVE, ENERGY_NOISE_CHOICES

    g.add_argument("--energy-noise", choices=ENERGY_NOISE_CHOICES, default=ENERGY_NOISE_CHOICES[0],
                   help="with --forces: how the energy noise σ_E is chosen; cv (default): the evidence's σ_E "
                        f"lowered to the step with the best {CV_FOLDS}-fold cross-validated energy and force errors "
                        "(the evidence alone trades the energies for the many force components); evidence: by the "
                        "evidence")
    if "--active-environments" not in parser._option_string_actions:
        g.add_argument("--active-environments", type=int, default=None, metavar="M",
                       help=f"active environments of the sparse model (FPS; default min({DEFAULT_ACTIVE}, training "
                            "atoms))")
    if "--active-seed" not in parser._option_string_actions:
        g.add_argument("--active-seed", type=int, default=0, help="seed of the active-environment selection")


def _energies(frames, key, what):
    from ..models.forces import energy_of

    out = []
    for k, atoms in enumerate(frames):
        value = energy_of(atoms, key)
        if value is None:
            raise InputError(f"structure {k} of the {what} file has no scalar '{key}' in atoms.info or its "
                             "calculator results; give the energy key with --target")
        out.append(value)
    return np.array(out)


def _forces(frames, key, what):
    from ..models.forces import forces_of

    out = []
    for k, atoms in enumerate(frames):
        f = forces_of(atoms, key)
        if f is None or f.shape != (len(atoms), 3):
            raise InputError(f"structure {k} of the {what} file has no per-atom forces '{key}' of shape "
                             f"({len(atoms)}, 3) in atoms.arrays or its calculator results; check --forces")
        out.append(f)
    return out


def run_force_fit(args) -> int:
    """``fit`` with ``--forces``; returns the exit code (0)."""
    from ..models.forces import DEFAULT_ACTIVE, EnergyForceModel, describe_noise_choice

    check_out(args.save_model, "model.npz", inputs=[args.train, args.test])
    train_frames = read_structures(args.train, "training")
    test_frames = read_structures(args.test, "test")
    preset, reason = preset_from_args(args, train_frames + test_frames)
    hypers = hypers_from_args(args, preset=preset)
    y_train = _energies(train_frames, args.target, "training")
    y_test = _energies(test_frames, args.target, "test")
    f_train = _forces(train_frames, args.forces, "training")
    f_test = _forces(test_frames, args.forces, "test")
    if len(train_frames) < 2:
        raise InputError("the training file needs at least 2 structures")
    n_atoms = sum(len(a) for a in train_frames)
    n_active = args.active_environments or min(DEFAULT_ACTIVE, n_atoms)
    if not 1 <= n_active <= n_atoms:
        raise InputError(f"--active-environments must be between 1 and the {n_atoms} training atoms, got {n_active}")
    note_preset(preset, reason, args)
    note(f"wkviz fit: energies '{args.target}' and forces '{args.forces}' of {len(train_frames)} training and "
         f"{len(test_frames)} test structures; sparse GP on {n_active} active environments")
    start = time.perf_counter()
    progress = FitProgress("energy+force model")
    model = EnergyForceModel(hypers, n_active=n_active, seed=args.active_seed, energy_noise=args.energy_noise)
    model.fit(train_frames, y_train, f_train, progress=lambda f, msg: progress(f))
    note(f"model fitted in {time.perf_counter() - start:.1f} s")
    E, F = model.predict(test_frames)
    if args.save_model:
        model.save(args.save_model)
        note(f"wrote {args.save_model}")
    s = model.summary()
    weights = ", ".join(f"ν={nu}: {w:.3g}" for nu, w in zip(s["nus"], s["weights"]))
    unit_e = "eV/√atom" if s["sigma_per_atom"] else "eV"
    print(f"model energy+force: weights {weights}; σ_E {s['sigma_energy']:.4g} {unit_e}, "
          f"σ_F {s['sigma_force']:.4g} eV/Å; log evidence {s['log_evidence']:.6g}")
    note(describe_noise_choice(s))
    df = np.concatenate([(f - t).ravel() for f, t in zip(F, f_test)])
    de = E - y_test
    print(f"FORCE_MAE={np.abs(df).mean():.8g} FORCE_RMSE={np.sqrt(np.mean(df ** 2)):.8g}")
    print(f"MAE={np.abs(de).mean():.8g} RMSE={np.sqrt(np.mean(de ** 2)):.8g}")
    return 0
