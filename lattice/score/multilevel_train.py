"""Training the multilevel model (``lattice train`` with ``[train] method = "multilevel"``):
denoising score matching on every level's pairs at once (``multilevel.py`` eq. (1)).

Every optimizer step draws a batch of fine configurations, augments each by a reflection of
every axis, an axis permutation of equal extents (as ``train.py``) and one of the 2^D shifts
s ∈ {0, 1}^D of the fine lattice (so all 2^D Haar decompositions of a configuration are
training pairs, ``wavelet.py``), splits it down to the coarsest level, and takes one σ and one z
per level. The loss is the sum of the levels' σ²-weighted DSM losses per site (``train.py``
eq. (1)), each in its own SDE's σ::

    L(θ) = Σ_j E ‖σ_j ŝ_j(d_j + σ_j z, σ_j | c_{j+1}) + z‖² / n_j
           + E ‖σ_n ŝ_n(c_n + σ_n z, σ_n) + z‖² / n_n                                      (1)

with n_j the number of values of level j: the denoising objective (``[train] objective =
"dsm"``). The default, ``"tsm"`` (target score matching, De Bortoli et al. arXiv:2402.08667),
mixes into each level's target the level's part t_j of the Haar decomposition of the force
F = −∂S/∂φ (t_j its level-j details, t_n its coarsest field), an unbiased estimate of the clean
score since E[t_j | d_j, c_{j+1}] = ∇_{d_j} log p(d_j | c_{j+1}) (the coarse field's score is
the conditional mean of the blocked fine force; docs/multilevel.md §3)::

    L_j = E ‖σ_j ŝ_j(d_j + σ_j z, σ_j | c_{j+1}) + (1 − w_j) z − w_j σ_j t_j‖² / n_j,
    w_j(σ) = 1 / (1 + b_j σ²)                                                              (2)

with b_j the mean square of t_j on the training data. For any w it has the minimizer of (1);
its target's variance stays finite as σ → 0, where (1)'s grows as 1/σ².

All networks share one AdamW optimizer, learning-rate
schedule, gradient clipping and EMA (those of ``train.py``). Every random number is a function of
(seed, step), drawn in float32 whatever JAX's x64 mode, so a resumed training is bitwise
identical to an uninterrupted one, from the CLI or the Python API. The history
records each level's training and validation loss (``train_loss_<level>``,
``val_loss_<level>``, :func:`~lattice.score.multilevel.level_names`) beside their sums.

Each level's SDE is variance exploding, σ from 0.01 σ_d of that level's variable (or
``sigma_min``) to the largest distance between two of its training values (or ``sigma_max``).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lattice.numerics.analysis import gamma_method
from lattice.numerics.wavelet import haar_merge, haar_split
from lattice.score.factory import build_network
from lattice.score.multilevel import MultilevelModel, level_names
from lattice.score.network import NetworkSpec
from lattice.score.sde import VESDE
from lattice.score.spectral import SPECTRAL_FIELDS, measure_spectral, spectral_from_dict
from lattice.score.train import (
    MAX_VALIDATION,
    N_SIGMA_GRID,
    TrainingData,
    _augment_one,
    _symmetries,
    apply_step,
    dsm_loss,
    make_optimizer,
    max_pairwise_distance,
    run_steps,
)

__all__ = [
    "MultilevelTrainer",
    "split_levels",
    "level_statistics",
    "multilevel_diagnostics",
    "tsm_loss",
]


def split_levels(phi, ndim: int, levels: int):
    """[(details d_j, coarse c_{j+1}) for j = 0 … n−1] and the coarsest field c_n of a batch
    ``phi`` [B, *shape] (``multilevel.py`` eq. (1))."""
    pairs = []
    c = phi
    for _ in range(levels):
        c, d = haar_split(c, ndim)
        pairs.append((d, c))
    return pairs, c


def level_statistics(train: np.ndarray, ndim: int, levels: int, theory=None) -> dict[str, Any]:
    """Per level, from the training configurations: σ_d (RMS of the details; of the coarsest
    field last), σ_c (RMS of each level's coarse field), the largest pairwise distance (the
    auto σ_max), the transfer scale a = RMS(c_1)/RMS(φ) and, with ``theory``, the mean square
    b of each level's part of the force's decomposition (eq. (2), the weights w_j)."""
    x = jnp.asarray(train[: min(len(train), 4096)], jnp.float32)
    pairs, cn = split_levels(x, ndim, levels)
    rms = lambda a: float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))  # noqa: E731
    sigma_data = [rms(d) for d, _ in pairs] + [rms(cn)]
    sigma_coarse = [rms(c) for _, c in pairs]
    dist = [max_pairwise_distance(np.asarray(d)) for d, _ in pairs]
    dist.append(max_pairwise_distance(np.asarray(cn)))
    out = {
        "sigma_data": sigma_data,
        "sigma_coarse": sigma_coarse,
        "max_distance": dist,
        "scale": sigma_coarse[0] / rms(x),
    }
    if theory is not None:
        fp, fn = split_levels(theory.force(x), ndim, levels)
        out["force_ms"] = [rms(f) ** 2 for f, _ in fp] + [rms(fn) ** 2]
    return out


def tsm_loss(score, x, sigma, z, target, weight):
    """Per-sample loss of eq. (2): mean over sites of (σ ŝ(x + σz, σ) + (1 − w) z − w σ t)²,
    for the clean score's estimate ``target`` t and the weight ``weight`` w ([B]); w = 0 is
    the denoising loss (``train.py`` eq. (1))."""
    s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    w = weight.reshape(s.shape)
    r = s * score(x + s * z, sigma) + (1.0 - w) * z - w * s * target
    return jnp.mean(r * r, axis=tuple(range(1, x.ndim)))


class MultilevelTrainer:
    """The multilevel counterpart of :class:`lattice.score.train.Trainer`, with the same
    interface for ``runs/training.py``: ``init_state``, ``run``, ``history_row``, ``schedule``,
    ``net``; ``net(params)`` is the tuple (coarse network, conditional networks…)."""

    def __init__(self, cfg: Any, data: TrainingData, levels: int):
        self.cfg, self.data, self.levels = cfg, data, levels
        t = cfg.train
        theory = data.theory
        nd = theory.ndim
        self.ndim = nd
        self.objective = t.objective or "tsm"
        self.stats = level_statistics(data.train, nd, levels, theory)
        sd = self.stats["sigma_data"]
        lo = [0.01 * s if t.sigma_min == "auto" else t.sigma_min for s in sd]
        hi = self.stats["max_distance"] if t.sigma_max == "auto" else [t.sigma_max] * len(sd)
        self.sdes = tuple(VESDE(a, b) for a, b in zip(lo, hi, strict=True))
        self.names = level_names(levels)
        self.spec = NetworkSpec.from_dict(cfg.network.model_dump())
        base = jax.random.key(t.seed)
        nets = build_network(
            self.spec, theory, sd, key=base, levels=levels, sigma_coarse=self.stats["sigma_coarse"]
        )
        params, self.static = eqx.partition(nets, eqx.is_inexact_array)
        self.schedule, self.optimizer = make_optimizer(t)
        self.init_state = (params, self.optimizer.init(params), params, jnp.int32(0))
        self.step_key = jax.random.fold_in(base, 2)
        self.perms = _symmetries(theory.shape)
        self.train_data = jnp.asarray(data.train)
        val = data.validation[:: max(1, len(data.validation) // MAX_VALIDATION)][:MAX_VALIDATION]
        m = len(val)
        kv = jax.random.fold_in(base, 3)
        tv = (jnp.arange(m, dtype=jnp.float32) + 0.5) / m
        self.val_t = jnp.stack(
            [jax.random.permutation(jax.random.fold_in(kv, j), tv) for j in range(levels + 1)]
        )
        self.val_phi = jnp.asarray(val)
        self.val_z = jax.random.fold_in(kv, 1 << 16)

    def net(self, params):
        return eqx.combine(params, self.static)

    # ------------------------------------------------------------------ the loss
    def _level_losses(self, nets, phi, t, key):
        """Per-sample losses of eq. (1), [levels + 1, B]: t [levels + 1, B] (uniform on [0, 1])
        and the noise of level j from ``fold_in(key, j)``."""
        coarse, *conds = nets
        pairs, cn = split_levels(phi, self.ndim, self.levels)
        scores = [
            lambda y, s, c=c, n=n: n.batch(y, s, c) for n, (_, c) in zip(conds, pairs, strict=True)
        ]
        scores.append(coarse.batch)
        xs = [d for d, _ in pairs] + [cn]
        if self.objective == "tsm":
            fp, fn = split_levels(self.data.theory.force(phi), self.ndim, self.levels)
            targets = [f for f, _ in fp] + [fn]
        out = []
        for j, (score, x) in enumerate(zip(scores, xs, strict=True)):
            sig = self.sdes[j].sigma(t[j]).astype(jnp.float32)
            z = jax.random.normal(jax.random.fold_in(key, j), x.shape, jnp.float32)
            if self.objective == "tsm":
                w = 1.0 / (1.0 + jnp.float32(self.stats["force_ms"][j]) * sig * sig)
                out.append(tsm_loss(score, x, sig, z, targets[j], w))
            else:
                out.append(dsm_loss(score, x, sig, z))
        return jnp.stack(out)

    @functools.cached_property
    def step(self):
        """One optimizer step, jitted: (params, opt_state, ema, k) → (…, k + 1), (level losses
        [levels + 1], |g|); the randomness of step k comes from ``fold_in(step_key, k)``."""
        t = self.cfg.train
        B, perms, nd = t.batch_size, self.perms, self.ndim

        def loss_fn(params, phi, tt, key):
            per = jnp.mean(self._level_losses(self.net(params), phi, tt, key), axis=1)
            return jnp.sum(per), per

        @jax.jit
        def step(state, data):
            params, k = state[0], state[3]
            kidx, kaug, kshift, kt, kz = jax.random.split(jax.random.fold_in(self.step_key, k), 5)
            phi = data[jax.random.randint(kidx, (B,), 0, data.shape[0], jnp.int32)]
            if t.augment:
                phi = jax.vmap(lambda p, kk: _augment_one(p, kk, perms, jnp.float32(0.5)))(
                    phi, jax.random.split(kaug, B)
                )
            shift = jax.random.bernoulli(kshift, jnp.float32(0.5), (B, nd)).astype(jnp.int32)
            phi = jax.vmap(_shift)(phi, shift)
            tt = jax.random.uniform(kt, (self.levels + 1, B), jnp.float32)
            (_, per), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, phi, tt, kz)
            state = apply_step(self.optimizer, t.ema, state, grads)
            return state, (per, optax.tree.norm(grads))

        return step

    def run(self, state, n: int):
        """``n`` steps dispatched asynchronously (as ``Trainer.run``): the state, the level
        losses [n, levels + 1] and the gradient norms [n]."""
        return run_steps(self.step, state, self.train_data, n)

    @functools.cached_property
    def _eval(self):
        @jax.jit
        def ev(params, phi, t, key):
            return self._level_losses(self.net(params), phi, t, key)

        return ev

    def level_val_losses(self, params, t=None) -> np.ndarray:
        """Per-sample validation losses [levels + 1, m] at the fixed validation σ (or ``t``
        [levels + 1, m]) and noise, in batches of 256."""
        t = self.val_t if t is None else t
        m = self.val_phi.shape[0]
        parts = [
            np.asarray(
                self._eval(
                    params,
                    self.val_phi[i : i + 256],
                    t[:, i : i + 256],
                    jax.random.fold_in(self.val_z, i),
                )
            )
            for i in range(0, m, 256)
        ]
        return np.concatenate(parts, axis=1)

    def history_row(self, losses, ema_params) -> dict[str, float]:
        """The history.csv losses of one block of steps: the sums and every level's."""
        tr = np.mean(np.asarray(losses), axis=0)
        val = np.mean(self.level_val_losses(ema_params), axis=1)
        row = {"train_loss": float(tr.sum()), "val_loss": float(val.sum())}
        for name, a, b in zip(self.names, tr, val, strict=True):
            row[f"train_loss_{name}"] = float(a)
            row[f"val_loss_{name}"] = float(b)
        return row


