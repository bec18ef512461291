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

import jax
import jax.numpy as jnp
import numpy as np

from lattice.config.run import ConfigError, build_theory
from lattice.config.train import TrainConfig, load_train_config
from lattice.io.ensemble import EnsembleError
from lattice.io.model import META, WEIGHTS, save_model, save_multilevel
from lattice.io.reader import open_ensemble
from lattice.numerics.wavelet import coarse_shape
from lattice.runs.directory import RunDirectory, RunError
from lattice.runs.kinds import is_training_dir
from lattice.runs.path_setup import path_setup, write_path_model
from lattice.runs.progress import QuietReporter, Reporter
from lattice.score.model import ModelError
from lattice.score.multilevel import MIN_COARSE, auto_levels
from lattice.score.multilevel_train import MultilevelTrainer, build_model, multilevel_diagnostics
from lattice.score.network import count_parameters
from lattice.score.path_train import PathTrainer
from lattice.score.sde import SDE, make_sde
from lattice.score.train import (
    Trainer,
    TrainingData,
    diagnostics,
    max_pairwise_distance,
    training_record,
)

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
PLOTS = ("loss.png", "val_loss_sigma.png", "path_weights.png")


#: called with (model dir, history rows, diagnostics) after training, before the model is
#: written (the app draws its plots there)
OnTrained = Callable[[Path, list, dict], None]


class TrainError(RunError):
    """Training that cannot start (bad data, existing model, edited config): exit status 2."""


def model_directory(root: str | Path) -> RunDirectory:
    """The run directory of ``lattice train``: ``config.toml`` (with a ``[train]`` table),
    ``checkpoint.h5`` and ``train.log`` while it trains; the model's files and plots after.
    An ensemble marks another command's directory."""
    return RunDirectory(
        Path(root),
        command="model",
        log_name=LOG,
        table="train",
        products=(WEIGHTS, META, HISTORY, *PLOTS),
        foreign=("ensemble.h5", "run.log", "manifest.json"),
        error=TrainError,
    )


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
    path = path or resolve_ensemble(cfg.train.ensemble, config_dir)
    try:
        ens = open_ensemble(path, load_observables=False)
    except EnsembleError as e:
        raise TrainError(f"train.ensemble: {e}") from None
    theory = build_theory(ens.run_config)
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


def resolve_levels(cfg: TrainConfig, data: TrainingData) -> int:
    """``[train] levels`` of a multilevel training, "auto" (or unset) resolved by
    :func:`lattice.score.multilevel.auto_levels`; :class:`TrainError` naming the key when the
    lattice cannot be split that often."""
    shape = data.theory.shape
    n = cfg.train.levels
    if n in (None, "auto"):
        n = auto_levels(shape)
        if n == 0:
            raise TrainError(
                f"train.method: multilevel needs even extents of at least {2 * MIN_COARSE} sites"
                f" (the lattice is {list(shape)})"
            )
        return n
    try:
        coarse_shape(shape, n)
    except ValueError as e:
        raise TrainError(f"train.levels: {e}") from None
    return n


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
    d = model_directory(model_dir)

    def describe() -> str:
        if d.path(META).exists():
            return "a trained model is there; pass --force to overwrite it"
        return (
            f"an unfinished training run is there; continue it with `lattice resume {d.root}`, "
            "or pass --force to start again"
        )

    if d.other_command() is None and not force and d.in_use():
        raise TrainError(f"{d.root}: {describe()}")  # before the data is read
    # bad data (or a bad train.init) fails before anything is written
    data = path_setup(cfg, config_dir) if cfg.train.path else load_training_data(cfg, config_dir)
    with d.locked():
        d.claim(cfg.to_toml(), force=force, describe=describe)
        with d.guard_io():
            return _execute(cfg, d, data, reporter or QuietReporter(), False, on_trained)


def resume_training(
    model_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    on_trained: OnTrained | None = None,
) -> Path:
    """Continue an interrupted training from its checkpoint (bitwise identical weights)."""
    d = model_directory(model_dir)
    if not d.config.exists() and d.checkpoint.exists():  # deleted: the checkpoint holds it
        with d.locked():
            d.require_config(lambda: _recorded_config(d))
    d.require_config()
    try:
        cfg = load_train_config(d.config)
    except ConfigError as e:
        raise TrainError(str(e)) from None
    rep = reporter or QuietReporter()
    if d.path(META).exists():
        rep.log(f"{d.root}: already trained")
        return d.root
    ensemble = None
    if d.checkpoint.exists():
        try:
            ensemble = Path(d.checkpoint_attrs()["ensemble"])
        except (EnsembleError, KeyError) as e:
            raise TrainError(f"{d.checkpoint}: damaged checkpoint ({e})") from None
    if cfg.train.path:  # the init model the training started from, as recorded
        data = path_setup(cfg, d.root.parent, init=ensemble if cfg.train.init else None)
    else:
        data = load_training_data(cfg, config_dir=d.root.parent, path=ensemble)
    with d.locked(), d.guard_io():
        return _execute(cfg, d, data, rep, True, on_trained)


def _recorded_config(d: RunDirectory) -> tuple[str, str] | None:
    """The config text an unfinished training recorded in its checkpoint, if any."""
    try:
        text = d.checkpoint_attrs().get("config")
    except EnsembleError:
        return None
    return (str(text), d.CHECKPOINT) if text else None


