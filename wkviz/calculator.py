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

__all__ = ["WignerCalculator"]


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
