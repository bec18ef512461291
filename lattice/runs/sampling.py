"""Ensemble jobs: ``run`` and ``resume`` over a run directory (docs/conventions.md §3–4).

A run directory holds ``config.toml`` (the resolved config), ``ensemble.h5``,
``checkpoint.h5`` and ``run.log``. A job is a short list of named steps: assemble the sampler
(:mod:`lattice.runs.assemble`; a bad model fails before any file is written), check the machine
(:mod:`lattice.runs.resources`), claim the directory, start or restore, then the phases of
:mod:`lattice.runs.phases` (tune, pilot, thermalize, measure), and mark the ensemble complete.

Because every random number is a function of (seed, chain, step) and the chain states are
checkpointed bit for bit, a run resumed from any checkpoint produces exactly the same bits as
an uninterrupted run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lattice.config.run import RunConfig, load_config
from lattice.io.checkpoint import CheckpointError
from lattice.io.ensemble import EnsembleError, EnsembleWriter
from lattice.io.reader import open_ensemble
from lattice.numerics.compile import require_x64
from lattice.numerics.observables import observable_shapes
from lattice.runs.assemble import Job, config_attrs, prepare, tuned, with_path_steps
from lattice.runs.compilations import Compilations, compilations, count_compilations
from lattice.runs.directory import DivergedError, JobError, RunDirectory
from lattice.runs.phases import (
    Diverged,
    Progress,
    checkpoint,
    choose_path_steps,
    measure,
    thermalize,
    tune_step,
)
from lattice.runs.progress import QuietReporter, Reporter, process_seconds
from lattice.runs.resources import block_size, chain_sharding, check_resources, n_saved
from lattice.samplers.chains import init_states, initial_field

#: the extra /diagnostics of a sampler with cluster updates (see lattice.samplers.chains._advance)
CLUSTER_DIAGNOSTICS = ("cluster_iterations", "cluster_size")

__all__ = [
    "JobError",
    "DivergedError",
    "ENSEMBLE",
    "run_directory",
    "run_job",
    "resume_job",
    "default_run_dir",
]

#: a run directory's ensemble (its other files: lattice.runs.directory)
ENSEMBLE = "ensemble.h5"


def run_directory(root: str | Path) -> RunDirectory:
    """The run directory of ``lattice run``: ``config.toml`` (with a ``[run]`` table),
    ``ensemble.h5``, ``checkpoint.h5`` and ``run.log``; a model's files mark another
    command's directory."""
    return RunDirectory(
        Path(root),
        command="run",
        log_name="run.log",
        table="run",
        products=(ENSEMBLE,),
        foreign=("model.json", "model.eqx", "history.csv", "train.log", "manifest.json"),
        error=JobError,
    )


def default_run_dir(config_path: str | Path) -> Path:
    """``runs/x.toml`` → ``runs/x``."""
    p = Path(config_path)
    return p.with_suffix("") if p.suffix == ".toml" else p.with_name(p.name + ".run")


def run_job(
    cfg: RunConfig, run_dir: str | Path, *, force: bool = False, reporter: Reporter | None = None
) -> Path:
    """Start a new run in ``run_dir``. Refuses (JobError, exit 2) to touch an existing run
    unless ``force``; with ``force`` the previous run's files are removed first. Another
    command's directory is always refused (:meth:`RunDirectory.claim`)."""
    require_x64(JobError)
    count_compilations()
    since = compilations()
    d = run_directory(run_dir)
    chain_sharding(cfg.run.chains, cfg.run.devices)  # refuse an impossible request first
    check_resources(cfg, d.root)
    job = prepare(cfg)
    with d.locked():
        d.claim(job.cfg.to_toml(), force=force, describe=lambda: _describe_existing(d))
        return _execute_safely(job, d, reporter or QuietReporter(), False, since)


