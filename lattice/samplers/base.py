"""Interfaces shared by every sampler (the blackjax shape).

A sampler is a pair of pure functions closed over its parameters:

* ``init(phi) -> state`` builds the state of *one* chain from a field of the lattice shape;
  the state caches what the next step needs (the force, the action);
* ``step(key, state) -> (state, info)`` advances that chain by one sampler step.

Chains are ``jax.vmap`` over keys and states and time is ``lax.scan`` (see
:mod:`lattice.samplers.chains`); kernels never see a batch axis and never touch the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lattice.numerics import noise

__all__ = ["StepInfo", "Sampler", "BatchedStep", "exact_step_info", "chain_last", "chain_first"]


class StepInfo(NamedTuple):
    """What one step reports. Langevin steps report acceptance 1 and ΔH 0.

    ``acceptance`` is the Metropolis probability min(1, e^{−ΔH}) (or the MALA analogue),
    ``accepted`` whether the proposal was taken, ``delta_h`` the energy violation
    (HMC) or minus the log Metropolis ratio (MALA).
    """

    acceptance: jax.Array
    accepted: jax.Array
    delta_h: jax.Array


class BatchedStep(NamedTuple):
    """One step of *all* chains at once, with the chain axis last.

    ``vmap(step)`` keeps the chain axis first; on a small lattice the stencil then works on
    rows shorter than a vector register. A sampler may also give its step for the whole
    batch in the chain-last layout ``[*shape, chains]``; :func:`lattice.samplers.chains.evolve` and
    :func:`~lattice.samplers.chains.sample` then run their loops, and measure, in that layout:
    ``enter(states) -> carry``, ``step(t, step_keys, carry) -> (carry, info)`` at global
    step t (``info``: a :class:`StepInfo` of per-chain values), ``leave(carry) -> states``.
    The carry has the fields ``phi`` and ``force`` or ``grad``, chain axis last.

    It must compute what ``vmap(step)`` computes by the same arithmetic, so that the two
    agree to the last bit up to how the compiler contracts a·b + c into fused multiply-adds
    in each layout (tested); a chain's results never depend on the chain count or sharding.
    """

    enter: Callable[[Any], Any]
    step: Callable[[jax.Array, jax.Array, Any], tuple[Any, StepInfo]]
    leave: Callable[[Any], Any]
    #: the field dtypes it is used for (where it was measured faster than vmap(step))
    dtypes: tuple[str, ...] = ("float32", "float64")


class Sampler(NamedTuple):
    """A sampler: ``init``, ``step`` and its static description."""

    init: Callable[[jax.Array], Any]
    step: Callable[[jax.Array, Any], tuple[Any, StepInfo]]
    name: str
    exactness: str  # "exact" | "asymptotic" (DESIGN.md §5)
    order: int | None = None  # order of the equilibrium bias in the step size, if asymptotic
    forces_per_step: float = 1  # force (gradient) evaluations per step, for cost accounting
    #: an extra e^{−S}-invariant update run after every ``cluster_every``-th step
    #: (Swendsen–Wang, :mod:`lattice.samplers.cluster`), or None. Unlike ``step`` it is
    #: batched: ``(step keys [chains], states [chains]) -> (states, info)``.
    cluster: Callable[[jax.Array, Any], tuple[Any, Any]] | None = None
    cluster_every: int = 1
    #: state fields recorded per chain at every measurement under /diagnostics/<name>
    diagnostics: tuple[str, ...] = ()
    #: the state's ``log_w`` is an importance weight, stored as /weights/log_w (DESIGN.md §5)
    weighted: bool = False
    #: (key, value) pairs recorded as ``sampler.<key>`` in the ensemble's /config attrs (e.g.
    #: the provenance of a diffusion sampler's model); a tuple, so the sampler stays hashable
    metadata: tuple[tuple[str, Any], ...] = ()
    #: the step of all chains at once in the sampler's own layout, or None (vmap of step)
    batched: BatchedStep | None = None


def chain_last(a: jax.Array) -> jax.Array:
    """``[chains, *shape]`` → ``[*shape, chains]`` (the layout of :class:`BatchedStep`)."""
    return jnp.moveaxis(a, 0, -1)


def chain_first(a: jax.Array) -> jax.Array:
    """``[*shape, chains]`` → ``[chains, *shape]``."""
    return jnp.moveaxis(a, -1, 0)


def exact_step_info(dtype) -> StepInfo:
    """The info of a step without accept/reject."""
    one = jnp.ones((), dtype)
    return StepInfo(one, jnp.ones((), bool), jnp.zeros((), dtype))


def metropolis(key: jax.Array, log_ratio: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Accept with probability min(1, e^{log_ratio}); returns (accepted, acceptance)."""
    acceptance = jnp.minimum(1.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
    # stream 1 of the step key: the proposal's noise uses stream 0
    log_u = jnp.log(noise.uniform(key, log_ratio.dtype, stream=1))
    # NaN ratios (a diverged proposal) are rejected
    accepted = jnp.where(jnp.isnan(log_ratio), False, log_u < log_ratio)
    return accepted, jnp.where(jnp.isnan(log_ratio), 0.0, acceptance)
