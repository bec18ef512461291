"""Step-size tuning by dual averaging, during thermalization (Nesterov 2009; Hoffman, Gelman
2014, "The No-U-Turn Sampler", JMLR 15, Algorithm 5 and eq. (6)).

After tuning iteration m with Metropolis probability α_m and target δ,

    H̄_m = (1 − 1/(m + t₀)) H̄_{m−1} + (δ − α_m) / (m + t₀),
    log ε_m = μ − (√m / γ) H̄_m,                                                        (1)
    log ε̄_m = m^{−κ} log ε_m + (1 − m^{−κ}) log ε̄_{m−1},

with μ = log(10 ε₀) (ε₀ the configured step), γ = 0.05, t₀ = 10, κ = 0.75, H̄₀ = 0,
log ε̄₀ = 0: the published defaults. ε_m drives the next trajectory; ε̄_m, the weighted
average, converges to the step whose mean acceptance is δ, but slowly: it remembers the early
steps far from it. Measured on 8² at κ = 0.26, λ = 0.02 with target 0.8, one window and
per-chain α: sampling acceptance 0.89 after 500 tuning steps, 0.83 after 2000. So:

- α_m is the mean over chains of the Metropolis probabilities, pooled exactly
  (:func:`pooled`): every chain gets the same ε_m, and the bits do not depend on the sharding;
- eq. (1) runs in two windows (the first and second half of the tuning steps); the second
  restarts from the first's result, ε₀ = μ = ε̄, with γ = 0.5, so that ε_m oscillates ten times
  less (with γ = 0.05 the geometric mean of an oscillating ε_m accepted 0.85 where the target
  was 0.7: the acceptance is not linear in ε);
- the frozen step is the geometric mean of ε_m over the last quarter of the tuning steps
  (Polyak–Ruppert), computed on the host in float64.

Measured (tests/test_tuning.py and 8² at κ = 0.26): targets 0.7 and 0.8 are met to 0.01–0.02
with 50–500 tuning steps, for HMC and FA-HMC. All chains share the frozen step, so a chain's
stream depends on the chain count through it (an untuned run's never does).

Exactness: the adaptation uses the chain's past, so the tuning steps are not a Markov chain
with a fixed kernel; they are part of thermalization and never measured. From the frozen step
on, the sampler is the plain exact one with that step (``steps`` integrator steps of size ε),
reproducible from the recorded ε.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lattice.numerics.compile import hot_jit
from lattice.samplers.base import Sampler
from lattice.samplers.chains import step_all

__all__ = [
    "DualAveraging",
    "GAMMA",
    "T0",
    "KAPPA",
    "dual_averaging",
    "restart",
    "windows",
    "update",
    "tune",
    "frozen_step",
]

#: the constants of eq. (1) (Hoffman, Gelman 2014, section 3.2.1)
GAMMA, T0, KAPPA = 0.05, 10.0, 0.75
#: γ of the second window: ten times the published one, so that ε_m oscillates ten times less
GAMMA_FINAL = 0.5


class DualAveraging(NamedTuple):
    """The state of eq. (1) per chain: log ε_m, log ε̄_m, H̄_m and μ (arrays ``[chains]``)."""

    log_eps: jax.Array
    log_eps_bar: jax.Array
    h_bar: jax.Array
    mu: jax.Array
    tail: jax.Array  # Σ log ε_m over the last quarter of the tuning steps


def dual_averaging(step_size: float, chains: int, dtype=jnp.float64) -> DualAveraging:
    """The state before the first iteration: ε = ``step_size`` for every chain."""
    z = jnp.zeros(chains, dtype)
    log_eps = z + jnp.log(jnp.asarray(step_size, dtype))
    return DualAveraging(log_eps, z, z, log_eps + jnp.log(jnp.asarray(10.0, dtype)), z)


def restart(da: DualAveraging) -> DualAveraging:
    """The second window: ε₀ = μ = ε̄ of the first, and H̄ = log ε̄ = 0 again."""
    z = jnp.zeros_like(da.h_bar)
    return DualAveraging(da.log_eps_bar, z, z, da.log_eps_bar, da.tail)


def windows(n_steps: int) -> tuple[int, ...]:
    """The first step of each window of ``n_steps`` tuning steps: 0 and n_steps // 2."""
    return (0, n_steps // 2)


def tail_start(n_steps: int) -> int:
    """The first of the tuning steps whose log ε_m are averaged into the frozen step."""
    return n_steps - max(n_steps // 4, 1)


#: the acceptances are pooled over chains as integers in units of 2^-24 (exact sums)
_UNIT = 2**24


def pooled(alpha: jax.Array) -> jax.Array:
    """The mean over chains of the acceptance probabilities ``alpha`` [chains], for every
    chain: each α rounded to a multiple of 2⁻²⁴ (a non-finite α, a trajectory that blew up,
    counts as 0) and summed as integers, so the sum is exact in any order: the same bits
    however the chains are split over devices."""
    a = jnp.where(jnp.isfinite(alpha), jnp.clip(alpha, 0, 1), 0)
    q = jnp.round(a.astype(jnp.float64) * _UNIT).astype(jnp.int64)
    mean = jnp.sum(q).astype(jnp.float64) / (q.size * _UNIT)
    return jnp.broadcast_to(mean, alpha.shape)


def update(da: DualAveraging, m, alpha, target: float, gamma=GAMMA) -> DualAveraging:
    """Eq. (1) at iteration ``m`` (from 1) with acceptance probabilities ``alpha`` in [0, 1]
    (:func:`pooled` gives them, with a non-finite α counted as 0)."""
    alpha = alpha.astype(da.h_bar.dtype)
    w = 1.0 / (m + T0)
    h_bar = (1.0 - w) * da.h_bar + w * (target - alpha)
    log_eps = da.mu - jnp.sqrt(m) / gamma * h_bar
    eta = m ** (-KAPPA)
    log_eps_bar = eta * log_eps + (1.0 - eta) * da.log_eps_bar
    return DualAveraging(log_eps, log_eps_bar, h_bar, da.mu, da.tail)


@hot_jit(static_argnames=("sampler", "n_steps", "target"))
def tune(
    sampler: Sampler,
    keys,
    states,
    da: DualAveraging,
    step0,
    window0,
    tail0,
    n_steps: int,
    target: float,
):
    """``n_steps`` tuning steps of every chain from global step ``step0`` in the window that
    starts at step ``window0`` (iteration m = step0 − window0 + 1 + i; from step ``tail0`` on
    the steps' log ε add to ``da.tail``), with the step keys
    k(seed, c, t) of the sampler's own loops and the sampler's cluster update where it has
    one. Returns ``(states, da, mean acceptance per chain)``."""
    if sampler.tunable_step is None:
        raise ValueError(f"sampler {sampler.name} has no step size to tune")
    dtype = da.h_bar.dtype

    def body(i, carry):
        states, da, acc = carry
        t = step0 + i
        eps = jnp.exp(da.log_eps).astype(states.phi.dtype)
        step = jax.vmap(sampler.tunable_step)
        states, info, _ = step_all(sampler, keys, states, t, lambda k, s: step(k, s, eps))
        used = jnp.where(t >= tail0, da.log_eps, 0)
        gamma = jnp.where(window0 > 0, GAMMA_FINAL, GAMMA).astype(dtype)
        da = update(da, (t - window0 + 1).astype(dtype), pooled(info.acceptance), target, gamma)
        da = da._replace(tail=da.tail + used)
        return states, da, acc + info.acceptance.astype(dtype)

    zero = jnp.zeros(keys.shape[0], dtype)
    states, da, acc = lax.fori_loop(0, n_steps, body, (states, da, zero))
    return states, da, acc / max(n_steps, 1)


def frozen_step(da: DualAveraging, n_steps: int) -> float:
    """The step frozen for sampling after ``n_steps`` tuning steps: the geometric mean of the
    steps ε_m of the tail (:func:`tail_start`), in float64 (every chain has the same)."""
    tail = np.asarray(da.tail, np.float64)[0]
    return float(np.exp(tail / (n_steps - tail_start(n_steps))))
