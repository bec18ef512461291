"""MALA: a Langevin proposal corrected by Metropolis–Hastings (Roberts & Tweedie 1996).

Proposal φ' = φ + ε F(φ) + √(2ε) ξ with F = −∂S/∂φ, i.e. q(φ'|φ) ∝ exp(−|φ' − φ − εF(φ)|²/(4ε)).
Accept with probability min(1, e^{−S(φ')} q(φ|φ') / (e^{−S(φ)} q(φ'|φ))), so the chain is exact
for any ε: e^{−S} is its stationary distribution.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lattice.numerics import noise
from lattice.numerics.geometry import site_sum
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import Exactness, Sampler, StepInfo, Traits, metropolis

__all__ = ["MALAState", "mala", "traits"]


class MALAState(NamedTuple):
    phi: jax.Array
    action: jax.Array
    force: jax.Array

    def grad_S(self) -> jax.Array:
        """∂S/∂φ at phi (the carried force, negated)."""
        return -self.force


def mala(theory: Phi4, step_size: float) -> Sampler:
    """Metropolis-adjusted Langevin sampler with step ε = ``step_size``."""
    if step_size <= 0:
        raise ValueError("step_size must be > 0")
    eps = float(step_size)
    sq = math.sqrt(2.0 * eps)

    def init(phi):
        return MALAState(phi, theory.action(phi), theory.force(phi))

    def step(key, state):
        phi, s0, f0 = state
        xi = noise.normal(key, phi.shape, phi.dtype, stream=0)
        prop = phi + eps * f0 + sq * xi
        s1, f1 = theory.action(prop), theory.force(prop)
        # log q(φ'|φ) = −|√(2ε)ξ|²/(4ε) = −|ξ|²/2 ; log q(φ|φ') = −|φ − φ' − εF(φ')|²/(4ε)
        back = phi - prop - eps * f1
        nd = theory.ndim  # site sums with batch-independent rounding (geometry.site_sum)
        log_ratio = (
            (s0 - s1) - site_sum(back * back, nd) / (4.0 * eps) + 0.5 * site_sum(xi * xi, nd)
        )
        accepted, acceptance = metropolis(key, log_ratio)
        new = jax.tree_util.tree_map(
            lambda a, b: jnp.where(accepted, a, b), MALAState(prop, s1, f1), state
        )
        return new, StepInfo(acceptance.astype(phi.dtype), accepted, -log_ratio)

    return Sampler(
        init=init,
        step=step,
        name="mala",
        traits=traits(),
        identity=("mala", (eps,), theory),
        forces_per_step=1,
    )


def traits() -> Traits:
    """Exact for any ε; ⟨e^{−ΔH}⟩ = 1 for ΔH = minus the log Metropolis ratio."""
    return Traits(Exactness.EXACT, accept_reject=True, energy_identity=True)
