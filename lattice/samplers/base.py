"""The kernel contract every sampler meets (the blackjax shape), and the sampler's identity.

A sampler is a pair of pure functions closed over its parameters:

* ``init(phi) -> state`` builds the state of *one* chain from a field of the lattice shape;
  the state caches what the next step needs (the force, the action);
* ``step(key, state) -> (state, info)`` advances that chain by one sampler step.

Chains are ``jax.vmap`` over keys and states and time is ``lax.scan`` (see
:mod:`lattice.samplers.chains`); kernels never see a batch axis and never touch the host.

The contract, explicitly:

* the *target* is a :class:`Target` (``shape``, ``action``, ``grad``), which
  :class:`lattice.numerics.phi4.Phi4` implements;
* a *state* is a :class:`State`: a pytree with the field ``phi`` and ``grad_S()``, the
  gradient ∂S/∂φ it carries (or None), so that measurements reuse it with the right sign;
  the fields a sampler records per measurement are its declared ``diagnostics``;
* a :class:`Sampler` declares its :class:`Traits` (exactness, bias order, accept/reject,
  weights) and has an *identity*, (kind, parameters, theory): two samplers with equal
  identities are equal and hash equal, so the jitted loops, which take the sampler as a
  static argument, reuse their compiled code for them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from lattice.numerics import noise

__all__ = [
    "Target",
    "State",
    "Exactness",
    "Traits",
    "StepInfo",
    "Sampler",
    "BatchedStep",
    "ByIdentity",
    "exact_step_info",
    "chain_last",
    "chain_first",
    "metropolis",
]


@runtime_checkable
class Target(Protocol):
    """What a sampler needs of its target density e^{−S}: the lattice shape, the action S and
    its gradient ∂S/∂φ (of one field; ``batch_last`` for a batch with the chain axis last)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def action(self, phi: jax.Array, batch_last: bool = False) -> jax.Array: ...

    def grad(self, phi: jax.Array, batch_last: bool = False) -> jax.Array: ...


@runtime_checkable
class State(Protocol):
    """A chain's state: the field and, where the sampler carries it, ∂S/∂φ."""

    @property
    def phi(self) -> jax.Array: ...

    def grad_S(self) -> jax.Array | None: ...


class Exactness(str, enum.Enum):
    """How a sampler's stationary law relates to e^{−S} (docs/conventions.md §5)."""

    EXACT = "exact"  # e^{−S} exactly (accept/reject, or the ODE up to its tolerance)
    ASYMPTOTIC = "asymptotic"  # e^{−S} as the step size → 0 (``order``: of the bias)
    APPROXIMATE = "approximate"  # neither (diffusion without Metropolis, Hutchinson)


@dataclasses.dataclass(frozen=True)
class Traits:
    """What consumers (``measure``, ``compare``, ``check``) may rely on, declared by the
    sampler instead of read off its kind."""

    exactness: Exactness
    #: order of the equilibrium bias in the step size (asymptotic samplers), else None
    order: int | None = None
    #: the sampler has an accept/reject step (its acceptance is a diagnostic)
    accept_reject: bool = False
    #: its states carry an importance weight ``log_w``, stored as /weights/log_w
    weighted: bool = False
    #: ⟨e^{−ΔH}⟩ = 1 holds for the ΔH it records (HMC, MALA)
    energy_identity: bool = False


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
    batch in the chain-last layout ``[*shape, chains]``; :func:`lattice.samplers.chains.evolve`
    and :func:`~lattice.samplers.chains.sample` then run their loops, and measure, in that
    layout: ``enter(states) -> carry``, ``step(t, step_keys, carry) -> (carry, info)`` at
    global step t (``info``: a :class:`StepInfo` of per-chain values), ``leave(carry) ->
    states``. The carry is a :class:`State` with the chain axis last.

    It must compute what ``vmap(step)`` computes by the same arithmetic, so that the two
    agree to the last bit up to how the compiler contracts a·b + c into fused multiply-adds
    in each layout (tested); a chain's results never depend on the chain count or sharding.
    """

    enter: Callable[[Any], Any]
    step: Callable[[jax.Array, jax.Array, Any], tuple[Any, StepInfo]]
    leave: Callable[[Any], Any]
    #: the field dtypes it is used for (where it was measured faster than vmap(step))
    dtypes: tuple[str, ...] = ("float32", "float64")


class ByIdentity:
    """An object in a sampler identity compared by ``is`` (a model, a table): it is kept
    alive by the identity, so its id is never reused while the identity exists."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByIdentity) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Sampler:
    """A sampler: ``init``, ``step``, its traits and its identity (see the module docstring).

    Equality and hashing are by ``identity``: (kind, parameters, theory), built by the
    factory from everything its closures depend on. A sampler without one (None) is equal
    only to itself."""

    init: Callable[[jax.Array], Any]
    step: Callable[[jax.Array, Any], tuple[Any, StepInfo]]
    name: str
    traits: Traits
    identity: tuple | None
    #: force (gradient) evaluations per step, for cost accounting
    forces_per_step: float = 1
    #: an extra e^{−S}-invariant update run after every ``cluster_every``-th step
    #: (Swendsen–Wang, :mod:`lattice.samplers.cluster`), or None. Unlike ``step`` it is
    #: batched: ``(step keys [chains], states [chains]) -> (states, info)``.
    cluster: Callable[[jax.Array, Any], tuple[Any, Any]] | None = None
    cluster_every: int = 1
    #: state fields recorded per chain at every measurement under /diagnostics/<name>
    diagnostics: tuple[str, ...] = ()
    #: (key, value) pairs recorded as ``sampler.<key>`` in the ensemble's /config attrs (e.g.
    #: the provenance of a diffusion sampler's model)
    metadata: tuple[tuple[str, Any], ...] = ()
    #: the step of all chains at once in the sampler's own layout, or None (vmap of step)
    batched: BatchedStep | None = None
    #: ``step`` at a traced step size, ``(key, state, eps) -> (state, info)``, with the
    #: configured step size ``step_size``: what :mod:`lattice.samplers.tuning` tunes (HMC)
    tunable_step: Callable[[jax.Array, Any, jax.Array], tuple[Any, StepInfo]] | None = None
    step_size: float | None = None

    @property
    def exactness(self) -> str:
        """``exact`` | ``asymptotic`` | ``approximate`` (docs/conventions.md §5)."""
        return self.traits.exactness.value

    @property
    def order(self) -> int | None:
        return self.traits.order

    @property
    def weighted(self) -> bool:
        return self.traits.weighted

    def replace(self, **changes: Any) -> Sampler:
        """A copy with ``changes``. Its identity is None (equal only to itself) unless a new
        one is given: a changed field is a different sampler."""
        return dataclasses.replace(self, **{"identity": None, **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sampler):
            return NotImplemented
        if self.identity is None or other.identity is None:
            return self is other
        return self.identity == other.identity

    def __hash__(self) -> int:
        return id(self) if self.identity is None else hash(self.identity)


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
