"""Ensemble jobs: ``run`` and ``resume`` over a run directory (DESIGN.md §3–4).

A run directory holds ``config.toml`` (the resolved config), ``ensemble.h5``,
``checkpoint.h5`` and ``run.log``. The job runs in blocks of ``run.checkpoint_every``
measurements (thermalization in blocks of ``checkpoint_every × measure_every`` steps). While
the device computes block k+1, the host writes block k, commits it and checkpoints the chain
states after it, so writing never stalls the sampler.

Because every random number is a function of (seed, chain, step) and the chain states are
checkpointed bit for bit, a run resumed from any checkpoint produces exactly the same bits as
an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lattice.config.run import RunConfig, build_theory, load_config, parse_config
from lattice.io.checkpoint import CheckpointError
from lattice.io.ensemble import EnsembleError, EnsembleWriter
from lattice.io.reader import open_ensemble
from lattice.numerics.compile import require_x64
from lattice.numerics.observables import observable_shapes
from lattice.numerics.phi4 import Phi4
from lattice.runs.directory import RunDirectory, RunError, human_bytes
from lattice.runs.progress import QuietReporter, Reporter, process_seconds
from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, sample
from lattice.samplers.tuning import (
    dual_averaging,
    frozen_step,
    restart,
    tail_start,
    tune,
    windows,
)

#: the extra /diagnostics of a sampler with cluster updates (see lattice.samplers.chains._advance)
CLUSTER_DIAGNOSTICS = ("cluster_iterations", "cluster_size")

__all__ = [
    "JobError",
    "DivergedError",
    "ENSEMBLE",
    "run_directory",
    "run_job",
    "resume_job",
    "build_theory",
    "build_sampler",
    "resolved_config",
    "default_run_dir",
]


class JobError(RunError):
    """A job that cannot start; the CLI prints the message and exits with ``exit_code``."""


class DivergedError(JobError):
    """A run whose fields or observables stopped being finite: it stops, keeps what it
    committed before and its last good checkpoint, is marked ``diverged`` (never complete),
    and the CLI exits with status 3."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


class _Diverged(Exception):
    """Raised where a block's values are found non-finite (possibly on the writer thread)."""

    def __init__(self, chain: int, step: int, what: str):
        super().__init__(chain, step, what)
        self.chain, self.step, self.what = chain, step, what


def _first_nonfinite(values: np.ndarray) -> tuple[int, int] | None:
    """(chain, index) of the earliest non-finite entry of ``values`` [n, chains, ...], or
    None when every entry is finite."""
    v = np.asarray(values)
    if v.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(v.reshape(v.shape[0], v.shape[1], -1)).all(-1)  # [n, chains]
    if not bad.any():
        return None
    n, chain = np.argwhere(bad)[0]  # row-major: the earliest index, then the lowest chain
    return int(chain), int(n)


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


# ---------------------------------------------------------------------- building blocks
def build_sampler(cfg: RunConfig, theory):
    """The sampler of a config: its schema builds it (:mod:`lattice.config.sampler`), with
    what the kind needs from files loaded here (a diffusion sampler's model, checked against
    the theory, and its kernel table, measured now for a model older than the table).
    Equal configs give equal samplers (their identity), which share compiled code."""
    s = cfg.sampler
    if not s.needs_model():
        return s.build(theory)
    # imported only for a model: equinox and the score layer cost a run without one 0.3 s of
    # start-up (docs/PERFORMANCE.md)
    from lattice.io.model import norm_function_of, spectral_table_of

    model = _checked_model(cfg, theory)
    s = resolved_config(cfg, model).sampler
    norm = norm_function_of(model) if s.kernel == "analytic" else None
    table = spectral_table_of(model) if s.kernel == "spectral" else None
    return s.build(theory, model=model, norm=norm, table=table)


def _checked_model(cfg: RunConfig, theory):
    from lattice.io.model import load_model  # lazy: see build_sampler
    from lattice.score.model import check_compatible  # lazy (above)

    model = load_model(cfg.sampler.model)
    check_compatible(model, theory)  # before the kernel table is looked for
    return model


