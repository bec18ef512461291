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

import csv
import functools
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, parse_config
from ..ensemble import (
    EnsembleError,
    open_ensemble,
    read_checkpoint,
    write_checkpoint,
    write_file_atomic,
)
from ..phi4 import Phi4
from ..progress import QuietReporter, Reporter
from .config import TrainConfig, load_train_config
from .model import META, WEIGHTS, ModelError, save_model
from .network import NetworkSpec, ScoreNet, count_parameters
from .sde import SDE, make_sde

__all__ = [
    "TrainError",
    "TrainingData",
    "load_training_data",
    "resolve_sde",
    "dsm_loss",
    "train_model",
    "resume_training",
    "is_training_dir",
]

CONFIG = "config.toml"
CHECKPOINT = "checkpoint.h5"
HISTORY = "history.csv"
LOG = "train.log"
PLOTS = ("loss.png", "val_loss_sigma.png")
#: validation set size cap (configurations, each with its own fixed σ and noise)
MAX_VALIDATION = 512
#: σ grid of the final validation-loss-against-σ diagnostic
N_SIGMA_GRID = 12


class TrainError(Exception):
    """Training that cannot start (bad data, existing model, edited config): exit status 2."""

    exit_code = 2


# ---------------------------------------------------------------------- data
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


def resolve_ensemble(value: str, config_dir: Path | None = None) -> Path:
    """``[train] ensemble``: a run directory or an ensemble.h5, relative to the working
    directory or, failing that, to the config file's directory."""
    cands = [Path(value)]
    if config_dir is not None and not Path(value).is_absolute():
        cands.append(config_dir / value)
    for c in cands:
        p = c / "ensemble.h5" if c.is_dir() else c
        if p.exists():
            return p.resolve()
    tried = " or ".join(str(c) for c in cands)
    raise TrainError(f"train.ensemble: no run directory or ensemble file at {tried}")


def load_training_data(
    cfg: TrainConfig, config_dir: Path | None = None, path: Path | None = None
) -> TrainingData:
    """The saved configurations of ``train.ensemble`` (or of ``path``, already resolved) after
    ``discard`` per chain, split per chain: the last ``validation`` fraction of every chain is
    held out (at least one configuration)."""
    from ..jobs import build_theory

    path = path or resolve_ensemble(cfg.train.ensemble, config_dir)
    try:
        ens = open_ensemble(path, load_observables=False)
    except EnsembleError as e:
        raise TrainError(f"train.ensemble: {e}") from None
    theory = build_theory(parse_config(ens.config_toml))
    if ens.saved == 0:
        raise TrainError(
            f"train.ensemble: {path} has no saved configurations (it was run with "
            "run.save_every = 0); rerun it with run.save_every > 0 to train on it"
        )
    usable = ens.saved - cfg.train.discard
    if usable < 2:
        raise TrainError(
            f"train.discard: {cfg.train.discard} leaves {max(usable, 0)} of the {ens.saved} "
            f"saved configurations per chain; at least 2 are needed (training + validation)"
        )
    phi, _ = ens.configs()
    phi = np.asarray(phi[:, cfg.train.discard :], dtype=np.float32)
    n_val = max(1, int(round(cfg.train.validation * usable)))
    train = phi[:, : usable - n_val].reshape((-1,) + theory.shape)
    val = phi[:, usable - n_val :].reshape((-1,) + theory.shape)
    sigma_data = float(np.sqrt(np.mean(np.square(train, dtype=np.float64))))
    return TrainingData(
        train=train,
        validation=val,
        theory=theory,
        sigma_data=sigma_data,
        ensemble=path,
        uuid=ens.uuid,
        chains=ens.chains,
        discard=cfg.train.discard,
    )


