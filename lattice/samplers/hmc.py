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

from lattice.numerics import noise
from lattice.numerics.geometry import site_sum
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import (
    BatchedStep,
    Exactness,
    Sampler,
    StepInfo,
    Traits,
    chain_first,
    chain_last,
    metropolis,
)
from lattice.samplers.integrators import INTEGRATORS

__all__ = ["HMCState", "hmc", "hmc_trajectory", "traits"]


class HMCState(NamedTuple):
    phi: jax.Array
    action: jax.Array
    grad: jax.Array  # ∂S/∂φ at phi

    def grad_S(self) -> jax.Array:
        return self.grad


def hmc_trajectory(
    theory: Phi4, phi, pi, grad, eps: float, n_steps: int, integrator: str, batch_last=False
):
    """Integrate Hamilton's equations; returns (φ, π, ∂S/∂φ) at the end of the trajectory
    (lattice axes last; first with ``batch_last``)."""
    fn, _ = INTEGRATORS[integrator]
    return fn(lambda p: theory.grad(p, batch_last), phi, pi, grad, eps, n_steps)


def hmc(theory: Phi4, trajectory_length: float, steps: int, integrator: str) -> Sampler:
    """HMC with ``steps`` integrator steps of size ``trajectory_length / steps`` (the defaults
    are :class:`lattice.config.sampler.Hmc`'s)."""
    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r} (allowed: {', '.join(INTEGRATORS)})")
    if trajectory_length <= 0 or steps < 1:
        raise ValueError("trajectory_length must be > 0 and steps >= 1")
    eps = float(trajectory_length) / int(steps)

    def init(phi):
        grad = theory.grad(phi)
        return HMCState(phi, theory.action_from_grad(phi, grad), grad)

    def step(key, state):
        pi = noise.normal(key, state.phi.shape, state.phi.dtype, stream=0)
        return _update(theory, key, state, pi, eps, steps, integrator, False)

    grads = INTEGRATORS[integrator][1] * steps
    batched = _chain_last(theory, eps, steps, integrator)
    return Sampler(
        init=init,
        step=step,
        name=f"hmc-{integrator}",
        traits=traits(),
        identity=("hmc", (float(trajectory_length), int(steps), integrator), theory),
        forces_per_step=grads,
        batched=batched,
    )


def traits() -> Traits:
    """Exact for any step; ⟨e^{−ΔH}⟩ = 1 (Creutz 1988) for the energy violation ΔH."""
    return Traits(Exactness.EXACT, accept_reject=True, energy_identity=True)


def _update(
    theory: Phi4, key, state: HMCState, pi, eps: float, steps: int, integrator: str, batch_last
) -> tuple[HMCState, StepInfo]:
    """One HMC update from momenta ``pi``: the trajectory, ΔH = ½ Σ (π'² − π²) + S' − S
    (S from φ and ∂S/∂φ by :meth:`Phi4.action_from_grad`; site sums with batch-independent
    rounding, :func:`geometry.site_sum`) and the
    accept/reject with stream 1 of ``key``. One chain, or with ``batch_last`` all chains
    at once (fields ``[*shape, chains]``, one key per chain)."""
    phi, s0, g0 = state
    phi1, pi1, g1 = hmc_trajectory(theory, phi, pi, g0, eps, steps, integrator, batch_last)
    s1 = theory.action_from_grad(phi1, g1, batch_last)  # eq. (4) of lattice.numerics.phi4
    nd = theory.ndim
    kin = 0.5 * (site_sum(pi1 * pi1, nd, batch_last) - site_sum(pi * pi, nd, batch_last))
    delta_h = kin + (s1 - s0)
    accept = jax.vmap(metropolis) if batch_last else metropolis
    accepted, acceptance = accept(key, -delta_h)
    sites = accepted.reshape((1,) * nd + accepted.shape)  # over the lattice axes
    new = HMCState(
        jnp.where(sites, phi1, phi), jnp.where(accepted, s1, s0), jnp.where(sites, g1, g0)
    )
    return new, StepInfo(acceptance.astype(phi.dtype), accepted, delta_h)


def _chain_last(theory: Phi4, eps: float, steps: int, integrator: str) -> BatchedStep:
    """The HMC step of all chains at once, chain axis last (fields ``[*shape, chains]``):
    :func:`_update` in the layout where the stencil shifts whole rows of chains
    (:class:`~lattice.samplers.base.BatchedStep`). The momenta are :func:`noise.normal` of
    the step key in that layout, the accept/reject the same per-chain uniform."""
    shape = theory.shape

    def enter(states):
        return HMCState(chain_last(states.phi), states.action, chain_last(states.grad))

    def leave(c):
        return HMCState(chain_first(c.phi), c.action, chain_first(c.grad))

    def step(t, keys, c):
        pi = noise.normal_from_words(noise.pair_words(keys, shape), shape, c.phi.dtype)
        return _update(theory, keys, c, pi, eps, steps, integrator, True)

    # float64: vmap(step) measured faster at 16² x 1024 (docs/PERFORMANCE.md)
    return BatchedStep(enter, step, leave, dtypes=("float32",))
