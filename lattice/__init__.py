"""lattice: stochastic quantization of lattice φ⁴ theory in JAX."""

__version__ = "0.1.0"
