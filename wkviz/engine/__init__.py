"""The engine, in the order the data flows: neighbour lists (:mod:`.neighbors`) → ν=1 kernels (:mod:`.density`) →
the Wigner iteration (:mod:`.wigner`, on :mod:`.spherical`'s Clebsch–Gordan tables) → structure, atom and tensor
kernels (:mod:`.kernels`, the public ``WignerKernel``). :mod:`.features` is the explicit feature-space route, kept
as an independent reference and for the cost comparison."""
