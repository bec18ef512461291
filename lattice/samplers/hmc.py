"""Hybrid (Hamiltonian) Monte Carlo (Duane, Kennedy, Pendleton, Roweth 1987), optionally
Fourier-accelerated.

Momenta π ~ N(0, M), H = ½ π·M⁻¹π + S[φ]; a trajectory of length τ = n ε with the leapfrog
or Omelyan 2MN integrator (:mod:`lattice.samplers.integrators`), then accept with probability
min(1, e^{−ΔH}). The integrators are reversible and area-preserving, so the chain is exact
for any ε; in equilibrium ⟨e^{−ΔH}⟩ = 1 (Creutz 1988).

Plain HMC has M = 1. Fourier-accelerated HMC (Duane, Kogut 1986; Davies et al. 1988) has the
mass per momentum mode of :mod:`lattice.numerics.fourier` eq. (2),

    M(p) = (p̂² + M²) / (p̂²_max + M²),     K(π) = ½ Σ_p |π̃_p|² / M(p),                  (1)

π̃ the orthonormal Fourier transform. Momenta are drawn per mode, π = F⁻¹[√M(p) F[ξ]] with
ξ ~ N(0, 1) per site (a real field with covariance M), and the drift is φ ← φ + ε M⁻¹π. On a
free field of mass m the mode p oscillates at ω(p)² = (p̂² + m²)/M(p) = p̂²_max + M² for every
p when M² = m² (h = 1): the slow infrared modes move as fast as the ultraviolet ones, and
one trajectory length decorrelates them all. The mass changes only the proposal; the
accept/reject on the H of eq. (1) keeps e^{−S} exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics import noise
from lattice.numerics.fourier import fourier_mass2_auto, fourier_multiplier, fourier_step_factor
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

__all__ = ["HMCState", "FourierMass", "fourier_mass", "hmc", "hmc_trajectory", "traits"]


class HMCState(NamedTuple):
    phi: jax.Array
    action: jax.Array
    grad: jax.Array  # ∂S/∂φ at phi

    def grad_S(self) -> jax.Array:
        return self.grad


class FourierMass(NamedTuple):
    """The mass of eq. (1) as two Fourier multipliers: ``momenta`` ξ ↦ π = F⁻¹[√M F[ξ]]
    (white noise to momenta of covariance M) and ``inverse`` π ↦ M⁻¹π (the drift)."""

    momenta: Callable[[jax.Array], jax.Array]
    inverse: Callable[[jax.Array], jax.Array]


def fourier_mass(theory: Phi4, mass2: float, batch_last: bool = False) -> FourierMass:
    """The mass of eq. (1) with preconditioner mass² ``mass2``, for fields ``[*shape]`` (or
    ``[*shape, chains]`` with ``batch_last``)."""
    inv = fourier_step_factor(theory.shape, mass2)  # 1/M(p) on the rfft half grid
    return FourierMass(
        fourier_multiplier(theory.shape, 1.0 / np.sqrt(inv), batch_last),
        fourier_multiplier(theory.shape, inv, batch_last),
    )


def hmc_trajectory(
    theory: Phi4,
    phi,
    pi,
    grad,
    eps: float,
    n_steps: int,
    integrator: str,
    batch_last=False,
    mass: FourierMass | None = None,
):
    """Integrate Hamilton's equations; returns (φ, π, ∂S/∂φ) at the end of the trajectory
    (lattice axes last; first with ``batch_last``). ``mass``: the Fourier mass, or None for
    M = 1."""
    fn, _ = INTEGRATORS[integrator]
    grad_fn = lambda p: theory.grad(p, batch_last)  # noqa: E731
    if mass is None:
        return fn(grad_fn, phi, pi, grad, eps, n_steps)
    return fn(grad_fn, phi, pi, grad, eps, n_steps, mass.inverse)


def hmc(
    theory: Phi4,
    trajectory_length: float,
    steps: int,
    integrator: str,
    fourier_acceleration: bool = False,
    fourier_mass2: float | str = "auto",
) -> Sampler:
    """HMC with ``steps`` integrator steps of size ``trajectory_length / steps``, with the
    Fourier mass of eq. (1) if ``fourier_acceleration`` (M² = ``fourier_mass2``, "auto": that
    of :func:`lattice.numerics.fourier.fourier_mass2_auto`). The defaults are
    :class:`lattice.config.sampler.Hmc`'s."""
    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r} (allowed: {', '.join(INTEGRATORS)})")
    if trajectory_length <= 0 or steps < 1:
        raise ValueError("trajectory_length must be > 0 and steps >= 1")
    eps = float(trajectory_length) / int(steps)
    mass = None
    if fourier_acceleration:
        m2 = fourier_mass2_auto(theory) if fourier_mass2 == "auto" else float(fourier_mass2)
        if not m2 > 0:
            raise ValueError(f"fourier_mass2 must be > 0 (got {fourier_mass2!r})")
        mass = fourier_mass(theory, m2)

    def init(phi):
        grad = theory.grad(phi)
        return HMCState(phi, theory.action_from_grad(phi, grad), grad)

    def step_at(key, state, step_size):
        pi = noise.normal(key, state.phi.shape, state.phi.dtype, stream=0)
        if mass is not None:
            pi = mass.momenta(pi)
        return _update(theory, key, state, pi, step_size, steps, integrator, False, mass)

    def step(key, state):
        return step_at(key, state, eps)

    grads = INTEGRATORS[integrator][1] * steps
    # Fourier-accelerated: the chain-first loop (vmap of step) in every dtype. Chain-last, a
    # chain's float32 FFT rounded by its position in the device's batch (8 chains on one
    # device against 4 on each of two: chain 4 differed), so results would depend on the
    # sharding (tests/test_devices.py); docs/PERFORMANCE.md has the cost.
    batched = None if mass is not None else _chain_last(theory, eps, steps, integrator)
    params = (float(trajectory_length), int(steps), integrator)
    if fourier_acceleration:
        params += (True, fourier_mass2)
    return Sampler(
        init=init,
        step=step,
        name=f"hmc-{integrator}" + ("-fa" if fourier_acceleration else ""),
        traits=traits(),
        identity=("hmc", params, theory),
        forces_per_step=grads,
        batched=batched,
        tunable_step=step_at,
        step_size=eps,
    )


