"""Results (layer 5): observables with errors from an ensemble, sampler comparison, and the
Boltzmann-equilibrium checks."""