def resume_job(run_dir: str | Path, *, reporter: Reporter | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint (bitwise identical result)."""
    require_x64(JobError)
    count_compilations()
    since = compilations()
    d = run_directory(run_dir)
    if not d.root.is_dir():
        d.require_config()  # refuses: nothing is there
    with d.locked():
        d.require_config(lambda: _recorded_config(d))
        return _resume(d, reporter, since)


def _recorded_config(d: RunDirectory) -> tuple[str, str] | None:
    """The config text a run recorded (its ensemble's ``/config``, else its checkpoint), and
    where it was found; None if neither holds one."""
    try:
        return open_ensemble(d.path(ENSEMBLE), load_observables=False).config_toml, ENSEMBLE
    except EnsembleError:
        pass
    try:
        text = d.checkpoint_attrs().get("config_toml")
    except CheckpointError:
        return None
    return (str(text), d.CHECKPOINT) if text else None


def _resume(d: RunDirectory, reporter: Reporter | None, since: Compilations) -> Path:
    cfg = load_config(d.config)
    job = prepare(cfg)
    ensemble = d.path(ENSEMBLE)
    if ensemble.exists():
        try:
            ens = open_ensemble(ensemble, load_observables=False)
        except EnsembleError as e:
            if d.checkpoint.exists():  # a checkpoint follows a complete creation
                raise JobError(f"{e}; the run cannot be resumed from it") from None
            ens = None  # killed while it was being created: start again
        if ens is not None:
            recorded = ens.run_config
            changed = recorded.diff(cfg)
            if changed:
                raise JobError(
                    f"{d.config}: edited since the run started; differing keys: "
                    f"{', '.join(changed)} (restore them, or start a new run)"
                )
            if ens.diverged:
                raise JobError(f"{d.root}: cannot be resumed, the run {ens.diverged}")
            if ens.complete:
                (reporter or QuietReporter()).log(f"{d.root}: already complete")
                return ensemble
    return _execute_safely(job, d, reporter or QuietReporter(), True, since)


def _describe_existing(d: RunDirectory) -> str:
    try:
        ens = open_ensemble(d.path(ENSEMBLE), load_observables=False)
    except EnsembleError:
        return "a run directory is there; pass --force to overwrite it"
    if ens.complete:
        return "a finished run is there; pass --force to overwrite it"
    return (
        f"an unfinished run is there ({ens.committed}/{ens.samples} measurements); pass "
        f"--force to overwrite it, or continue it with `lattice resume {d.root}`"
    )


def _start(job: Job, d: RunDirectory, reporter: Reporter):
    """A new run: create the ensemble, draw the initial fields, write checkpoint 0."""
    cfg, r, sampler = job.cfg, job.cfg.run, job.sampler
    job = replace(job, ensemble_uuid=str(uuid.uuid4()))
    EnsembleWriter.create(
        d.path(ENSEMBLE),
        config_toml=cfg.to_toml(),
        config_attrs=config_attrs(cfg, sampler),
        chains=r.chains,
        samples=r.samples,
        shape=job.theory.shape,
        n_saved=n_saved(r.samples, r.save_every),
        dtype=job.dtype,
        observable_shapes=observable_shapes(job.theory),
        block=r.checkpoint_every,
        write_block=block_size(r.checkpoint_every, r.save_every),
        diagnostics=(CLUSTER_DIAGNOSTICS if sampler.cluster is not None else ())
        + sampler.diagnostics,
        weights=sampler.weighted,
        ensemble_uuid=job.ensemble_uuid,
    )
    states = init_states(sampler, initial_field(job.keys, job.theory, r.start, job.dtype))
    d.log(
        reporter,
        f"start {cfg.name}: {job.theory.describe()}, sampler {sampler.name}, "
        f"{r.chains} chains x {r.samples} measurements on {job.devices} device(s)",
        show=False,
    )
    p = Progress()
    checkpoint(job, d, states, p)
    return job, states, p


def _restore(job: Job, d: RunDirectory, reporter: Reporter):
    """An interrupted run: the states and position of its checkpoint, which must hold this
    config's keys and the sampler's state structure, belong to this ensemble (its uuid) and
    not be ahead of it (the ensemble commits a block before the checkpoint after it)."""
    template = {"state": job.state_template(), "keys": job.key_data}
    try:
        tree, attrs = d.restore(template)
        ens = open_ensemble(d.path(ENSEMBLE), load_observables=False)
    except (CheckpointError, EnsembleError) as e:
        raise JobError(str(e)) from None
    if not np.array_equal(tree["keys"], job.key_data):
        raise JobError(f"{d.checkpoint}: random keys do not match the config's seed")
    if attrs.get("ensemble_uuid", ens.uuid) != ens.uuid:
        raise JobError(
            f"{d.checkpoint}: belongs to another ensemble (uuid {attrs['ensemble_uuid']}, "
            f"{ENSEMBLE} has {ens.uuid}); the run cannot be resumed from it"
        )
    if int(attrs["committed"]) > ens.committed or int(attrs["saved_committed"]) > ens.saved:
        raise JobError(
            f"{d.checkpoint}: ahead of {ENSEMBLE} ({attrs['committed']} measurements "
            f"checkpointed, {ens.committed} committed): the checkpoint is not this run's; "
            "the run cannot be resumed from it"
        )
    job = replace(job, ensemble_uuid=ens.uuid)
    states = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    if job.sharding is not None:
        states = jax.device_put(states, job.sharding)
    p = Progress(
        int(attrs["next_step"]),
        int(attrs["committed"]),
        int(attrs["saved_committed"]),
        float(attrs["seconds"]),
        float(attrs["tuned_step_size"]) if "tuned_step_size" in attrs else None,
        int(attrs["tuned_path_steps"]) if "tuned_path_steps" in attrs else None,
    )
    n = job.cfg.run.samples
    d.log(reporter, f"resume {job.cfg.name} at step {p.step} ({p.committed}/{n} measurements)")
    return job, states, p


def _execute_safely(
    job: Job, d: RunDirectory, reporter: Reporter, resume: bool, since: Compilations
) -> Path:
    """:func:`_execute`, with every I/O failure turned into one line
    (:meth:`RunDirectory.guard_io`)."""
    with d.guard_io():
        return _execute(job, d, reporter, resume, since)


def _execute(
    job: Job, d: RunDirectory, reporter: Reporter, resume: bool, since: Compilations
) -> Path:
    """Start or restore, thermalize, measure, mark the ensemble complete. ``since``: the
    process's compilation counts when the command started (run.log's start-up line)."""
    r = job.cfg.run
    ensemble = d.path(ENSEMBLE)
    if resume and d.checkpoint.exists() and ensemble.exists():
        job, states, p = _restore(job, d, reporter)
    else:
        job, states, p = _start(job, d, reporter)
    d.log(
        reporter,
        f"start-up: {process_seconds():.2f} s from process start (imports, config, checks, "
        f"files) to the first step; {(compilations() - since).describe()}",
        show=False,
    )
    if p.tuned_step_size is not None:  # a checkpoint after tuning: sample with its step
        job = tuned(job, p.tuned_step_size)
    if p.tuned_path_steps is not None:  # a checkpoint after the pilot: sample with its K
        job = with_path_steps(job, p.tuned_path_steps)
    t_start, seconds0 = time.perf_counter(), p.seconds

    def elapsed() -> float:
        return seconds0 + time.perf_counter() - t_start

    writer = EnsembleWriter(ensemble).open()
    try:
        if job.cfg.tuning_steps and job.tuned_step_size is None:
            states, job = tune_step(job, d, writer, states, p, reporter, elapsed)
        if job.cfg.sampler.needs_pilot() and job.tuned_path_steps is None:
            job = choose_path_steps(job, d, writer, states, p, reporter, elapsed)
        states = thermalize(job, d, states, p, reporter, elapsed)
        measure(job, d, writer, states, p, reporter, elapsed)
        writer.commit(p.committed, p.saved_committed, elapsed(), p.step, complete=True)
    except Diverged as e:
        msg = _divergence_message(job, d, e)
        writer.mark_diverged(msg)
        d.log(reporter, msg, show=False)
        raise DivergedError(f"{d.root}: {msg}") from None
    finally:
        writer.close()
        reporter.finish()
    d.log(reporter, f"complete: {p.committed} measurements x {r.chains} chains, {elapsed():.1f} s")
    return ensemble


def _divergence_message(job: Job, d: RunDirectory, e: Diverged) -> str:
    s = job.cfg.sampler
    try:
        last = int(d.checkpoint_attrs()["next_step"])
    except (CheckpointError, KeyError):
        last = 0
    hint = s.divergence_hint()
    return (
        f"diverged: {e.what} of chain {e.chain} is not finite by step {e.step}; "
        f"what was committed before is kept, the last good checkpoint is at step {last}; "
        f"{hint} and start again with --force"
    )
