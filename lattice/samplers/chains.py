"""Many chains in lock-step: random streams, initial fields, and the jitted sampling loops.

Random streams (docs/conventions.md §4): chain c at sampler step t uses the key

    k(c, t) = fold_in(fold_in(key(seed), c), t)

so a chain's stream depends only on (seed, chain index, step) — never on how many chains run
together, on how the run was split into blocks, or on where it was resumed.

The loops are ``lax.scan`` over measurements with an inner ``fori_loop`` over the sampler steps
between them; the kernel is ``vmap``-ed over chains and the observables are evaluated inside
the scan, so the host only ever receives whole blocks of measurements (and the configurations
it must save). A sampler with a :class:`~lattice.samplers.base.BatchedStep` (float32
Langevin and HMC) runs both loops with the chain axis last instead: the states are
transposed on entry and on exit of :func:`evolve` and :func:`sample`, and measured in that
layout (``measure(..., batch_last=True)``); see docs/physics.md, "Layout".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lattice.numerics import noise
from lattice.numerics.compile import hot_jit
from lattice.numerics.observables import measure
from lattice.numerics.phi4 import Phi4
from lattice.samplers.base import Sampler, chain_first

__all__ = ["chain_keys", "initial_field", "init_states", "evolve", "sample", "trace", "run_chains"]

PRNG_IMPLS = {"threefry": "threefry2x32", "rbg": "rbg", "unsafe_rbg": "unsafe_rbg"}


# Run op by op, each JAX operation compiles a program of its own: a run's start compiled 55
# of them (2.2 s of its 3.7 s start-up at 64² × 64, docs/PERFORMANCE.md). The integer work of
# the start (the chain keys, the hot start's Threefry words) is jitted whole, which gives the
# same bits; the floating-point work stays op by op, as in earlier versions, because XLA fuses
# a jitted version into other roundings (fused multiply-adds) and old configs must keep
# reproducing their ensembles bit for bit (tests/test_legacy.py).


@jax.jit
def _fold_all(base, idx):
    return jax.vmap(jax.random.fold_in, (None, 0))(base, idx)


@functools.partial(jax.jit, static_argnames=("shape", "stream"))
def _start_bits(keys, shape, stream):
    return jax.vmap(lambda k: noise.normal_bits(k, shape, stream))(keys)


def chain_keys(seed: int, chains: int | jax.Array, prng: str = "threefry") -> jax.Array:
    """Typed keys fold_in(key(seed), c) for c in ``chains`` (a count or an index array)."""
    base = jax.random.key(seed, impl=PRNG_IMPLS[prng])
    idx = np.arange(chains) if isinstance(chains, int) else chains
    return _fold_all(base, idx)


def initial_field(keys: jax.Array, theory: Phi4, start: str = "hot", dtype=jnp.float64):
    """Initial fields, one per key: ``hot`` iid N(0, 1), ``cold`` φ = 0, ``ordered`` φ = 1.

    The hot start uses stream 2³² − 1 of the chain key itself, disjoint from the step keys.
    """
    n = keys.shape[0]
    if start == "hot":
        if not noise.is_threefry(keys):
            return jax.vmap(lambda k: noise.normal(k, theory.shape, dtype, stream=2**32 - 1))(keys)
        bits = _start_bits(keys, tuple(theory.shape), 2**32 - 1)
        return jax.vmap(lambda b: noise.normal_from_bits(b, theory.shape, dtype))(bits)
    if start == "cold":
        return jnp.zeros((n, *theory.shape), dtype)
    if start == "ordered":
        return jnp.ones((n, *theory.shape), dtype)
    raise ValueError(f"unknown start {start!r} (allowed: hot, cold, ordered)")


def init_states(sampler: Sampler, phi: jax.Array):
    """Batched sampler states from a batch of fields."""
    return jax.vmap(sampler.init)(phi)


def _step_keys(keys, t):
    """The keys k(seed, c, t) of global step ``t`` from the chain keys k(seed, c)."""
    return jax.vmap(jax.random.fold_in, (0, None))(keys, t)


def step_all(sampler: Sampler, keys, states, t, step: Callable | None = None):
    """Global step ``t`` of every chain: the sampler step with keys k(seed, c, t), then, if
    the sampler carries a cluster update and (t + 1) % cluster_every == 0, that update
    (``lax.cond`` on the unbatched step, so skipped steps cost nothing). ``step``: a batched
    step ``(step keys, states) -> (states, info)`` to use instead of ``vmap(sampler.step)``
    (the tuner's). Returns ``(states, info, cluster)`` with ``cluster`` = (iterations, mean
    size, ran) or None."""
    step_keys = _step_keys(keys, t)
    states, info = (step or jax.vmap(sampler.step))(step_keys, states)
    if sampler.cluster is None:
        return states, info, None
    dtype = states.phi.dtype
    zero = jnp.zeros(keys.shape[0], dtype)

    def run(st):
        st, ci = sampler.cluster(step_keys, st)  # batched over chains
        return st, (ci.iterations.astype(dtype), ci.mean_size.astype(dtype), zero + 1)

    def skip(st):
        return st, (zero, zero, zero)

    states, cl = lax.cond((t + 1) % sampler.cluster_every == 0, run, skip, states)
    return states, info, cl


def _advance(sampler: Sampler, keys, states, step0, n_steps: int):
    """n_steps of every chain starting at global step ``step0``; returns the states and the
    per-chain means over those steps of the acceptance and of e^{−ΔH} (1 without
    accept/reject; its mean is exactly 1 in equilibrium for HMC and MALA). With a cluster
    update, also the means over the updates in those steps of its labelling iterations
    (``cluster_iterations``) and mean cluster size (``cluster_size``); NaN where none ran."""
    clustered = sampler.cluster is not None

    def body(i, carry):
        states, acc, edh, cl = carry
        states, info, c = step_all(sampler, keys, states, step0 + i)
        if clustered:
            cl = tuple(a + b for a, b in zip(cl, c, strict=True))
        return states, acc + info.acceptance, edh + jnp.exp(-info.delta_h), cl

    zero = jnp.zeros(keys.shape[0], states.phi.dtype)
    cl0 = (zero, zero, zero) if clustered else ()
    states, acc, edh, cl = lax.fori_loop(0, n_steps, body, (states, zero, zero, cl0))
    n = max(n_steps, 1)
    diag = {"acceptance": acc / n, "exp_minus_dh": edh / n}
    if clustered:
        it, size, count = cl
        diag["cluster_iterations"] = it / count  # 0/0 = NaN: no update in the interval
        diag["cluster_size"] = size / count
    for name in sampler.diagnostics:  # the state's value at the measurement
        diag[name] = getattr(states, name).astype(states.phi.dtype)
    if sampler.weighted:
        diag["log_w"] = states.log_w.astype(states.phi.dtype)
    return states, diag


def _batched(sampler: Sampler, keys, states):
    """The sampler's :class:`~lattice.samplers.base.BatchedStep` if the loops run in its
    chain-last layout for these keys and states (no cluster update, a dtype it is used for,
    threefry keys: its noise is :mod:`lattice.numerics.noise`'s words), else None."""
    b = sampler.batched
    if b is None or sampler.cluster is not None or states.phi.dtype.name not in b.dtypes:
        return None
    if not noise.is_threefry(keys):
        return None
    if sampler.diagnostics or sampler.weighted:
        raise ValueError("a BatchedStep sampler cannot record state diagnostics")
    return b


def _advance_batched(b, keys, carry, step0, n_steps: int):
    """:func:`_advance` in the chain-last layout of a
    :class:`~lattice.samplers.base.BatchedStep`, on its carry, with the same step keys."""

    def body(i, c):
        carry, acc, edh = c
        t = step0 + i
        carry, info = b.step(t, _step_keys(keys, t), carry)
        return carry, acc + info.acceptance, edh + jnp.exp(-info.delta_h)

    zero = jnp.zeros(keys.shape[0], carry.phi.dtype)
    carry, acc, edh = lax.fori_loop(0, n_steps, body, (carry, zero, zero))
    n = max(n_steps, 1)
    return carry, {"acceptance": acc / n, "exp_minus_dh": edh / n}


@hot_jit(static_argnames=("sampler", "n_steps"))
def evolve(sampler: Sampler, keys, states, step0, n_steps: int):
    """Advance all chains by ``n_steps`` sampler steps (thermalization); no measurements.

    Returns (states, mean acceptance per chain).
    """
    b = _batched(sampler, keys, states)
    if b is not None:
        carry, diag = _advance_batched(b, keys, b.enter(states), step0, n_steps)
        return b.leave(carry), diag["acceptance"]
    states, diag = _advance(sampler, keys, states, step0, n_steps)
    return states, diag["acceptance"]


@hot_jit(static_argnames=("sampler", "n_steps"))
def trace(sampler: Sampler, keys, states, step0, n_steps: int):
    """Advance all chains by ``n_steps`` steps and return every step's :class:`StepInfo`
    (fields of shape ``[n_steps, chains]``) — for ⟨e^{−ΔH}⟩ and acceptance diagnostics.
    Always the chain-first loop (``vmap`` of the step), whatever the sampler's layout."""

    def body(states, i):
        states, info, _ = step_all(sampler, keys, states, step0 + i)
        return states, info

    return lax.scan(body, states, jnp.arange(n_steps))


@hot_jit(static_argnames=("sampler", "theory", "n_meas", "measure_every", "save_every"))
def sample(
    sampler: Sampler,
    theory: Phi4,
    keys,
    states,
    step0,
    n_meas: int,
    measure_every: int,
    save_every: int = 0,
):
    """Run ``n_meas`` measurements, ``measure_every`` sampler steps apart, starting at global
    step ``step0``.

    With ``save_every > 0`` the configurations of local measurements 0, save_every,
    2·save_every, … are returned too (a block must start at a saved measurement; the job
    driver aligns its blocks so). They come out of the scan as stacked outputs of groups of
    ``save_every`` measurements, so nothing but the saved fields is copied.

    Returns ``(states, obs, diag, saved)`` with ``obs[name]`` of shape
    ``[n_meas, chains, ...]``, ``diag`` = {"acceptance", "exp_minus_dh"} each
    ``[n_meas, chains]`` (means over the steps since the previous measurement; with a cluster
    update also "cluster_iterations" and "cluster_size", see :func:`_advance`) and
    ``saved`` ``[n_saved, chains, *shape]``
    (None when save_every == 0).
    """

    # The scans carry the states in the loop layout: the batched step's own (entered and
    # left once per call; measured there, batch_last) or the states themselves.
    b = _batched(sampler, keys, states)
    if b is not None:
        states = b.enter(states)

    def one(states, j):
        t0 = step0 + j * measure_every
        if b is not None:
            states, acc = _advance_batched(b, keys, states, t0, measure_every)
        else:
            states, acc = _advance(sampler, keys, states, t0, measure_every)
        return states, (measure(theory, states.phi, states.grad_S(), b is not None), acc)

    def config(states):
        """The configurations, chain axis first."""
        return states.phi if b is None else chain_first(states.phi)

    def done(states, obs, acc, saved):
        return (states if b is None else b.leave(states)), obs, acc, saved

    if save_every == 0:
        states, (obs, acc) = lax.scan(one, states, jnp.arange(n_meas))
        return done(states, obs, acc, None)
    if save_every == 1:  # every configuration: one scan, no regrouping copies

        def one_saved(states, j):
            states, ys = one(states, j)
            return states, (ys, config(states))

        states, ((obs, acc), saved) = lax.scan(one_saved, states, jnp.arange(n_meas))
        return done(states, obs, acc, saved)

    def group(states, first, size):
        """``size`` measurements from local index ``first``; the first one is saved."""
        states, head = one(states, first)
        phi = config(states)
        states, rest = lax.scan(one, states, first + 1 + jnp.arange(size - 1))
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), head, rest)
        return states, (ys, phi)

    n_groups, tail = divmod(n_meas, save_every)
    parts = []
    if n_groups:
        states, (ys, phi) = lax.scan(
            lambda st, g: group(st, g * save_every, save_every), states, jnp.arange(n_groups)
        )
        flat = jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), ys)
        parts.append((flat, phi))
    if tail:
        states, (ys, phi) = group(states, n_groups * save_every, tail)
        parts.append((ys, phi[None]))
    (obs, acc) = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *[p[0] for p in parts])
    saved = jnp.concatenate([p[1] for p in parts])
    return done(states, obs, acc, saved)