def _restore(cfg: TrainConfig, d: RunDirectory, data: TrainingData, template):
    """The state, step, seconds and loss history of an interrupted training, whose checkpoint
    must come from this config, this ensemble and this network's structure."""
    try:
        state, attrs = d.restore(template)
    except EnsembleError as e:
        raise TrainError(str(e)) from None
    if attrs.get("config") != cfg.to_toml():
        raise TrainError(f"{d.checkpoint}: written by a different config")
    if attrs.get("ensemble_uuid", "") != (data.uuid or ""):
        what = (
            ("train.init", "model", "sha256")
            if cfg.train.path
            else ("train.ensemble", "ensemble", "uuid")
        )
        raise TrainError(
            f"{what[0]}: {data.ensemble} is not the {what[1]} this training started "
            f"on (its {what[2]} changed); start again with --force"
        )
    state = jax.tree_util.tree_map(jnp.asarray, state)
    return state, int(attrs["step"]), float(attrs["seconds"]), json.loads(attrs["history"])


def _checkpoint(cfg, d: RunDirectory, data: TrainingData, state, step, seconds, history):
    """The training state after ``step`` steps, with what a resume checks it against."""
    d.save(
        jax.tree_util.tree_map(np.asarray, state),
        {
            "step": step,
            "seconds": seconds,
            "history": json.dumps(history),
            "config": cfg.to_toml(),
            "ensemble": str(data.ensemble),
            "ensemble_uuid": data.uuid or "",
        },
    )


def _execute(
    cfg: TrainConfig,
    d: RunDirectory,
    data: TrainingData,
    reporter: Reporter,
    resume: bool,
    on_trained: OnTrained | None,
) -> Path:
    """Start or restore, train in blocks of ``log_every`` steps (checkpointed every
    ``checkpoint_every``), then write the model (:func:`_write_model`)."""
    t = cfg.train
    if t.path:
        sde = data.sde
        tr = PathTrainer(cfg, data.theory, sde, data.net, data.table)
        what = data.describe(sde, t.steps_per_path)
    elif t.multilevel:
        sde = None
        tr = MultilevelTrainer(cfg, data, resolve_levels(cfg, data))
        what = (
            f"multilevel: {tr.levels} Haar levels down to "
            f"{list(coarse_shape(data.theory.shape, tr.levels))}; VE SDEs, sigma_max "
            + ", ".join(f"{x.sigma_max:.4g}" for x in tr.sdes)
        )
    else:
        sde = resolve_sde(cfg, data)
        tr = Trainer(cfg, data, sde)
        what = (
            f"{sde.name.upper()} SDE, sigma {sde.sigma_min:.4g}..{sde.sigma_max:.4g}; "
            f"sigma_data {data.sigma_data:.4g}"
        )
    state, step, seconds, history = tr.init_state, 0, 0.0, []
    if resume and d.checkpoint.exists():
        state, step, seconds, history = _restore(cfg, d, data, tr.init_state)
        d.log(reporter, f"resuming training at step {step}/{t.steps}")
    else:
        n_par = count_parameters(tr.net(tr.init_state[0]))
        on = (
            f"{t.batch_size} paths per step"
            if t.path
            else f"{len(data.train)} configurations ({len(data.validation)} held out)"
        )
        d.log(reporter, f"training on {on} of {data.theory.describe()}; {n_par} parameters; {what}")
    if step == 0:  # records the resolved ensemble for `lattice resume`
        _checkpoint(cfg, d, data, state, 0, 0.0, history)

    reporter.start("train", t.steps, step)
    t0 = time.perf_counter() - seconds
    while step < t.steps:
        n = min(t.log_every, t.steps - step)
        state, losses, gnorms = tr.run(state, n)
        step += n
        rows = (
            tr.history_row(losses, state[2], step) if t.path else tr.history_row(losses, state[2])
        )
        row = {
            "step": step,
            **rows,
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
        note = (
            tr.note(row) if t.path else f"loss {row['train_loss']:.4f}  val {row['val_loss']:.4f}"
        )
        reporter.advance(step, note=note)
        if step % t.checkpoint_every == 0 or step == t.steps:
            _checkpoint(cfg, d, data, state, step, time.perf_counter() - t0, history)
    reporter.finish()
    return _write_model(
        cfg, d, data, tr, sde, state, history, time.perf_counter() - t0, reporter, on_trained
    )


def _write_model(
    cfg, d: RunDirectory, data, tr, sde, state, history, seconds, reporter, on_trained
) -> Path:
    """The EMA network's model directory: diagnostics, history.csv, the app's plots (via
    ``on_trained``), model.eqx + model.json; the checkpoint is removed last."""
    t = cfg.train
    ema = tr.net(state[2])
    if t.path:
        _write_history(d.path(HISTORY), history)
        return write_path_model(cfg, d, data, tr, state, history, seconds, reporter, on_trained)
    if t.multilevel:
        diag, tables = multilevel_diagnostics(tr, state[2])
    else:
        diag = diagnostics(ema, sde, data, tr)
    _write_history(d.path(HISTORY), history)
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
        "training": training_record(t, seconds, history),
    }
    if not t.multilevel:
        meta["score_norms"] = diag.pop("score_norms")
        meta["spectral"] = diag.pop("spectral")
    meta["diagnostics"] = diag
    if on_trained is not None:  # e.g. the app's plots, written before the model is
        on_trained(d.root, history, diag)
    if t.multilevel:
        save_multilevel(d.root, build_model(tr, state[2], tables), tr.spec,
                        {**meta, "spectral_levels": tables})  # fmt: skip
    else:
        save_model(d.root, ema, sde, meta)
    d.checkpoint.unlink(missing_ok=True)
    cs = diag["cosine_similarity"]
    d.log(
        reporter,
        f"trained {t.steps} steps in {seconds:.0f} s: val loss {history[-1]['val_loss']:.4f}, "
        f"cos(s, -dS/dphi) at sigma_min = {cs['mean']:.4f} (min {cs['min']:.4f})",
    )
    return d.root


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


__all__ += ["ModelError"]
