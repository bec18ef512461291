"""The path-length pilot of the exact diffusion sampler: K, the number of reverse steps, chosen
by measurement for a target acceptance (``[sampler] target_acceptance`` with
``method = "sde"``; docs/diffusion.md).

Path-space Metropolis is an independence sampler: a proposal y ~ q is accepted with
min(1, w(y)/w(x)), w = e^{−S}/q the path weight. Its stationary acceptance depends on the
weights' law only,

    α = E_{x,y ~ q iid} [min(w_x, w_y)] / E_q[w],                                      (1)

estimated from P independent proposals by :func:`lattice.numerics.analysis.
independence_acceptance`. var(log w) falls like V/K (docs/diffusion.md), so α rises with K;
the pilot tries the ladder K = 4, 8, 16, … below the cap, then the cap (:func:`ladder`), and
keeps the smallest K whose estimate reaches the target. If none does, the acceptance is
limited by the model rather than by the discretization (it plateaus: measured at L = 32 with a
small network, 0.27, 0.25, 0.28 at K = 128, 256, 512), and more steps buy nothing but cost;
then it keeps the smallest K within :data:`PLATEAU` (about one standard error) of the best
estimate.

``target_acceptance = "cost"`` asks for the cheapest K instead: the pilot tries the whole
ladder and keeps the K that minimizes the network evaluations per independent proposal,

    K · (2 − α_K) / α_K,                                                                (2)

2 τ_int times K for an independence sampler whose acceptance α does not depend on the state
(the chain then repeats a state for a geometric time, ρ(t) = (1 − α)^t, so
τ_int = ½ + (1 − α)/α = (2 − α)/(2α)). A larger K raises α but costs K; (2) weighs the two.
Only the K whose estimate is at least :data:`MIN_COST_ACCEPTANCE` compete (all of them if none
is): below it the 128-proposal estimate is biased upward (it misses the rare large weights) and
a chain's τ_int runs above (2 − α)/(2α) (measured up to 2× at α ≈ 0.3, docs/results.md §7), so
(2) would favour too short paths.

The pilot's proposals come from their own key (:func:`pilot_keys`: the run's seed, a stream
no chain uses), so every process of a multi-process run picks the same K, and a run killed
during the pilot picks it again, to the same bits. They are never measured: the chains start
afterwards, as an untuned run with ``steps = K`` would. The sampler with the chosen K is the
plain exact one; the pilot only chose its parameter, from draws independent of the chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lattice.numerics.analysis import independence_acceptance
from lattice.samplers.base import Sampler
from lattice.samplers.chains import PRNG_IMPLS

__all__ = [
    "PILOT_PROPOSALS",
    "PILOT_STREAM",
    "PLATEAU",
    "MIN_COST_ACCEPTANCE",
    "Pilot",
    "ladder",
    "pilot_keys",
    "pilot",
    "choose",
    "choose_cheapest",
    "cost",
]

#: proposals per K: α's estimate then has a standard error of about 0.03 at α ≈ 0.5
PILOT_PROPOSALS = 128
#: without a K at the target: the smallest K whose acceptance is within this of the best
PLATEAU = 0.03
#: ``target_acceptance = "cost"``: the smallest estimated acceptance a K may have to compete
MIN_COST_ACCEPTANCE = 0.1
#: the fold-in index of the pilot's key; chain c uses fold_in(key(seed), c) with c < 2³¹
PILOT_STREAM = 2**32 - 2


class Pilot(NamedTuple):
    """The ladder tried, the acceptance (1) estimated at each K, and the K kept."""

    path_steps: tuple[int, ...]
    acceptance: tuple[float, ...]
    chosen: int
    reached: bool  # False: no K reached the target; K is where the acceptance plateaus


def ladder(cap: int, first: int = 4) -> tuple[int, ...]:
    """K = first, 2·first, 4·first, … while below ``cap``, then ``cap`` itself."""
    ks, k = [], first
    while k < cap:
        ks.append(k)
        k *= 2
    return (*ks, cap)


def pilot_keys(seed: int, proposals: int = PILOT_PROPOSALS, prng: str = "threefry") -> jax.Array:
    """``proposals`` keys split from fold_in(key(seed), :data:`PILOT_STREAM`)."""
    base = jax.random.fold_in(jax.random.key(seed, impl=PRNG_IMPLS[prng]), PILOT_STREAM)
    return jax.random.split(base, proposals)


def proposal_log_weights(sampler: Sampler, keys: jax.Array, shape, dtype) -> np.ndarray:
    """log w of one proposal per key, from a state with log w = −∞ (so every proposal is taken
    and its weight is the state's ``proposal_log_w``), as float64 on the host."""

    def one(key):
        state = sampler.init(jnp.zeros(shape, dtype))
        new, _ = sampler.step(key, state)
        return new.proposal_log_w

    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


def choose(path_steps, acceptance, target: float) -> tuple[int, bool]:
    """The smallest K whose acceptance reaches ``target`` (and True); else (False) the smallest
    K whose acceptance is within :data:`PLATEAU` of the largest one measured."""
    pairs = list(zip(path_steps, acceptance, strict=True))
    for k, a in pairs:
        if a >= target:
            return int(k), True
    best = max(a for _, a in pairs)
    return next(int(k) for k, a in pairs if a >= best - PLATEAU), False


def cost(k: int, acceptance: float) -> float:
    """Eq. (2): reverse steps per independent proposal (infinite at α = 0)."""
    return float("inf") if acceptance <= 0 else k * (2.0 - acceptance) / acceptance


def choose_cheapest(path_steps, acceptance) -> int:
    """The K of the ladder that minimizes eq. (2) among those with an acceptance of at least
    :data:`MIN_COST_ACCEPTANCE` (among all if none has; the smallest such K on a tie; the
    largest K when no proposal was accepted at any)."""
    pairs = list(zip(path_steps, acceptance, strict=True))
    eligible = [(k, a) for k, a in pairs if a >= MIN_COST_ACCEPTANCE] or pairs
    costs = [cost(k, a) for k, a in eligible]
    if not np.isfinite(min(costs)):
        return int(max(path_steps))
    return int(eligible[int(np.argmin(costs))][0])


def pilot(
    build: Callable[[int], Sampler],
    cap: int,
    target: float | str,
    keys: jax.Array,
    shape,
    dtype,
    progress: Callable[[int, float], None] | None = None,
) -> Pilot:
    """Try :func:`ladder` (``cap``) in order, stopping at the first K that reaches ``target``
    (or, for ``target = "cost"``, trying all of it and keeping :func:`choose_cheapest`);
    ``build(K)`` is the sampler with K reverse steps, ``progress(K, α)`` is told each result."""
    tried, accs = [], []
    for k in ladder(cap):
        a = independence_acceptance(proposal_log_weights(build(k), keys, shape, dtype))
        tried.append(k)
        accs.append(float(a))
        if progress is not None:
            progress(k, float(a))
        if target != "cost" and a >= target:
            break
    if target == "cost":
        return Pilot(tuple(tried), tuple(accs), choose_cheapest(tried, accs), True)
    chosen, reached = choose(tried, accs, target)
    return Pilot(tuple(tried), tuple(accs), chosen, reached)
