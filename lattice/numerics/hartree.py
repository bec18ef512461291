"""The self-consistent Gaussian (Hartree) approximation of the φ⁴ action, and its score.

Wick's theorem replaces the quartic term g φ⁴ of the canonical action (``phi4.py`` eq. (1)) by
6 g G φ² (up to a constant), with G = ⟨φ_x²⟩ of the Gaussian itself. With the kernel written as
A(p) = h (p̂² + μ²) this is::

    h μ² = 2a − 2hd + 12 g G,     G = (1/V) Σ_p 1 / (h (p̂² + μ²))                 (1)

(Hartree 1928; the Gaussian variational ansatz of the φ⁴ literature). The right-hand side falls
from +∞ to 2a − 2hd as μ² grows from 0, so (1) has exactly one root μ² > 0 for every coupling,
even for m² < 0, where the Gaussian part of the action alone has no normalizable law.

The noised Gaussian N(0, A⁻¹) ∗ N(0, σ²) has the score, diagonal in momentum space::

    ∇ log q_σ(y) = F⁻¹[ −A(p) / (1 + σ² A(p)) · ỹ_p ]                              (2)

(``lattice.score.gaussian`` eq. (1), there for the exact free field).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from lattice.numerics.geometry import phat2
from lattice.numerics.phi4 import Phi4

__all__ = ["hartree_mass2", "hartree_kernel", "gaussian_score"]


def hartree_mass2(theory: Phi4) -> float:
    """μ² > 0 of eq. (1), by bisection in log μ². At λ = 0 it is the bare mass (ValueError
    when that is not positive: a massless or tachyonic free field has no Gaussian law)."""
    h, a, g = theory.coefficients
    p2 = phat2(theory.shape).ravel()
    bare = (2.0 * a - 2.0 * h * theory.ndim) / h
    if g == 0:
        if bare <= 0:
            raise ValueError("a free field needs 2a > 2hd (a positive mass) for a Gaussian law")
        return bare

    def excess(log_mu2: float) -> float:  # right-hand side minus left of (1), decreasing
        mu2 = math.exp(log_mu2)
        return bare + 12.0 * g * float(np.mean(1.0 / (h * (p2 + mu2)))) / h - mu2

    lo, hi = -80.0, 0.0
    while excess(hi) > 0:
        hi += 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def hartree_kernel(theory: Phi4, mu2: float | None = None) -> np.ndarray:
    """A(p) = h (p̂² + μ²) on the momentum grid, μ² of eq. (1) unless given."""
    h = theory.coefficients[0]
    mu2 = hartree_mass2(theory) if mu2 is None else mu2
    return h * (phat2(theory.shape) + mu2)


def gaussian_score(y: jnp.ndarray, sigma, kernel: jnp.ndarray) -> jnp.ndarray:
    """Eq. (2) with a positive kernel A(p) [*shape], for a batch ``y`` [B, *shape] and σ scalar
    or [B]."""
    nd = kernel.ndim
    axes = tuple(range(-nd, 0))
    s2 = jnp.reshape(jnp.broadcast_to(jnp.asarray(sigma, y.dtype), y.shape[:1]), (-1,) + (1,) * nd)
    s2 = s2 * s2
    A = kernel.astype(y.dtype)[None]
    yt = jnp.fft.fftn(y, axes=axes)
    return jnp.real(jnp.fft.ifftn(-A / (1.0 + s2 * A) * yt, axes=axes)).astype(y.dtype)
