"""Per-configuration observables of docs/conventions.md §1, evaluated inside the sampling loop.

For one configuration with m = (1/V) Σ_x φ_x:

=========  ==========================================================
``action``  S/V
``phi2``    (1/V) Σ_x φ_x²
``phi4``    (1/V) Σ_x φ_x⁴
``m``       m;  ``abs_m`` |m|;  ``m2`` m²;  ``m4`` m⁴
``chi``     V m²  (its ensemble average is χ = V⟨m²⟩)
``sd``      (1/V) Σ_x φ_x ∂S/∂φ_x  (Schwinger–Dyson: exactly 1 on average in equilibrium)
``dsdphi``  (1/V) Σ_x ∂S/∂φ_x  (Schwinger–Dyson: ⟨∂S/∂φ_x⟩ = 0)
``G``       G(t) = (1/V) Σ_{x0} Φ(x0) Φ(x0 + t), Φ(x0) = Σ_{x⃗} φ_{x0,x⃗}  (t = 0..L0−1)
=========  ==========================================================

so that Σ_t G(t) = V m² and the ensemble average of G is the time-slice correlator of
docs/conventions.md §1. The two-point Schwinger–Dyson identity ⟨φ_y ∂S/∂φ_x⟩ = δ_xy, summed like G,
is checked on ``G_sd(t) = (1/V) Σ_{x0} Ψ(x0) Φ(x0 + t)`` with Ψ(x0) = Σ_{x⃗} ∂S/∂φ_{x0,x⃗}:
its average is exactly δ_{t,0}. The derived ``chi_conn`` = V(⟨m²⟩ − ⟨|m|⟩²) and
``binder`` = 1 − ⟨m⁴⟩/(3⟨m²⟩²)
are functions of ensemble averages, formed at analysis time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lattice.numerics.geometry import pairwise_sum, site_sum
from lattice.numerics.phi4 import Phi4

__all__ = ["measure", "SCALAR_OBSERVABLES", "observable_shapes"]

SCALAR_OBSERVABLES = (
    "action",
    "phi2",
    "phi4",
    "m",
    "abs_m",
    "m2",
    "m4",
    "chi",
    "sd",
    "dsdphi",
)


def measure(
    theory: Phi4, phi: jax.Array, grad: jax.Array | None = None, batch_last: bool = False
) -> dict[str, jax.Array]:
    """All observables of one configuration or a batch (lattice axes last; first with
    ``batch_last``, the chain-last layout of a :class:`~lattice.samplers.base.BatchedStep`). Each
    observable comes out with the batch axes first either way.

    ``grad`` (∂S/∂φ at ``phi``) is reused when a sampler carries it.
    """
    d, V = theory.ndim, theory.volume
    if grad is None:
        grad = theory.grad(phi, batch_last)
    phi2 = phi * phi

    def mean(x):  # batch-independent rounding (see geometry.site_sum)
        return site_sum(x, d, batch_last) / V

    m = mean(phi)
    m2 = m * m
    # time-slice sums Φ(x0), then the periodic autocorrelation by FFT along axis 0
    L0 = theory.shape[0]
    if batch_last:  # the same tree over the axes after axis 0; then chains first

        def slice_sums(x):
            y = pairwise_sum(x.reshape(L0, -1, x.shape[-1]), 1, True) if d > 1 else x
            return jnp.moveaxis(y, 0, -1)

        slices, gslices = slice_sums(phi), slice_sums(grad)
    else:
        slices = site_sum(phi, d - 1) if d > 1 else phi  # sum over the axes after axis 0
        gslices = site_sum(grad, d - 1) if d > 1 else grad
    ft, gt = jnp.fft.rfft(slices, axis=-1), jnp.fft.rfft(gslices, axis=-1)
    G = jnp.fft.irfft(ft * jnp.conj(ft), n=L0, axis=-1).astype(phi.dtype) / V
    G_sd = jnp.fft.irfft(ft * jnp.conj(gt), n=L0, axis=-1).astype(phi.dtype) / V
    return {
        "action": theory.action(phi, batch_last) / V,
        "phi2": mean(phi2),
        "phi4": mean(phi2 * phi2),
        "m": m,
        "abs_m": jnp.abs(m),
        "m2": m2,
        "m4": m2 * m2,
        "chi": V * m2,
        "sd": mean(phi * grad),
        "dsdphi": mean(grad),
        "G": G,
        "G_sd": G_sd,
    }


def observable_shapes(theory: Phi4) -> dict[str, tuple[int, ...]]:
    """Per-measurement shape of each stored observable."""
    out = {k: () for k in SCALAR_OBSERVABLES}
    out["G"] = (theory.shape[0],)
    out["G_sd"] = (theory.shape[0],)
    return out
