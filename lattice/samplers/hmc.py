"""Hybrid (Hamiltonian) Monte Carlo (Duane, Kennedy, Pendleton, Roweth 1987).

Momenta π ~ N(0, 1) per site, H = ½ Σ_x π_x² + S[φ]; a trajectory of length τ = n ε with the
leapfrog or Omelyan 2MN integrator (:mod:`lattice.samplers.integrators`), then accept with
probability min(1, e^{−ΔH}). The integrators are reversible and area-preserving, so the chain
is exact for any ε; in equilibrium ⟨e^{−ΔH}⟩ = 1 (Creutz 1988).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import noise
from ..geometry import site_sum
from ..phi4 import Phi4
from .base import BatchedStep, Sampler, StepInfo, chain_first, chain_last, metropolis
from .integrators import INTEGRATORS

__all__ = ["HMCState", "hmc", "hmc_trajectory"]


class HMCState(NamedTuple):
    phi: jax.Array
    action: jax.Array
    grad: jax.Array  # ∂S/∂φ at phi


def hmc_trajectory(theory: Phi4, phi, pi, grad, eps: float, n_steps: int, integrator: str):
    """Integrate Hamilton's equations; returns (φ, π, ∂S/∂φ) at the end of the trajectory."""
    fn, _ = INTEGRATORS[integrator]
    return fn(theory.grad, phi, pi, grad, eps, n_steps)


def hmc(
    theory: Phi4, trajectory_length: float = 1.0, steps: int = 10, integrator: str = "leapfrog"
) -> Sampler:
    """HMC with ``steps`` integrator steps of size ``trajectory_length / steps``."""
    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r} (allowed: {', '.join(INTEGRATORS)})")
    if trajectory_length <= 0 or steps < 1:
        raise ValueError("trajectory_length must be > 0 and steps >= 1")
    eps = float(trajectory_length) / int(steps)

    def init(phi):
        return HMCState(phi, theory.action(phi), theory.grad(phi))

    def step(key, state):
        phi, s0, g0 = state
        pi = noise.normal(key, phi.shape, phi.dtype, stream=0)
        phi1, pi1, g1 = hmc_trajectory(theory, phi, pi, g0, eps, steps, integrator)
        s1 = theory.action(phi1)
        nd = theory.ndim  # site sums with batch-independent rounding (geometry.site_sum)
        delta_h = 0.5 * (site_sum(pi1 * pi1, nd) - site_sum(pi * pi, nd)) + (s1 - s0)
        accepted, acceptance = metropolis(key, -delta_h)
        new = jax.tree_util.tree_map(
            lambda a, b: jnp.where(accepted, a, b), HMCState(phi1, s1, g1), state
        )
        return new, StepInfo(acceptance.astype(phi.dtype), accepted, delta_h)

    grads = INTEGRATORS[integrator][1] * steps
    batched = _chain_last(theory, eps, steps, integrator)
    return Sampler(init, step, f"hmc-{integrator}", "exact", None, grads, batched=batched)


def _chain_last(theory: Phi4, eps: float, steps: int, integrator: str) -> BatchedStep:
    """The HMC step of all chains at once, chain axis last (fields ``[*shape, chains]``):
    the arithmetic of ``step`` in the layout where the stencil shifts whole rows of chains
    (:class:`~lattice.samplers.base.BatchedStep`). The momenta are :func:`noise.normal` of
    the step key in that layout, the accept/reject the same per-chain uniform."""
    shape, nd = theory.shape, theory.ndim
    fn, _ = INTEGRATORS[integrator]

    def grad(phi):
        return theory.grad(phi, True)

    def enter(states):
        return HMCState(chain_last(states.phi), states.action, chain_last(states.grad))

    def leave(c):
        return HMCState(chain_first(c.phi), c.action, chain_first(c.grad))

    def step(t, keys, c):
        phi, s0, g0 = c
        pi = noise.normal_from_words(noise.pair_words(keys, shape), shape, phi.dtype)
        phi1, pi1, g1 = fn(grad, phi, pi, g0, eps, steps)
        s1 = theory.action(phi1, True)
        kin = 0.5 * (site_sum(pi1 * pi1, nd, True) - site_sum(pi * pi, nd, True))
        delta_h = kin + (s1 - s0)
        accepted, acceptance = jax.vmap(metropolis)(keys, -delta_h)
        sites = accepted.reshape((1,) * nd + accepted.shape)
        new = HMCState(
            jnp.where(sites, phi1, phi),
            jnp.where(accepted, s1, s0),
            jnp.where(sites, g1, g0),
        )
        return new, StepInfo(acceptance.astype(phi.dtype), accepted, delta_h)

    # float64: vmap(step) measured faster at 16² x 1024 (docs/PERFORMANCE.md)
    return BatchedStep(enter, step, leave, dtypes=("float32",))
