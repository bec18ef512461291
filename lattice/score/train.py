"""Denoising score matching (``lattice train``): data, loss, optimizer, checkpoints, diagnostics.

The loss is the σ²-weighted denoising score-matching objective (Vincent 2011; Song et al.,
arXiv:2011.13456, eq. 7 with λ(t) = σ²), per site::

    L(θ) = E_{t ~ U(t_min, 1)} E_{φ ~ data} E_{z ~ N(0,1)} ‖σ ŝ_θ(φ + σ z, σ) + z‖² / V   (1)

with σ = σ(t), in the VE picture y = φ + σ z that every SDE shares (``sde.py`` eq. (1)); its
minimizer over all functions is the exact score of q_σ and its minimum ℓ*(σ) is known for the
free field (``gaussian.py`` eq. (2)). For VE, t ~ U(0, 1) is log σ uniform on [log σ_min, log
σ_max].

Optimizer: AdamW (Loshchilov–Hutter) with global-norm clipping, a linear warm-up to
``learning_rate`` over ``warmup`` steps and a cosine decay to 1% of it at ``steps``. The model
kept is an exponential moving average of the weights, θ̄ ← d θ̄ + (1 − d) θ with
d = min(ema, (1 + k)/(10 + k)) at step k.

Data augmentation draws, per sample, a reflection of every axis and a permutation of the axes
of equal length (the network is translation- and Z₂-equivariant by construction).

Every random number is a function of (seed, step): the batch, augmentation, σ and noise of
step k use ``fold_in(fold_in(key(seed), 2), k)``. With the checkpointed optimizer state this
makes a resumed training bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lattice.numerics.analysis import gamma_method
from lattice.numerics.phi4 import Phi4
from lattice.score.factory import build_network
from lattice.score.gaussian import exact_dsm_loss
from lattice.score.network import NetworkSpec, ScoreNet
from lattice.score.path import norm_table
from lattice.score.sde import SDE
from lattice.score.spectral import SPECTRAL_FIELDS, measure_spectral

__all__ = [
    "TrainingData",
    "Trainer",
    "dsm_loss",
    "max_pairwise_distance",
    "diagnostics",
    "training_record",
]

#: validation set size cap (configurations, each with its own fixed σ and noise)
MAX_VALIDATION = 512
#: σ grid of the final validation-loss-against-σ diagnostic
N_SIGMA_GRID = 12


@dataclass(frozen=True)
class TrainingData:
    """Training and validation configurations (float32, [N, *shape]) and their provenance."""

    train: np.ndarray
    validation: np.ndarray
    theory: Phi4
    sigma_data: float
    ensemble: Path
    uuid: str | None
    chains: int
    discard: int


def max_pairwise_distance(x: np.ndarray, limit: int = 1024) -> float:
    """max_{i,j} ‖x_i − x_j‖ over (a strided subsample of at most ``limit``) configurations:
    the σ_max of Song & Ermon (arXiv:2006.09011, technique 1)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x[:: max(1, len(x) // limit)]
    n2 = np.sum(x * x, axis=1)
    d2 = n2[:, None] + n2[None, :] - 2.0 * x @ x.T
    return float(np.sqrt(max(d2.max(), 0.0)))


# ---------------------------------------------------------------------- the loss
def dsm_loss(score, phi, sigma, z):
    """Per-sample loss of eq. (1): mean over sites of (σ ŝ(φ + σ z, σ) + z)².

    ``score(y, sigma)`` is batched (e.g. ``ScoreNet.batch`` or ``GaussianScore.batch``);
    ``phi`` and ``z`` are [B, *shape], ``sigma`` is [B].
    """

    s = sigma.reshape((-1,) + (1,) * (phi.ndim - 1))
    r = s * score(phi + s * z, sigma) + z
    return jnp.mean(r * r, axis=tuple(range(1, phi.ndim)))


def _symmetries(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Axis permutations that map the lattice shape to itself."""
    return [
        p
        for p in itertools.permutations(range(len(shape)))
        if all(shape[i] == shape[j] for i, j in zip(p, range(len(shape)), strict=True))
    ]


def _augment_one(phi, key, perms, half=0.5):
    """A random reflection of every axis, then a random shape-preserving axis permutation.
    ``half`` is the reflection probability as given to ``jax.random.bernoulli``: the default
    Python 0.5 draws in the default float dtype, so the flips depend on JAX's x64 mode (kept
    for the bits of existing models); ``jnp.float32(0.5)`` draws the same flips in both."""

    nd = phi.ndim
    kf, kp = jax.random.split(key)
    flips = jax.random.bernoulli(kf, half, (nd,))
    for ax in range(nd):
        phi = jnp.where(flips[ax], jnp.flip(phi, axis=ax), phi)
    if len(perms) > 1:
        i = jax.random.randint(kp, (), 0, len(perms), jnp.int32)
        phi = jnp.stack([jnp.transpose(phi, p) for p in perms])[i]
    return phi


# ---------------------------------------------------------------------- the trainer
def make_optimizer(t) -> tuple[Any, Any]:
    """(schedule, optimizer) of the module docstring for a ``[train]`` table ``t``: warm-up
    and cosine decay to 1%, global-norm clipping, AdamW."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, t.warmup, t.steps, t.learning_rate * 0.01
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.adamw(schedule, weight_decay=t.weight_decay),
    )
    return schedule, optimizer


def training_record(t, seconds: float, history: list[dict]) -> dict[str, Any]:
    """model.json's ``training`` table for a ``[train]`` table ``t``: steps, batch size,
    seconds, the last logged losses and the seed (every objective)."""
    return {
        "steps": t.steps,
        "batch_size": t.batch_size,
        "seconds": round(seconds, 2),
        "train_loss": history[-1]["train_loss"],
        "val_loss": history[-1]["val_loss"],
        "seed": t.seed,
    }


def apply_step(optimizer, ema_decay: float, state, grads):
    """(params, opt_state, ema, k) after one optimizer update with ``grads``, the EMA
    θ̄ ← d θ̄ + (1 − d) θ with d = min(ema_decay, (1 + k)/(10 + k)), and k + 1."""
    params, opt_state, ema, k = state
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = eqx.apply_updates(params, updates)
    kf = k.astype(jnp.float32)
    d = jnp.minimum(ema_decay, (1.0 + kf) / (10.0 + kf))
    ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
    return params, opt_state, ema, k + 1


def run_steps(step, state, data, n: int):
    """``n`` calls of the jitted ``step(state, data)`` → (state, (loss, |g|)), dispatched
    asynchronously: the state and the stacked losses and gradient norms."""
    out = []
    for _ in range(n):
        state, o = step(state, data)
        out.append(o)
    return state, jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])