def _shift(phi, s):
    """φ(x + s) for s ∈ {0, 1}^D (traced)."""
    for ax in range(s.shape[0]):
        phi = jnp.where(s[ax] == 1, jnp.roll(phi, -1, axis=ax), phi)
    return phi


def multilevel_diagnostics(tr: MultilevelTrainer, params) -> tuple[dict, list[dict]]:
    """After training: the validation loss of every level on a σ grid (Γ-method errors), the
    cosine between the finest level's ŝ and F_d at its σ_min, and every level's spectral table
    (``multilevel.py``: per channel and mode for the details, per mode for the coarsest field)
    measured on the held-out configurations topped up with training ones."""
    nets = tr.net(params)
    coarse, *conds = nets
    m = tr.val_phi.shape[0]
    grid = []
    for g in np.linspace(0.0, 1.0, N_SIGMA_GRID):
        per = tr.level_val_losses(params, jnp.full((tr.levels + 1, m), g, jnp.float32))
        for j, name in enumerate(tr.names):
            est = gamma_method(np.asarray(per[j], np.float64))
            sig = float(tr.sdes[j].sigma(g))
            grid.append({"level": name, "sigma": sig, "loss": float(est.value),
                         "error": float(est.error)})  # fmt: skip
    fields = np.concatenate([np.asarray(tr.val_phi), tr.data.train[: max(0, SPECTRAL_FIELDS - m)]])
    x = jnp.asarray(fields[:SPECTRAL_FIELDS])
    pairs, cn = split_levels(x, tr.ndim, tr.levels)
    tables = []
    for j, (d, c) in enumerate(pairs):
        t = measure_spectral(
            lambda y, s, cc, n=conds[j]: n.batch(y, s, cc),
            tr.sdes[j],
            d,
            context=c,
            ndim=tr.ndim,
        )
        t["source"] = f"measured after training on {t['fields']} configurations ({m} held out)"
        tables.append(t)
    t = measure_spectral(coarse.batch, tr.sdes[-1], cn)
    t["source"] = f"measured after training on {t['fields']} configurations ({m} held out)"
    tables.append(t)
    # the finest level at σ_min: cos(ŝ_0, F_d)
    d0, c1 = pairs[0]
    s_min = tr.sdes[0].sigma_min
    z = jax.random.normal(jax.random.key(7), d0.shape, jnp.float32)
    y = d0 + s_min * z
    s = np.asarray(conds[0].batch(y, jnp.float32(s_min), c1))
    _, f = haar_split(tr.data.theory.force(haar_merge(c1, y, tr.ndim)), tr.ndim)
    f = np.asarray(f)
    ax = tuple(range(1, s.ndim))
    cos = np.sum(s * f, ax) / np.sqrt(np.sum(s * s, ax) * np.sum(f * f, ax))
    diag = {
        "val_loss_sigma": grid,
        "cosine_similarity": {
            "level": "level0",
            "sigma": float(s_min),
            "mean": float(cos.mean()),
            "min": float(cos.min()),
            "configs": int(len(cos)),
        },
    }
    return diag, tables


def build_model(tr: MultilevelTrainer, params, tables, meta=None, path=None) -> MultilevelModel:
    """The :class:`MultilevelModel` of trained ``params`` and its measured ``tables``."""
    coarse, *conds = tr.net(params)
    return MultilevelModel(
        coarse=coarse,
        conditionals=tuple(conds),
        sdes=tr.sdes,
        theory=tr.data.theory,
        scale=float(tr.stats["scale"]),
        tables=tuple(spectral_from_dict(t, t.get("source", "")) for t in tables),
        meta=meta or {},
        path=path,
    )


__all__ += ["build_model"]
