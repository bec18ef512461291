"""Generating fields with a score: predictor–corrector and annealed Langevin dynamics. Neither
has a tractable density, so their samples are *approximate* (docs/conventions.md §5); the
reverse path with its exact weight (``path.py``, ``method = "sde"``) and the probability-flow ODE
(``flow.py``) are the exact routes.

All work on one field x (vmap over chains) on the uniform grid t_k = 1 − k (1 − t_0)/K,
k = 0..K, with x(1) drawn by the caller from the prior, and a key from which step k's noise is
``fold_in(key, k)``.

The predictor is the reverse SDE's Euler–Maruyama step (Song et al., arXiv:2011.13456,
eq. 6)::

    x ← x − [f(x, t) − g(t)² s(x, t)] Δt + g(t) √Δt z,   Δt = (1 − t_0)/K          (1)

Predictor–corrector (Song et al., Algorithms 2–3): the predictor (1), then ``corrector_steps``
Langevin steps at the new time with the step set by the signal-to-noise ratio r::

    ε = 2 α(t) (r ‖z‖/‖s‖)²,  x ← x + ε s(x, t) + √(2ε) z                        (2)

Annealed Langevin (Song & Ermon, arXiv:1907.05600, Algorithm 1) over the noise levels
σ_k = σ(t_k), k = 1..K, with T steps at each level, in the VE variable y = x/α::

    ε_k = c σ_k²,  y ← y + (ε_k/2) ŝ(y, σ_k) + √ε_k z                                (3)

(Song & Ermon's ε σ_k²/σ_L² with c = ε/σ_L²: the step shrinks with the width of q_σ.)

The final sample is the last iterate (no extra denoising step), at noise level σ(t_0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lattice.score.sde import SDE

__all__ = ["predictor_corrector", "annealed_langevin"]

Score = Callable[[jax.Array, jax.Array], jax.Array]


def _grid(sde: SDE, steps: int, t0: float | None):
    t0 = sde.t_min if t0 is None else t0
    return t0, (1.0 - t0) / steps


def _predictor(score, sde, x, t, dt, z):
    g = sde.diffusion(t)
    return x - (sde.drift(x, t) - g * g * score(x, t)) * dt + g * jnp.sqrt(dt) * z


def predictor_corrector(
    score: Score,
    sde: SDE,
    x1,
    key,
    steps: int,
    snr: float = 0.16,
    corrector_steps: int = 1,
    t0: float | None = None,
):
    """Eq. (1) then ``corrector_steps`` of eq. (2) at every step."""
    t0, dt = _grid(sde, steps, t0)

    def body(k, x):
        kk = jax.random.fold_in(key, k)
        t = jnp.asarray(1.0 - k * dt, x.dtype)
        x = _predictor(score, sde, x, t, dt, jax.random.normal(kk, x.shape, x.dtype))
        t_next = t - dt

        def corr(j, x):
            z = jax.random.normal(jax.random.fold_in(kk, j + 1), x.shape, x.dtype)
            s = score(x, t_next)
            eps = 2.0 * sde.alpha(t_next) * (snr * jnp.linalg.norm(z) / jnp.linalg.norm(s)) ** 2
            return x + eps * s + jnp.sqrt(2.0 * eps) * z

        return jax.lax.fori_loop(0, corrector_steps, corr, x)

    return jax.lax.fori_loop(0, steps, body, x1)


def annealed_langevin(
    score: Score,
    sde: SDE,
    x1,
    key,
    steps: int,
    steps_per_level: int = 5,
    step_scale: float = 0.1,
    t0: float | None = None,
):
    """Eq. (3): ``steps`` noise levels from σ(t_1) down to σ(t_0), ``steps_per_level``
    Langevin steps at each with ε_k = ``step_scale``·σ_k²."""
    t0, dt = _grid(sde, steps, t0)
    y = x1 / sde.alpha(1.0)

    def level(k, y):
        t = jnp.asarray(1.0 - (k + 1) * dt, y.dtype)
        a, s = sde.alpha(t), sde.sigma(t)
        eps = step_scale * s * s
        kk = jax.random.fold_in(key, k)

        def inner(j, y):
            z = jax.random.normal(jax.random.fold_in(kk, j), y.shape, y.dtype)
            # ŝ(y, σ) = α ∇_x log p_t(α y)
            return y + 0.5 * eps * a * score(a * y, t) + jnp.sqrt(eps) * z

        return jax.lax.fori_loop(0, steps_per_level, inner, y)

    y = jax.lax.fori_loop(0, steps, level, y)
    return sde.alpha(t0) * y