def run_chains(
    sampler: Sampler,
    theory: Phi4,
    *,
    chains: int,
    seed: int,
    n_meas: int,
    measure_every: int = 1,
    thermalization: int = 0,
    start: str = "hot",
    dtype: Any = jnp.float64,
    prng: str = "threefry",
) -> dict[str, Any]:
    """Convenience driver for the Python API and tests: thermalize, then measure.

    Returns ``{"obs": {name: [chains, n_meas, ...] numpy}, "acceptance": [chains, n_meas],
    "exp_minus_dh": [chains, n_meas], "diagnostics": {name: [chains, n_meas]},
    "states": final states}``; ``diagnostics`` holds the sampler's own per-measurement values
    (e.g. a diffusion sampler's ``proposal_log_w``, and ``log_w`` for a weighted sampler).
    """
    keys = chain_keys(seed, chains, prng)
    states = init_states(sampler, initial_field(keys, theory, start, dtype))
    if thermalization:
        states, _ = evolve(sampler, keys, states, 0, thermalization)
    states, obs, acc, _ = sample(
        sampler, theory, keys, states, thermalization, n_meas, measure_every
    )
    swap: Callable = lambda a: np.swapaxes(np.asarray(a), 0, 1)  # noqa: E731
    return {
        "obs": {k: swap(v) for k, v in obs.items()},
        "acceptance": swap(acc["acceptance"]),
        "exp_minus_dh": swap(acc["exp_minus_dh"]),
        "diagnostics": {
            k: swap(v) for k, v in acc.items() if k not in ("acceptance", "exp_minus_dh")
        },
        "states": states,
    }