class Trainer:
    """Jitted chunks of ``log_every`` optimizer steps (``lax.scan``), plus evaluation."""

    def __init__(self, cfg: Any, data: TrainingData, sde: SDE):
        """``cfg`` is a :class:`lattice.config.train.TrainConfig` (its ``train`` and ``network``
        tables; read by attribute, so this layer does not import the config layer)."""

        self.cfg, self.data, self.sde = cfg, data, sde
        t = cfg.train
        self.spec = NetworkSpec.from_dict(cfg.network.model_dump())
        base = jax.random.key(t.seed)
        net = build_network(
            self.spec, data.theory, data.sigma_data, key=jax.random.fold_in(base, 1)
        )
        params, self.static = eqx.partition(net, eqx.is_inexact_array)
        self.schedule, self.optimizer = make_optimizer(t)
        self.init_state = (params, self.optimizer.init(params), params, jnp.int32(0))
        self.step_key = jax.random.fold_in(base, 2)
        self.perms = _symmetries(data.theory.shape)
        self.train_data = jnp.asarray(data.train)
        # fixed validation set: σ stratified over [t_min, 1], noise from fold_in(base, 3)
        val = data.validation[:: max(1, len(data.validation) // MAX_VALIDATION)][:MAX_VALIDATION]
        m = len(val)
        kv1, kv2 = jax.random.split(jax.random.fold_in(base, 3))
        tv = sde.t_min + (1.0 - sde.t_min) * (jnp.arange(m, dtype=jnp.float32) + 0.5) / m
        self.val = (
            jnp.asarray(val),
            jax.random.permutation(kv1, tv),
            jax.random.normal(kv2, val.shape, jnp.float32),
        )

    def net(self, params) -> ScoreNet:

        return eqx.combine(params, self.static)

    def sigma(self, t):

        return self.sde.sigma(t).astype(jnp.float32)

    @functools.cached_property
    def step(self):
        """One optimizer step, jitted: (params, opt_state, ema, k) → (…, k + 1), (loss, |g|).

        The batch, augmentation, σ and noise of step k come from ``fold_in(step_key, k)``.
        """

        t = self.cfg.train
        B, perms, sde = t.batch_size, self.perms, self.sde

        def loss_fn(params, phi, sigma, z):
            return jnp.mean(dsm_loss(self.net(params).batch, phi, sigma, z))

        @jax.jit
        def step(state, data):
            params, k = state[0], state[3]
            kidx, kaug, kt, kz = jax.random.split(jax.random.fold_in(self.step_key, k), 4)
            phi = data[jax.random.randint(kidx, (B,), 0, data.shape[0], jnp.int32)]
            if t.augment:
                phi = jax.vmap(lambda p, kk: _augment_one(p, kk, perms))(
                    phi, jax.random.split(kaug, B)
                )
            tt = jax.random.uniform(kt, (B,), jnp.float32, sde.t_min, 1.0)
            z = jax.random.normal(kz, phi.shape, jnp.float32)
            loss, grads = jax.value_and_grad(loss_fn)(params, phi, self.sigma(tt), z)
            state = apply_step(self.optimizer, t.ema, state, grads)
            return state, (loss, optax.tree.norm(grads))

        return step

    def run(self, state, n: int):
        """``n`` steps, dispatched asynchronously: nothing returns to the host until the caller
        reads the stacked losses. (Not a ``lax.scan``: on XLA:CPU, convolutions whose weights
        are carried through a while loop run ~10× slower than the same step dispatched on its
        own — docs/PERFORMANCE.md.)"""

        return run_steps(self.step, state, self.train_data, n)

    @functools.cached_property
    def _eval(self):

        @jax.jit
        def ev(params, phi, t, z):
            return dsm_loss(self.net(params).batch, phi, self.sigma(t), z)

        return ev

    def losses(self, params, phi, t, z, batch: int = 256) -> np.ndarray:
        """Per-sample losses of eq. (1) at fixed (φ, t, z), in batches."""
        out = [
            np.asarray(self._eval(params, phi[i : i + batch], t[i : i + batch], z[i : i + batch]))
            for i in range(0, len(phi), batch)
        ]
        return np.concatenate(out)

    def val_loss(self, params) -> float:
        return float(np.mean(self.losses(params, *self.val)))

    def history_row(self, losses, ema_params) -> dict[str, float]:
        """The history.csv losses of one block of steps (batch mean, validation)."""
        return {
            "train_loss": float(np.mean(np.asarray(losses))),
            "val_loss": self.val_loss(ema_params),
        }


def diagnostics(net: ScoreNet, sde: SDE, data: TrainingData, tr: Trainer) -> dict[str, Any]:
    """Validation loss on a σ grid (Γ-method error; with the exact ℓ* for a free field), the cosine
    similarity between ŝ(y, σ_min) and −∂S/∂φ(y) on held-out y = φ + σ_min z, and the score
    norms u(σ) = σ² E‖ŝ‖²/V on the same grid (``path.py`` eq. (3)), and the per-mode table
    M(σ, p), C(p) of the spectral path kernel (``spectral.py`` eq. (1))."""

    params = eqx.filter(net, eqx.is_inexact_array)
    phi, _, z = tr.val
    m = len(phi)
    ts = np.linspace(sde.t_min, 1.0, N_SIGMA_GRID)
    grid = []
    for tv in ts:
        per = tr.losses(params, phi, jnp.full((m,), tv, jnp.float32), z)
        sig = float(sde.sigma(tv))
        # the held-out configurations are the ends of Markov chains, in order: Γ-method error
        g = gamma_method(np.asarray(per, np.float64))
        row = {"sigma": sig, "loss": float(g.value), "error": float(g.error)}
        if data.theory.lam == 0:
            row["exact"] = float(exact_dsm_loss(data.theory, sig))
        grid.append(row)
    s_min = float(sde.sigma(sde.t_min))
    y = phi + s_min * z

    @jax.jit
    def cosines(y):
        s = net.batch(y, jnp.float32(s_min))
        f = data.theory.force(y)
        ax = tuple(range(1, y.ndim))
        return jnp.sum(s * f, ax) / jnp.sqrt(jnp.sum(s * s, ax) * jnp.sum(f * f, ax))

    c = np.concatenate([np.asarray(cosines(y[i : i + 256])) for i in range(0, m, 256)])
    # M on the held-out configurations first, topped up with training ones to SPECTRAL_FIELDS
    fields = np.concatenate([np.asarray(phi), data.train[: max(0, SPECTRAL_FIELDS - m)]])
    spectral = measure_spectral(net.batch, sde, fields, data.train)
    held = min(m, spectral["fields"])
    spectral["source"] = (
        f"measured after training: M on {spectral['fields']} configurations ({held} held out),"
        f" C on {spectral['power_fields']} training configurations"
    )
    return {
        "score_norms": norm_table(net.batch, sde, phi),
        "spectral": spectral,
        "val_loss_sigma": grid,
        "cosine_similarity": {
            "sigma": s_min,
            "mean": float(c.mean()),
            "min": float(c.min()),
            "configs": m,
        },
    }