def max_pairwise_distance(x: np.ndarray, limit: int = 1024) -> float:
    """max_{i,j} ‖x_i − x_j‖ over (a strided subsample of at most ``limit``) configurations:
    the σ_max of Song & Ermon (arXiv:2006.09011, technique 1)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x[:: max(1, len(x) // limit)]
    n2 = np.sum(x * x, axis=1)
    d2 = n2[:, None] + n2[None, :] - 2.0 * x @ x.T
    return float(np.sqrt(max(d2.max(), 0.0)))


def resolve_sde(cfg: TrainConfig, data: TrainingData) -> SDE:
    """The SDE with "auto" resolved: σ_min = 0.01 σ_d, σ_max = the largest distance between
    two training configurations (VE)."""
    t = cfg.train
    lo = 0.01 * data.sigma_data if t.sigma_min == "auto" else t.sigma_min
    if t.sde == "ve":
        hi = max_pairwise_distance(data.train) if t.sigma_max == "auto" else t.sigma_max
        if not lo < hi:
            raise TrainError(f"train.sigma_max: {hi:.4g} must exceed sigma_min = {lo:.4g}")
        return make_sde("ve", lo, hi)
    try:
        return make_sde("vp", lo, 0.0, t.beta_min, t.beta_max)
    except ValueError as e:
        raise TrainError(f"train.sigma_min: {e}") from None


# ---------------------------------------------------------------------- the loss
def dsm_loss(score, phi, sigma, z):
    """Per-sample loss of eq. (1): mean over sites of (σ ŝ(φ + σ z, σ) + z)².

    ``score(y, sigma)`` is batched (e.g. ``ScoreNet.batch`` or ``GaussianScore.batch``);
    ``phi`` and ``z`` are [B, *shape], ``sigma`` is [B].
    """
    import jax.numpy as jnp

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


def _augment_one(phi, key, perms):
    """A random reflection of every axis, then a random shape-preserving axis permutation."""
    import jax
    import jax.numpy as jnp

    nd = phi.ndim
    kf, kp = jax.random.split(key)
    flips = jax.random.bernoulli(kf, 0.5, (nd,))
    for ax in range(nd):
        phi = jnp.where(flips[ax], jnp.flip(phi, axis=ax), phi)
    if len(perms) > 1:
        i = jax.random.randint(kp, (), 0, len(perms), jnp.int32)
        phi = jnp.stack([jnp.transpose(phi, p) for p in perms])[i]
    return phi


# ---------------------------------------------------------------------- the trainer
class _Trainer:
    """Jitted chunks of ``log_every`` optimizer steps (``lax.scan``), plus evaluation."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, sde: SDE):
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import optax

        self.cfg, self.data, self.sde = cfg, data, sde
        t = cfg.train
        self.spec = NetworkSpec.from_dict(cfg.network.model_dump())
        base = jax.random.key(t.seed)
        net = ScoreNet(self.spec, data.theory, data.sigma_data, key=jax.random.fold_in(base, 1))
        params, self.static = eqx.partition(net, eqx.is_inexact_array)
        self.schedule = optax.warmup_cosine_decay_schedule(
            0.0, t.learning_rate, t.warmup, t.steps, t.learning_rate * 0.01
        )
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(t.grad_clip),
            optax.adamw(self.schedule, weight_decay=t.weight_decay),
        )
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
        import equinox as eqx

        return eqx.combine(params, self.static)

    def sigma(self, t):
        import jax.numpy as jnp

        return self.sde.sigma(t).astype(jnp.float32)

    @functools.cached_property
    def step(self):
        """One optimizer step, jitted: (params, opt_state, ema, k) → (…, k + 1), (loss, |g|).

        The batch, augmentation, σ and noise of step k come from ``fold_in(step_key, k)``.
        """
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import optax

        t = self.cfg.train
        B, perms, sde = t.batch_size, self.perms, self.sde

        def loss_fn(params, phi, sigma, z):
            return jnp.mean(dsm_loss(self.net(params).batch, phi, sigma, z))

        @jax.jit
        def step(state, data):
            params, opt_state, ema, k = state
            kidx, kaug, kt, kz = jax.random.split(jax.random.fold_in(self.step_key, k), 4)
            phi = data[jax.random.randint(kidx, (B,), 0, data.shape[0], jnp.int32)]
            if t.augment:
                phi = jax.vmap(lambda p, kk: _augment_one(p, kk, perms))(
                    phi, jax.random.split(kaug, B)
                )
            tt = jax.random.uniform(kt, (B,), jnp.float32, sde.t_min, 1.0)
            z = jax.random.normal(kz, phi.shape, jnp.float32)
            loss, grads = jax.value_and_grad(loss_fn)(params, phi, self.sigma(tt), z)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = eqx.apply_updates(params, updates)
            kf = k.astype(jnp.float32)
            d = jnp.minimum(t.ema, (1.0 + kf) / (10.0 + kf))
            ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
            return (params, opt_state, ema, k + 1), (loss, optax.tree.norm(grads))

        return step

    def run(self, state, n: int):
        """``n`` steps, dispatched asynchronously: nothing returns to the host until the caller
        reads the stacked losses. (Not a ``lax.scan``: on XLA:CPU, convolutions whose weights
        are carried through a while loop run ~10× slower than the same step dispatched on its
        own — docs/PERFORMANCE.md.)"""
        import jax.numpy as jnp

        out = []
        for _ in range(n):
            state, o = self.step(state, self.train_data)
            out.append(o)
        return state, jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])

    @functools.cached_property
    def _eval(self):
        import jax

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


