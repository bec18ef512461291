"""``lattice train``'s run directory: a model directory trained, checkpointed and resumed
(the algorithm is :mod:`lattice.score.train`).

Every random number is a function of (seed, step), and the optimizer state is checkpointed
bit for bit, so a resumed training is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lattice.config.run import ConfigError, parse_config
from lattice.config.train import TrainConfig, load_train_config
from lattice.io.atomic import write_file_atomic
from lattice.io.checkpoint import read_checkpoint, write_checkpoint
from lattice.io.ensemble import EnsembleError
from lattice.io.model import META, WEIGHTS, save_model
from lattice.io.reader import open_ensemble
from lattice.runs.progress import QuietReporter, Reporter
from lattice.score.model import ModelError
from lattice.score.network import count_parameters
from lattice.score.sde import SDE, make_sde
from lattice.score.train import Trainer, TrainingData, diagnostics, max_pairwise_distance

__all__ = [
    "TrainError",
    "load_training_data",
    "resolve_sde",
    "train_model",
    "resume_training",
    "is_training_dir",
]

CONFIG = "config.toml"
CHECKPOINT = "checkpoint.h5"
HISTORY = "history.csv"
LOG = "train.log"
PLOTS = ("loss.png", "val_loss_sigma.png")


#: called with (model dir, history rows, diagnostics) after training, before the model is
#: written (the app draws its plots there)
OnTrained = Callable[[Path, list, dict], None]


class TrainError(Exception):
    """Training that cannot start (bad data, existing model, edited config): exit status 2."""

    exit_code = 2


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
    from lattice.runs.sampling import build_theory

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
    on_trained: OnTrained | None = None,
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
    return _execute(cfg, d, data, reporter or QuietReporter(), False, on_trained)


def resume_training(
    model_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    on_trained: OnTrained | None = None,
) -> Path:
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
    return _execute(cfg, d, data, rep, True, on_trained)


def _log(d: Path, reporter: Reporter, msg: str, show: bool = True) -> None:
    with open(d / LOG, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    if show:
        reporter.log(msg)


def _execute(
    cfg: TrainConfig,
    d: Path,
    data: TrainingData,
    reporter: Reporter,
    resume: bool,
    on_trained: OnTrained | None,
) -> Path:
    import jax
    import jax.numpy as jnp

    t = cfg.train
    sde = resolve_sde(cfg, data)
    tr = Trainer(cfg, data, sde)
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
    if on_trained is not None:  # e.g. the app's plots, written before the model is
        on_trained(d, history, diag)
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


__all__ += ["ModelError"]