def resolved_config(cfg: RunConfig, model=None) -> RunConfig:
    """``cfg`` with the defaults that depend on a model filled in, so that the run directory
    records them: a path sampler (``method = "sde"``) without ``kernel`` gets ``"spectral"``
    when the model carries its per-mode table, else ``"analytic"``
    (:func:`lattice.score.spectral.default_kernel`)."""
    s = cfg.sampler
    if not s.needs_model() or getattr(s, "method", None) != "sde" or s.kernel is not None:
        return cfg
    from lattice.score.spectral import default_kernel  # lazy: see build_sampler

    if model is None:
        model = _checked_model(cfg, build_theory(cfg))
    kernel = default_kernel(model)
    return cfg.model_copy(update={"sampler": s.model_copy(update={"kernel": kernel})})


def chain_sharding(chains: int, devices: int | None):
    """The sharding of the chain axis over local devices, and the device count.

    ``devices = None`` uses every local device, or the largest count that divides
    ``chains``. The chain axis (axis 0 of keys, states and fields) is split with a
    ``NamedSharding`` over a one-axis mesh ``("chains",)``; every kernel is per chain, so
    the jitted loops run without communication and, since a chain's stream depends only on
    (seed, chain, step), the results are bitwise those of one device. Returns
    ``(None, 1)`` for one device. Raises :class:`JobError` (exit 2) for an impossible request.
    """

    local = jax.local_devices()
    if devices is None:
        n = math.gcd(chains, len(local))
    elif devices > len(local):
        raise JobError(
            f"run.devices: {devices} requested but only {len(local)} local device(s) "
            f"({local[0].platform}); allowed: 1 to {len(local)}"
        )
    elif chains % devices:
        raise JobError(f"run.devices: {devices} must divide run.chains = {chains}")
    else:
        n = devices
    if n == 1:
        return None, 1
    mesh = Mesh(np.array(local[:n]), ("chains",))
    return NamedSharding(mesh, PartitionSpec("chains")), n


def _config_attrs(cfg: RunConfig, sampler) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():
                out[f"{section}.{k}"] = v
        else:
            out[section] = values
    out["sampler.name"] = sampler.name
    out["sampler.exactness"] = sampler.exactness
    out["sampler.order"] = -1 if sampler.order is None else sampler.order
    out["sampler.forces_per_step"] = sampler.forces_per_step
    for k, v in sampler.metadata:
        out[f"sampler.{k}"] = v
    return out


def _block_size(checkpoint_every: int, save_every: int) -> int:
    """Measurements per block: ``checkpoint_every`` rounded up to a multiple of
    ``save_every``, so that every block starts with a saved configuration."""
    if save_every <= 1:
        return checkpoint_every
    return -(-checkpoint_every // save_every) * save_every


def _lower_thread_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice 19).

    XLA splits each step over its worker threads and waits for the slowest; a writer that
    preempts one of them stalls the whole step. At nice 19 the writer runs in the gaps XLA
    leaves instead. Without per-thread priorities (non-Linux) this does nothing."""

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class _Writer:
    """One background thread that runs the blocks' host work (HDF5 writes, fsyncs,
    checkpoints) in order while the main thread keeps the device busy. At most two blocks
    wait in its queue, which bounds the memory; an exception is re-raised in the caller."""

    def __init__(self):
        self._q: queue.Queue = queue.Queue(maxsize=2)
        self._results: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)

    def _work(self):
        _lower_thread_priority()
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    fn, args = item
                    self._results.append(fn(*args))
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    self._error = e

    def submit(self, fn, *args) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((fn, args))

    def drain(self) -> list:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._results

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


def _n_saved(samples: int, save_every: int) -> int:
    return 0 if save_every == 0 else (samples + save_every - 1) // save_every


# ---------------------------------------------------------------------- public entry points
def run_job(
    cfg: RunConfig, run_dir: str | Path, *, force: bool = False, reporter: Reporter | None = None
) -> Path:
    """Start a new run in ``run_dir``. Refuses (JobError, exit 2) to touch an existing run
    unless ``force``; with ``force`` the previous run's files are removed first. Another
    command's directory is always refused (:meth:`RunDirectory.claim`)."""
    require_x64(JobError)
    d = run_directory(run_dir)
    chain_sharding(cfg.run.chains, cfg.run.devices)  # refuse an impossible request first
    check_resources(cfg, d.root)
    job = _prepare(cfg)
    with d.locked():
        d.claim(job.cfg.to_toml(), force=force, describe=lambda: _describe_existing(d))
        return _execute_safely(job, d, reporter or QuietReporter(), resume=False)