# ---------------------------------------------------------------------- directory handling
def is_training_dir(path: str | Path) -> bool:
    """Whether ``path`` is a model directory (finished or not), judged by its config."""
    p = Path(path) / CONFIG
    if not p.is_file():
        return False
    try:
        import tomllib

        return "train" in tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _owned(d: Path) -> list[Path]:
    names = (CONFIG, WEIGHTS, META, CHECKPOINT, HISTORY, LOG, *PLOTS)
    return [d / n for n in names] + [d / (n + ".tmp") for n in (CONFIG, WEIGHTS, META, CHECKPOINT)]


def train_model(
    cfg: TrainConfig,
    model_dir: str | Path,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
    config_dir: Path | None = None,
) -> Path:
    """Train a new model into ``model_dir``. A finished model there is never overwritten
    without ``force``; an unfinished one is continued with :func:`resume_training`."""
    d = Path(model_dir)
    if (d / CONFIG).exists() or (d / META).exists() or (d / CHECKPOINT).exists():
        if not force:
            if (d / META).exists():
                raise TrainError(f"{d}: a trained model is there; pass --force to overwrite it")
            raise TrainError(
                f"{d}: an unfinished training run is there; continue it with "
                f"`lattice resume {d}`, or pass --force to start again"
            )
        for p in _owned(d):
            p.unlink(missing_ok=True)
    data = load_training_data(cfg, config_dir)  # bad data fails before anything is written
    d.mkdir(parents=True, exist_ok=True)
    write_file_atomic(d / CONFIG, cfg.to_toml())
    return _execute(cfg, d, data, reporter or QuietReporter(), resume=False)


def resume_training(model_dir: str | Path, *, reporter: Reporter | None = None) -> Path:
    """Continue an interrupted training from its checkpoint (bitwise identical weights)."""
    d = Path(model_dir)
    if not (d / CONFIG).exists():
        raise TrainError(f"{d}: not a model directory (no {CONFIG})")
    try:
        cfg = load_train_config(d / CONFIG)
    except ConfigError as e:
        raise TrainError(str(e)) from None
    rep = reporter or QuietReporter()
    if (d / META).exists():
        rep.log(f"{d}: already trained")
        return d
    ensemble = None
    if (d / CHECKPOINT).exists():
        try:
            ensemble = Path(read_checkpoint(d / CHECKPOINT)[1]["ensemble"])
        except (EnsembleError, KeyError) as e:
            raise TrainError(f"{d / CHECKPOINT}: damaged checkpoint ({e})") from None
    data = load_training_data(cfg, config_dir=d.parent, path=ensemble)
    return _execute(cfg, d, data, rep, resume=True)


