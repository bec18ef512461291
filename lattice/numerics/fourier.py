"""Fourier acceleration: a step size per lattice momentum (Batrouni et al., PRD 32 (1985) 2736).

With the mass M² of the preconditioner, every mode p moves with the step

    ε(p) = ε (p̂²_max + M²) / (p̂² + M²),    p̂² = Σ_μ 4 sin²(p_μ/2)                      (1)

so the slow infrared modes move as fast as the ultraviolet ones. Langevin uses eq. (1) as its
step (exact only as ε → 0); :mod:`lattice.numerics.exact` gives that step's equilibrium bias
on the free field. HMC uses its inverse as a mass per mode (exact at any step,
:mod:`lattice.samplers.hmc`):

    M(p) = (p̂² + M²) / (p̂²_max + M²) = ε / ε(p)                                       (2)

Both act on a real field f through the Fourier multiplier

    (K f)_x = F⁻¹[k(p) F[f]_p]_x,                                                        (3)

with k real and even in p (k(p) = k(−p)), so K f is real and K is symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.geometry import phat2, rfft_phat2
from lattice.numerics.phi4 import Phi4

__all__ = ["fourier_mass2_auto", "fourier_step_factor", "fourier_multiplier"]


def fourier_mass2_auto(theory: Phi4) -> float:
    """Default M²: the bare mass² of the Gaussian part if positive, else p̂² of the smallest
    nonzero lattice momentum, 4 sin²(π / L_max)."""
    m2 = theory.bare_mass2
    if m2 > 0:
        return m2
    return 4.0 * math.sin(math.pi / max(theory.shape)) ** 2


def fourier_step_factor(shape, mass2: float, half: bool = True) -> np.ndarray:
    """ε(p)/ε = (p̂²_max + M²)/(p̂² + M²) on the rfft half grid (or the full grid)."""
    p2 = rfft_phat2(shape) if half else phat2(shape)
    return (phat2(shape).max() + mass2) / (p2 + mass2)


def fourier_multiplier(
    shape, kernel: np.ndarray, batch_last: bool = False
) -> Callable[[jax.Array], jax.Array]:
    """The multiplier of eq. (3), f ↦ F⁻¹[k(p) F[f]] by real FFTs over the lattice axes, for
    ``kernel`` k on the rfft half grid of ``shape`` (:func:`fourier_step_factor`'s). Fields are
    ``[*shape]`` (one chain) or, with ``batch_last``, ``[*shape, chains]``; the result keeps
    the field's dtype."""
    axes = tuple(range(len(shape)))
    k = np.asarray(kernel)[..., None] if batch_last else np.asarray(kernel)
    out_shape = tuple(shape)

    def multiply(f: jax.Array) -> jax.Array:
        fk = jnp.fft.rfftn(f, axes=axes) * k.astype(f.dtype)
        return jnp.fft.irfftn(fk, out_shape, axes).astype(f.dtype)

    return multiply