def resume_job(run_dir: str | Path, *, reporter: Reporter | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint (bitwise identical result)."""
    require_x64(JobError)
    d = run_directory(run_dir)
    if not d.root.is_dir():
        d.require_config()  # refuses: nothing is there
    with d.locked():
        d.require_config(lambda: _recorded_config(d))
        return _resume(d, reporter)


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


def _resume(d: RunDirectory, reporter: Reporter | None) -> Path:
    cfg = load_config(d.config)
    job = _prepare(cfg)
    ensemble = d.path(ENSEMBLE)
    if ensemble.exists():
        try:
            ens = open_ensemble(ensemble, load_observables=False)
        except EnsembleError as e:
            if d.checkpoint.exists():  # a checkpoint follows a complete creation
                raise JobError(f"{e}; the run cannot be resumed from it") from None
            ens = None  # killed while it was being created: start again
        if ens is not None:
            recorded = parse_config(ens.config_toml)
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
    return _execute_safely(job, d, reporter or QuietReporter(), resume=True)


#: arrays of the lattice's size a sampler keeps per chain, at most (field, momentum, force,
#: proposal, noise, RK2 stages, …): the bound the memory check uses
_FIELDS_PER_CHAIN = 8


def resource_needs(cfg: RunConfig) -> tuple[int, int]:
    """(bytes of the ensemble file, bytes of memory) a run needs, estimated from above: the
    saved configurations and the measurements; the chains' fields on the device and the
    block of saved configurations on the host."""
    r, V = cfg.run, math.prod(cfg.lattice.shape)
    item = np.dtype(r.dtype).itemsize
    n_saved = _n_saved(r.samples, r.save_every)
    per_measurement = 8 * (8 + 2 * cfg.lattice.shape[0])  # scalars, G, G_sd, diagnostics
    disk = r.chains * (n_saved * V * item + r.samples * per_measurement)
    block = _block_size(r.checkpoint_every, r.save_every)
    saved_block = 0 if not r.save_every else -(-block // r.save_every) * V * item
    memory = r.chains * (_FIELDS_PER_CHAIN * V * item + 2 * saved_block)
    return disk, memory


def check_resources(cfg: RunConfig, root: Path) -> None:
    """Refuse (exit 2, before any file is written) a run whose ensemble would not fit on the
    disk that holds ``root``, or whose chains would not fit in this machine's memory."""
    disk, memory = resource_needs(cfg)
    where = Path(root).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if free is not None and disk > free:
        raise JobError(
            f"{root}: the ensemble needs about {human_bytes(disk)} and {where} has "
            f"{human_bytes(free)} free; lower run.samples, raise run.save_every (0: no "
            "configurations) or shrink lattice.shape"
        )
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = None
    if ram and jax.default_backend() == "cpu" and memory > ram:
        raise JobError(
            f"lattice.shape: {cfg.run.chains} chains of {list(cfg.lattice.shape)} need about "
            f"{human_bytes(memory)} of memory and this machine has {human_bytes(ram)}; lower "
            "run.chains or shrink lattice.shape"
        )


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


# ---------------------------------------------------------------------- the driver's steps
@dataclass(frozen=True)
class _Job:
    """What a run computes with, built before any file is touched."""

    cfg: RunConfig
    theory: Phi4
    sampler: Any
    dtype: Any
    keys: Any  # per-chain keys, sharded over the devices
    key_data: np.ndarray  # their raw bits, checkpointed and checked on resume
    sharding: Any
    devices: int
    #: the integrator step the tuner froze (the sampler is then built with it), else None
    tuned_step_size: float | None = None
    #: the reverse steps the path-length pilot chose (the sampler is then built with it)
    tuned_path_steps: int | None = None


@dataclass
class _Progress:
    """Where a run stands: the next step, the committed measurements and saved
    configurations, the seconds spent and the tuned step (the checkpoint's attributes)."""

    step: int = 0
    committed: int = 0
    saved_committed: int = 0
    seconds: float = 0.0
    tuned_step_size: float | None = None
    tuned_path_steps: int | None = None


def _tuned(job: _Job, step_size: float) -> _Job:
    """The job with the step the tuner froze: the config's sampler at that step, untuned."""
    cfg = job.cfg.model_copy(update={"sampler": job.cfg.sampler.tuned(step_size)})
    return replace(job, sampler=build_sampler(cfg, job.theory), tuned_step_size=step_size)


def _with_path_steps(job: _Job, steps: int) -> _Job:
    """The job with the reverse steps the pilot chose: the config's sampler at that K."""
    cfg = job.cfg.model_copy(update={"sampler": job.cfg.sampler.with_path_steps(steps)})
    return replace(job, sampler=build_sampler(cfg, job.theory), tuned_path_steps=steps)


def _prepare(cfg: RunConfig) -> _Job:
    """Theory, sampler (a diffusion sampler's model is loaded and checked here, so a bad
    model fails before any file is written), keys and sharding of a config."""
    r = cfg.run
    theory = build_theory(cfg)
    errors: tuple[type[Exception], ...] = (ValueError,)
    if cfg.sampler.needs_model():
        from lattice.score.model import ModelError  # lazy: see build_sampler

        errors = (ModelError, ValueError)
    try:
        cfg = resolved_config(cfg)
        sampler = build_sampler(cfg, theory)
    except errors as e:
        raise JobError(f"sampler.model: {e}") from None
    keys = chain_keys(r.seed, np.arange(r.first_chain, r.first_chain + r.chains), r.prng)
    key_data = np.asarray(jax.random.key_data(keys))
    sharding, n_dev = chain_sharding(r.chains, r.devices)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    return _Job(cfg, theory, sampler, jnp.dtype(r.dtype), keys, key_data, sharding, n_dev)


def _state_template(job: _Job):
    r = job.cfg.run
    return jax.eval_shape(
        lambda: init_states(job.sampler, jnp.zeros((r.chains, *job.theory.shape), job.dtype))
    )


def _checkpoint(job: _Job, d: RunDirectory, states, p: _Progress) -> None:
    """The chain states after ``p.step`` steps and the run's position, atomically."""
    tree = {"state": states, "keys": job.key_data}
    attrs = {
        "next_step": p.step,
        "committed": p.committed,
        "saved_committed": p.saved_committed,
        "seconds": p.seconds,
        "config_toml": job.cfg.to_toml(),
    }
    if job.tuned_step_size is not None:
        attrs["tuned_step_size"] = job.tuned_step_size
    if job.tuned_path_steps is not None:
        attrs["tuned_path_steps"] = job.tuned_path_steps
    d.save(jax.tree_util.tree_map(np.asarray, tree), attrs)


def _start(job: _Job, d: RunDirectory, reporter: Reporter):
    """A new run: create the ensemble, draw the initial fields, write checkpoint 0."""
    cfg, r, sampler = job.cfg, job.cfg.run, job.sampler
    EnsembleWriter.create(
        d.path(ENSEMBLE),
        config_toml=cfg.to_toml(),
        config_attrs=_config_attrs(cfg, sampler),
        chains=r.chains,
        samples=r.samples,
        shape=job.theory.shape,
        n_saved=_n_saved(r.samples, r.save_every),
        dtype=job.dtype,
        observable_shapes=observable_shapes(job.theory),
        block=r.checkpoint_every,
        write_block=_block_size(r.checkpoint_every, r.save_every),
        diagnostics=(CLUSTER_DIAGNOSTICS if sampler.cluster is not None else ())
        + sampler.diagnostics,
        weights=sampler.weighted,
    )
    states = init_states(sampler, initial_field(job.keys, job.theory, r.start, job.dtype))
    d.log(
        reporter,
        f"start {cfg.name}: {job.theory.describe()}, sampler {sampler.name}, "
        f"{r.chains} chains x {r.samples} measurements on {job.devices} device(s)",
        show=False,
    )
    p = _Progress()
    _checkpoint(job, d, states, p)
    return states, p


def _restore(job: _Job, d: RunDirectory, reporter: Reporter):
    """An interrupted run: the states and position of its checkpoint, which must hold this
    config's keys and the sampler's state structure."""
    template = {"state": _state_template(job), "keys": job.key_data}
    try:
        tree, attrs = d.restore(template)
    except CheckpointError as e:
        raise JobError(str(e)) from None
    if not np.array_equal(tree["keys"], job.key_data):
        raise JobError(f"{d.checkpoint}: random keys do not match the config's seed")
    states = jax.tree_util.tree_map(jnp.asarray, tree["state"])
    if job.sharding is not None:
        states = jax.device_put(states, job.sharding)
    p = _Progress(
        int(attrs["next_step"]),
        int(attrs["committed"]),
        int(attrs["saved_committed"]),
        float(attrs["seconds"]),
        float(attrs["tuned_step_size"]) if "tuned_step_size" in attrs else None,
        int(attrs["tuned_path_steps"]) if "tuned_path_steps" in attrs else None,
    )
    n = job.cfg.run.samples
    d.log(reporter, f"resume {job.cfg.name} at step {p.step} ({p.committed}/{n} measurements)")
    return states, p


class _Clock:
    """Where a phase's seconds go: the jitted loops' dispatch calls (tracing and compilation
    happen inside the call; the loop itself runs asynchronously after it returns, so a cached
    call takes well under a millisecond), and the wall time from the end of the first call
    (the first compilation) to the end of the phase, the loop's own time."""

    def __init__(self):
        self.first = 0.0  # the first call: tracing + compilation
        self.t_loop = None  # when the first call returned

    def call(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        if self.t_loop is None:
            self.t_loop = time.perf_counter()
            self.first = self.t_loop - t
        return out

    def summary(self, job: _Job, steps: int) -> str:
        """'N steps in X s (R steps/s, S site-updates/s), after compiling for Y s'."""
        loop = time.perf_counter() - (self.t_loop or time.perf_counter())
        sites = math.prod(job.theory.shape) * job.cfg.run.chains
        rate = steps / loop if loop > 0 else float("nan")
        return (
            f"{steps} steps in {loop:.2f} s ({rate:.0f} steps/s, {rate * sites:.3g} "
            f"site-updates/s) after the first call's compilation ({self.first:.2f} s)"
        )


def _tune(job: _Job, d: RunDirectory, writer, states, p: _Progress, reporter, elapsed):
    """The step-size tuner over the first ``cfg.tuning_steps`` steps of thermalization
    (:mod:`lattice.samplers.tuning`), in blocks for the progress bar; its state lives in
    memory only, so a run killed while tuning resumes from step 0 and tunes again, to the same
    bits. The frozen step is recorded in the ensemble's /config and in every later checkpoint.
    Returns the states and the job with the tuned sampler."""
    r, n_tune = job.cfg.run, job.cfg.tuning_steps
    target = job.cfg.sampler.target_acceptance
    if p.step != 0:
        raise JobError(f"{d.checkpoint}: a checkpoint inside the tuning steps; start again")
    da = dual_averaging(job.sampler.step_size, r.chains, job.dtype)
    if job.sharding is not None:
        da = jax.device_put(da, job.sharding)
    block, clock = r.checkpoint_every * r.measure_every, _Clock()
    starts, tail0 = windows(n_tune), tail_start(n_tune)
    while p.step < n_tune:
        w0 = max(w for w in starts if w <= p.step)
        if p.step == w0 and w0 > 0:
            da = restart(da)
        end = min((w for w in starts if w > p.step), default=n_tune)
        n = min(block, end - p.step)
        states, da, acc = clock.call(
            tune, job.sampler, job.keys, states, da, p.step, w0, tail0, n, target
        )
        if p.step == 0:
            d.log(reporter, f"compiled the tuning loop in {clock.first:.2f} s", show=False)
            reporter.start("tuning", n_tune, 0)
        bad = _first_nonfinite(np.asarray(states.phi)[None])
        if bad is not None:
            raise _Diverged(bad[0], p.step + n, "the field")
        p.step += n
        reporter.advance(p.step, float(np.mean(acc)))
    eps = frozen_step(da, n_tune)
    job = _tuned(job, eps)
    last = float(np.mean(np.asarray(acc, np.float64)))
    writer.record_config_attrs(
        {
            "sampler.tuned_step_size": job.sampler.step_size,
            "sampler.tuned_trajectory_length": job.cfg.sampler.steps * eps,
            "sampler.tuned_steps": n_tune,
            "sampler.tuned_acceptance": last,
        }
    )
    p.seconds = elapsed()
    _checkpoint(job, d, states, p)
    d.log(
        reporter,
        f"tuned the step over {n_tune} steps: {job.sampler.step_size:.6g} x "
        f"{job.cfg.sampler.steps} steps; mean acceptance {last:.3f} in the last {n} tuning "
        f"steps, target {target:g}",
    )
    return states, job


def _needs_pilot(job: _Job) -> bool:
    s = job.cfg.sampler
    return s.kind == "diffusion" and s.target_acceptance is not None


def _pilot(job: _Job, d: RunDirectory, writer, states, p: _Progress, reporter, elapsed):
    """The path-length pilot (:mod:`lattice.samplers.pilot`) before the first step: K for the
    target acceptance, from ``PILOT_PROPOSALS`` proposals per K drawn from the seed's
    pilot stream. Its estimates live in memory until it ends, so a run killed during the
    pilot starts it again, to the same K. K and the ladder go to /config and every later checkpoint.
    Returns the job with the sampler at K."""
    # lazy: the estimator's module loads scipy, which a classical run never needs
    from lattice.samplers.pilot import PILOT_PROPOSALS, PLATEAU, cost, pilot, pilot_keys

    s, r = job.cfg.sampler, job.cfg.run
    if p.step != 0:
        raise JobError(f"{d.checkpoint}: a checkpoint after step 0 without the pilot's K")
    cap, target = s.steps, s.target_acceptance
    reporter.start("pilot", cap, 0)

    def told(k: int, a: float) -> None:
        reporter.advance(k, a)
        d.log(reporter, f"pilot: K = {k}, acceptance {a:.3f}", show=False)

    result = pilot(
        lambda k: _with_path_steps(job, k).sampler,
        cap,
        target,
        pilot_keys(r.seed, PILOT_PROPOSALS, r.prng),
        job.theory.shape,
        job.dtype,
        told,
    )
    job = _with_path_steps(job, result.chosen)
    writer.record_config_attrs(
        {
            "sampler.tuned_path_steps": result.chosen,
            "sampler.pilot_path_steps": np.asarray(result.path_steps, np.int64),
            "sampler.pilot_acceptance": np.asarray(result.acceptance, np.float64),
            "sampler.pilot_proposals": PILOT_PROPOSALS,
        }
    )
    p.seconds = elapsed()
    _checkpoint(job, d, states, p)
    a = result.acceptance[result.path_steps.index(result.chosen)]
    msg = (
        f"chose K = {result.chosen} reverse steps by the pilot ({PILOT_PROPOSALS} proposals "
        f"per K, K = {', '.join(map(str, result.path_steps))}): acceptance {a:.3f}, "
        + (
            f"the fewest steps per independent proposal, K (2 - a)/a = {cost(result.chosen, a):.4g}"
            if target == "cost"
            else f"target {target:g}"
        )
    )
    if not result.reached:
        msg += (
            f"; the target was not reached up to the cap sampler.steps = {cap}, so K is the "
            f"smallest within {PLATEAU} of the best acceptance (the model limits it: train "
            "longer or a larger network to reach the target)"
        )
    d.log(reporter, msg)
    return job


def _thermalize(job: _Job, d: RunDirectory, states, p: _Progress, reporter, elapsed):
    """Thermalization in blocks of checkpoint_every × measure_every steps, checkpointed."""
    r = job.cfg.run
    if p.step >= r.thermalization:
        return states
    block = r.checkpoint_every * r.measure_every
    step0, clock = p.step, _Clock()
    while p.step < r.thermalization:
        n = min(block, r.thermalization - p.step)
        states, acc = clock.call(evolve, job.sampler, job.keys, states, p.step, n)
        if p.step == step0:
            d.log(reporter, f"compiled the thermalization loop in {clock.first:.2f} s", show=False)
            reporter.start("thermalization", r.thermalization, p.step)
        bad = _first_nonfinite(np.asarray(states.phi)[None])
        if bad is not None:  # checked once per block, on the host copy the checkpoint needs
            raise _Diverged(bad[0], p.step + n, "the field")
        p.step += n
        p.seconds = elapsed()
        _checkpoint(job, d, states, p)
        reporter.advance(p.step, float(np.mean(acc)))
    d.log(
        reporter,
        f"thermalized after {p.step} steps: {clock.summary(job, p.step - step0)}",
        show=False,
    )
    return states


def _measure(job: _Job, d: RunDirectory, writer, states, p: _Progress, reporter, elapsed):
    """The measurement blocks, pipelined: while the device computes block k+1, the writer
    thread writes block k, commits it and checkpoints the states after it."""
    r, sampler, theory, keys = job.cfg.run, job.sampler, job.theory, job.keys
    size = _block_size(r.checkpoint_every, r.save_every)
    blocks = [(c, min(size, r.samples - c)) for c in range(p.committed, r.samples, size)]

    def dispatch(states, first, n):
        s0 = r.thermalization + first * r.measure_every
        return sample(sampler, theory, keys, states, s0, n, r.measure_every, r.save_every)

    def store(first, n, states, obs, diag, saved, saved_start):
        """Runs on the writer thread: check, write, commit, then checkpoint one block. A block
        with a non-finite observable or field is not written (:class:`_Diverged`)."""
        for name, v in [*obs.items(), ("the field", np.asarray(states.phi)[None])]:
            bad = _first_nonfinite(v)
            if bad is not None:
                m = first + bad[1] if name != "the field" else first + n - 1
                raise _Diverged(bad[0], r.thermalization + (m + 1) * r.measure_every, name)
        obs = {name: np.swapaxes(v, 0, 1) for name, v in obs.items()}
        diag = {name: np.swapaxes(v, 0, 1) for name, v in diag.items()}
        writer.write_block(first, obs, diag)
        idx = np.arange(first, first + n)
        idx = idx[idx % r.save_every == 0] if r.save_every else idx[:0]
        if len(idx):
            writer.write_configs(saved, saved_start, idx)
        committed = first + n
        done = _Progress(
            r.thermalization + committed * r.measure_every,
            committed,
            saved_start + len(idx),
            elapsed(),
        )
        writer.commit(done.committed, done.saved_committed, done.seconds, done.step)
        _checkpoint(job, d, states, done)
        return done

    saved, step0, clock = p.saved_committed, p.step, _Clock()
    with _Writer() as bg:
        if blocks:
            pending = clock.call(dispatch, states, *blocks[0])
            d.log(reporter, f"compiled the sampling loop in {clock.first:.2f} s", show=False)
        reporter.start("sampling", r.thermalization + r.samples * r.measure_every, p.step)
        for k, (first, n) in enumerate(blocks):
            states, obs, acc, configs = pending
            if k + 1 < len(blocks):
                pending = clock.call(dispatch, states, *blocks[k + 1])  # the device runs ahead
            host = jax.device_get((states, obs, acc, configs))  # waits for block k only
            bg.submit(store, first, n, *host, saved)
            saved += 0 if not r.save_every else len(range(first, first + n, r.save_every))
            reporter.advance(
                r.thermalization + (first + n) * r.measure_every,
                float(np.mean(host[2]["acceptance"])),
            )
        results = bg.drain()
    if results:
        p.step, p.committed, p.saved_committed = (
            results[-1].step,
            results[-1].committed,
            results[-1].saved_committed,
        )
        d.log(reporter, f"sampled {clock.summary(job, p.step - step0)}", show=False)


def _execute_safely(job: _Job, d: RunDirectory, reporter: Reporter, resume: bool) -> Path:
    """:func:`_execute`, with every I/O failure turned into one line
    (:meth:`RunDirectory.guard_io`)."""
    with d.guard_io():
        return _execute(job, d, reporter, resume)


def _execute(job: _Job, d: RunDirectory, reporter: Reporter, resume: bool) -> Path:
    """Start or restore, thermalize, measure, mark the ensemble complete."""
    r = job.cfg.run
    ensemble = d.path(ENSEMBLE)
    if resume and d.checkpoint.exists() and ensemble.exists():
        states, p = _restore(job, d, reporter)
    else:
        states, p = _start(job, d, reporter)
    d.log(
        reporter,
        f"start-up: {process_seconds():.2f} s from process start (imports, config, checks, "
        "files) to the first step",
        show=False,
    )
    if p.tuned_step_size is not None:  # a checkpoint after tuning: sample with its step
        job = _tuned(job, p.tuned_step_size)
    if p.tuned_path_steps is not None:  # a checkpoint after the pilot: sample with its K
        job = _with_path_steps(job, p.tuned_path_steps)
    t_start, seconds0 = time.perf_counter(), p.seconds

    def elapsed() -> float:
        return seconds0 + time.perf_counter() - t_start

    writer = EnsembleWriter(ensemble).open()
    try:
        if job.cfg.tuning_steps and job.tuned_step_size is None:
            states, job = _tune(job, d, writer, states, p, reporter, elapsed)
        if _needs_pilot(job) and job.tuned_path_steps is None:
            job = _pilot(job, d, writer, states, p, reporter, elapsed)
        states = _thermalize(job, d, states, p, reporter, elapsed)
        _measure(job, d, writer, states, p, reporter, elapsed)
        writer.commit(p.committed, p.saved_committed, elapsed(), p.step, complete=True)
    except _Diverged as e:
        msg = _divergence_message(job, d, e)
        writer.mark_diverged(msg)
        d.log(reporter, msg, show=False)
        raise DivergedError(f"{d.root}: {msg}") from None
    finally:
        writer.close()
        reporter.finish()
    d.log(reporter, f"complete: {p.committed} measurements x {r.chains} chains, {elapsed():.1f} s")
    return ensemble


def _divergence_message(job: _Job, d: RunDirectory, e: _Diverged) -> str:
    s = job.cfg.sampler
    try:
        last = int(d.checkpoint_attrs()["next_step"])
    except (CheckpointError, KeyError):
        last = 0
    step = getattr(s, "step_size", None)
    if step is None and getattr(s, "leapfrog_step", None) is not None:
        hint = f"raise sampler.steps (leapfrog step {s.leapfrog_step:g})"
    elif step is not None:
        hint = f"lower sampler.step_size (now {step:g})"
    else:
        hint = "check the sampler's settings"
    return (
        f"diverged: {e.what} of chain {e.chain} is not finite by step {e.step}; "
        f"what was committed before is kept, the last good checkpoint is at step {last}; "
        f"{hint} and start again with --force"
    )


def remove_run(run_dir: str | Path) -> None:
    """Delete a run directory created by :func:`run_job` (used by ``--force`` and tests)."""
    shutil.rmtree(run_dir, ignore_errors=True)