def _log(d: Path, reporter: Reporter, msg: str, show: bool = True) -> None:
    with open(d / LOG, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    if show:
        reporter.log(msg)


def _execute(
    cfg: TrainConfig, d: Path, data: TrainingData, reporter: Reporter, resume: bool
) -> Path:
    import jax
    import jax.numpy as jnp

    t = cfg.train
    sde = resolve_sde(cfg, data)
    tr = _Trainer(cfg, data, sde)
    state, step, seconds, history = tr.init_state, 0, 0.0, []
    treedef = jax.tree_util.tree_structure(state)
    if resume and (d / CHECKPOINT).exists():
        try:
            arrays, attrs = read_checkpoint(d / CHECKPOINT)
        except EnsembleError as e:
            raise TrainError(str(e)) from None
        if attrs.get("config") != cfg.to_toml():
            raise TrainError(f"{d / CHECKPOINT}: written by a different config")
        if attrs.get("ensemble_uuid", "") != (data.uuid or ""):
            raise TrainError(
                f"train.ensemble: {data.ensemble} is not the ensemble this training started "
                "on (its uuid changed); start again with --force"
            )
        n = treedef.num_leaves
        leaves = [jnp.asarray(arrays[f"leaf_{i:05d}"]) for i in range(n)]
        state = jax.tree_util.tree_unflatten(treedef, leaves)
        step, seconds = int(attrs["step"]), float(attrs["seconds"])
        history = json.loads(attrs["history"])
        _log(d, reporter, f"resuming training at step {step}/{t.steps}")
    else:
        n_par = count_parameters(tr.net(tr.init_state[0]))
        _log(
            d,
            reporter,
            f"training on {len(data.train)} configurations ({len(data.validation)} held out) "
            f"of {data.theory.describe()}; {n_par} parameters; {sde.name.upper()} SDE, "
            f"sigma {sde.sigma_min:.4g}..{sde.sigma_max:.4g}; sigma_data {data.sigma_data:.4g}",
        )

    def checkpoint(state, step, seconds):
        leaves = jax.tree_util.tree_leaves(state)
        write_checkpoint(
            d / CHECKPOINT,
            {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)},
            {
                "step": step,
                "seconds": seconds,
                "history": json.dumps(history),
                "config": cfg.to_toml(),
                "ensemble": str(data.ensemble),
                "ensemble_uuid": data.uuid or "",
            },
        )

    if step == 0:
        checkpoint(state, 0, 0.0)  # records the resolved ensemble for `lattice resume`

    reporter.start("train", t.steps, step)
    t0 = time.perf_counter() - seconds
    while step < t.steps:
        n = min(t.log_every, t.steps - step)
        state, losses, gnorms = tr.run(state, n)
        step += n
        row = {
            "step": step,
            "train_loss": float(np.mean(np.asarray(losses))),
            "val_loss": tr.val_loss(state[2]),
            "learning_rate": float(tr.schedule(step)),
            "grad_norm": float(np.mean(np.asarray(gnorms))),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if not math.isfinite(row["train_loss"]):
            raise TrainError(
                f"training diverged at step {step} (loss {row['train_loss']}); lower "
                "train.learning_rate or raise train.grad_clip"
            )
        history.append(row)
        reporter.advance(step, note=f"loss {row['train_loss']:.4f}  val {row['val_loss']:.4f}")
        if step % t.checkpoint_every == 0 or step == t.steps:
            checkpoint(state, step, time.perf_counter() - t0)
    reporter.finish()
    seconds = time.perf_counter() - t0
    ema = tr.net(state[2])
    diag = diagnostics(ema, sde, data, tr)
    _write_history(d / HISTORY, history)
    meta = {
        "name": cfg.name,
        "parameters": count_parameters(ema),
        "data": {
            "ensemble": str(data.ensemble),
            "uuid": data.uuid,
            "chains": data.chains,
            "discard": data.discard,
            "train_configs": len(data.train),
            "validation_configs": len(data.validation),
        },
        "training": {
            "steps": t.steps,
            "batch_size": t.batch_size,
            "seconds": round(seconds, 2),
            "train_loss": history[-1]["train_loss"],
            "val_loss": history[-1]["val_loss"],
            "seed": t.seed,
        },
        "score_norms": diag.pop("score_norms"),
        "diagnostics": diag,
    }
    from ..plots import write_training_plots

    write_training_plots(d, history, diag)
    save_model(d, ema, sde, meta)
    (d / CHECKPOINT).unlink(missing_ok=True)
    cs = diag["cosine_similarity"]
    _log(
        d,
        reporter,
        f"trained {t.steps} steps in {seconds:.0f} s: val loss {history[-1]['val_loss']:.4f}, "
        f"cos(s, -dS/dphi) at sigma_min = {cs['mean']:.4f} (min {cs['min']:.4f})",
    )
    return d


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def diagnostics(net: ScoreNet, sde: SDE, data: TrainingData, tr: _Trainer) -> dict[str, Any]:
    """Validation loss on a σ grid (Γ-method error; with the exact ℓ* for a free field), the cosine
    similarity between ŝ(y, σ_min) and −∂S/∂φ(y) on held-out y = φ + σ_min z, and the score
    norms u(σ) = σ² E‖ŝ‖²/V on the same grid (``path.py`` eq. (3))."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from ..analysis import gamma_method
    from .gaussian import exact_dsm_loss
    from .path import norm_table

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
    return {
        "score_norms": norm_table(net.batch, sde, phi),
        "val_loss_sigma": grid,
        "cosine_similarity": {
            "sigma": s_min,
            "mean": float(c.mean()),
            "min": float(c.min()),
            "configs": m,
        },
    }


__all__ += ["ModelError"]
