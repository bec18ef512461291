"""Langevin evolution in fictitious time: ∂φ/∂τ = −∂S/∂φ + η, ⟨η(τ)η(τ')⟩ = 2δ(τ − τ').

Schemes (ε = ``step_size``, ξ ~ N(0, 1) per site, F = −∂S/∂φ):

* ``euler`` (Euler–Maruyama, docs/conventions.md §1)::

      φ' = φ + ε F(φ) + √(2ε) ξ

  For a Gaussian mode of precision a (S = ½ a φ²) the stationary variance is exactly
  1/(a (1 − εa/2)): the equilibrium bias is O(ε).

* ``rk2`` (second-order Runge–Kutta of Heun type with one noise per step; Fukugita, Oyanagi,
  Ukawa, Phys. Rev. D 36 (1987) 824)::

      φ̃  = φ + ε F(φ) + √(2ε) ξ
      φ' = φ + ε/2 [F(φ) + F(φ̃)] + √(2ε) ξ

  For a Gaussian mode of precision a the update is φ' = c φ + (1 − εa/2) √(2ε) ξ with
  c = 1 − εa + (εa)²/2, whose stationary variance is exactly::

      ⟨φ²⟩ = (2 − εa) / (a (2 − εa + (εa)²/2)) = 1/a · [1 − (εa)²/4 + O(ε³)]

  so the equilibrium bias is O(ε²). Two force evaluations per step.

* Fourier acceleration (Batrouni et al., Phys. Rev. D 32 (1985) 2736) replaces ε by the
  momentum-dependent step ε(p) = ε (p̂²_max + M²)/(p̂² + M²) acting on the Fourier modes of the
  drift and of the noise (the noise becomes √(2ε(p)) ξ̃_p). Every free-field mode then has the
  same relaxation rate ε(p) A(p) = ε h (p̂²_max + M²) when M² equals the bare mass m² of
  A(p) = h (p̂² + m²) — the default (``"auto"``) whenever m² > 0. The exact free-field formulas
  above hold per mode with a → A(p) and ε → ε(p).

All schemes are *asymptotically* exact: their stationary distribution is e^{−S} only as ε → 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics import noise
from lattice.numerics.fourier import fourier_mass2_auto, fourier_multiplier, fourier_step_factor
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import (
    BatchedStep,
    Exactness,
    Sampler,
    Traits,
    chain_first,
    chain_last,
    exact_step_info,
)

__all__ = ["LangevinState", "RK2State", "langevin", "traits"]


class LangevinState(NamedTuple):
    phi: jax.Array
    force: jax.Array  # −∂S/∂φ at phi, carried so that each Euler step costs one force

    def grad_S(self) -> jax.Array:
        """∂S/∂φ at phi (the carried force, negated)."""
        return -self.force


class RK2State(NamedTuple):
    phi: jax.Array
    force: jax.Array
    #: the last step's trial field φ̃. It is only carried so that XLA writes it to memory
    #: once: as a temporary it was fused into the stencil of F(φ̃), recomputing the noise
    #: for every neighbour (20× slower, docs/PERFORMANCE.md). Not used by the next step.
    trial: jax.Array

    def grad_S(self) -> jax.Array:
        """∂S/∂φ at phi (the carried force, negated)."""
        return -self.force


def langevin(
    theory: Phi4,
    step_size: float,
    *,
    scheme: str,
    fourier_acceleration: bool,
    fourier_mass2: float | str,
    noise_precision: str,
) -> Sampler:
    """Langevin sampler of the given scheme (``"euler"`` or ``"rk2"``); the defaults of every
    parameter are :class:`lattice.config.sampler.Langevin`'s.

    ``noise_precision = "single"`` draws ξ by the float32 transform of
    :mod:`lattice.numerics.noise` (24-bit uniforms, tails at |ξ| = 5.4, variance deficit 1e-6) and
    casts it to the field's dtype; ``"full"`` draws at the field's dtype (float64: 32-bit
    uniforms, tails at 6.3, deficit 3e-8). Both are far below the O(ε) bias of the scheme;
    single precision makes a float64 step ~5× faster (docs/PERFORMANCE.md). For float32
    fields the two are the same stream.
    """
    if scheme not in ("euler", "rk2"):
        raise ValueError(f"unknown Langevin scheme {scheme!r} (allowed: euler, rk2)")
    if noise_precision not in ("single", "full"):
        raise ValueError(f"noise_precision must be 'single' or 'full' (got {noise_precision!r})")
    if step_size <= 0:
        raise ValueError("step_size must be > 0")
    eps = float(step_size)
    shape = theory.shape

    if fourier_acceleration:
        m2 = fourier_mass2_auto(theory) if fourier_mass2 == "auto" else float(fourier_mass2)
        factor = fourier_step_factor(shape, m2)
        drift_k, noise_k = eps * factor, np.sqrt(2.0 * eps * factor)

        drift = fourier_multiplier(shape, drift_k)
        colour = fourier_multiplier(shape, noise_k)
    else:
        sq = math.sqrt(2.0 * eps)

        def drift(f):
            return eps * f

        def colour(xi):
            return sq * xi

    def init(phi):
        if scheme == "rk2":
            return RK2State(phi, theory.force(phi), phi)
        return LangevinState(phi, theory.force(phi))

    def xi_dtype(dtype):
        return jnp.float32 if noise_precision == "single" else dtype

    def update(phi, force, eta, force_fn):
        """The scheme's update from φ, F(φ) and the coloured noise η: (φ', F(φ'), φ̃)."""
        new = phi + drift(force) + eta
        if scheme == "euler":
            return new, force_fn(new), None
        # φ' = φ̃ + (ε/2)[F(φ̃) − F(φ)]: the update above with η used once
        trial = new
        new = trial + drift(0.5 * (force_fn(trial) - force))
        return new, force_fn(new), trial

    def step(key, state):
        phi = state.phi
        eta = colour(noise.normal(key, shape, xi_dtype(phi.dtype)).astype(phi.dtype))
        new, force, trial = update(phi, state.force, eta, theory.force)
        out = LangevinState(new, force) if scheme == "euler" else RK2State(new, force, trial)
        return out, exact_step_info(phi.dtype)

    name = f"langevin-{scheme}" + ("-fa" if fourier_acceleration else "")
    batched = None
    if not fourier_acceleration:
        batched = _chain_last(theory, scheme == "rk2", update, colour, xi_dtype)
    params = (eps, scheme, fourier_acceleration, fourier_mass2, noise_precision)
    return Sampler(
        init=init,
        step=step,
        name=name,
        traits=traits(scheme),
        identity=("langevin", params, theory),
        forces_per_step=1 if scheme == "euler" else 2,
        batched=batched,
    )


def traits(scheme: str) -> Traits:
    """Langevin is exact only as ε → 0: its bias is O(ε) (Euler) or O(ε²) (RK2)."""
    return Traits(Exactness.ASYMPTOTIC, order=1 if scheme == "euler" else 2)


class _ChainLast(NamedTuple):
    """The loop carry of :func:`_chain_last`: fields ``[*shape, chains]``."""

    phi: jax.Array
    force: jax.Array
    trial: jax.Array | None  # rk2 only, as in RK2State
    #: the last step's packed noise words (uint64, only with jax_enable_x64): carried for
    #: the same reason as RK2State.trial, so that each Threefry block is computed once
    words: jax.Array | None

    def grad_S(self) -> jax.Array:
        """∂S/∂φ at phi (the carried force, negated)."""
        return -self.force


def _chain_last(theory: Phi4, rk2: bool, update, colour, xi_dtype) -> BatchedStep:
    """The Euler/RK2 step (``update``, ``colour`` and ``xi_dtype`` of :func:`langevin`) of
    all chains at once with the chain axis last.

    The stencil then shifts whole rows of chains (a 16-site row of the chain-first layout
    is a single vector register, and XLA's rolls on it cost ~80% of a 16² step), and the
    noise is :func:`lattice.numerics.noise.normal` in that layout. Same arithmetic in the same
    order as ``step``; XLA may contract a·b + c into a fused multiply-add differently in
    the two layouts (1 ulp on some sites of odd-length rows), so a run's results depend on
    (seed, chain, step) and on which path its dtype takes, never on the chain count or the
    sharding (tested).
    """
    shape = theory.shape

    def force_fn(phi):
        return theory.force(phi, True)

    def enter(states):
        trial = chain_last(states.trial) if rk2 else None
        words = noise.empty_words(shape, states.phi.shape[0])
        return _ChainLast(chain_last(states.phi), chain_last(states.force), trial, words)

    def leave(c):
        if rk2:
            return RK2State(chain_first(c.phi), chain_first(c.force), chain_first(c.trial))
        return LangevinState(chain_first(c.phi), chain_first(c.force))

    def step(t, keys, c):
        phi = c.phi
        xi, words = noise.carried_normals(keys, shape, xi_dtype(phi.dtype), t, c.words)
        new, force, trial = update(phi, c.force, colour(xi.astype(phi.dtype)), force_fn)
        return _ChainLast(new, force, trial, words), exact_step_info(phi.dtype)

    # float64 fields: vmap(step) measured 1.2-1.35x faster (docs/PERFORMANCE.md)
    return BatchedStep(enter, step, leave, dtypes=("float32",))
