"""Numerics (layer 1): the φ⁴ action, lattice geometry, counter-based noise, observables,
exact free-field results, the Γ-method and the one-site Fokker–Planck picture. No file I/O,
no global JAX configuration."""