def traits() -> Traits:
    """Exact for any step; ⟨e^{−ΔH}⟩ = 1 (Creutz 1988) for the energy violation ΔH."""
    return Traits(Exactness.EXACT, accept_reject=True, energy_identity=True)


def _update(
    theory: Phi4,
    key,
    state: HMCState,
    pi,
    eps: float,
    steps: int,
    integrator: str,
    batch_last,
    mass: FourierMass | None = None,
) -> tuple[HMCState, StepInfo]:
    """One HMC update from momenta ``pi``: the trajectory, ΔH = K(π') − K(π) + S' − S with
    K = ½ Σ π² (or ½ Σ π·M⁻¹π, eq. (1), with ``mass``; S from φ and ∂S/∂φ by
    :meth:`Phi4.action_from_grad`; site sums with batch-independent rounding,
    :func:`geometry.site_sum`) and the accept/reject with stream 1 of ``key``. One chain, or
    with ``batch_last`` all chains at once (fields ``[*shape, chains]``, one key per chain)."""
    phi, s0, g0 = state
    phi1, pi1, g1 = hmc_trajectory(theory, phi, pi, g0, eps, steps, integrator, batch_last, mass)
    s1 = theory.action_from_grad(phi1, g1, batch_last)  # eq. (4) of lattice.numerics.phi4
    nd = theory.ndim
    if mass is None:
        kin = 0.5 * (site_sum(pi1 * pi1, nd, batch_last) - site_sum(pi * pi, nd, batch_last))
    else:
        k1 = site_sum(pi1 * mass.inverse(pi1), nd, batch_last)
        kin = 0.5 * (k1 - site_sum(pi * mass.inverse(pi), nd, batch_last))
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
    the step key in that layout, the accept/reject the same per-chain uniform (plain HMC only:
    see :func:`hmc` for the Fourier-accelerated layout)."""
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
