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

import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lattice.config.run import ConfigError, RunConfig, load_config, parse_config
from lattice.io.atomic import write_file_atomic
from lattice.io.checkpoint import read_checkpoint, write_checkpoint
from lattice.io.ensemble import EnsembleError, EnsembleWriter
from lattice.io.reader import open_ensemble
from lattice.runs.progress import QuietReporter, Reporter

#: the extra /diagnostics of a sampler with cluster updates (see lattice.samplers.chains._advance)
CLUSTER_DIAGNOSTICS = ("cluster_iterations", "cluster_size")

__all__ = [
    "JobError",
    "RunPaths",
    "run_job",
    "resume_job",
    "build_theory",
    "build_sampler",
    "default_run_dir",
]


class JobError(Exception):
    """A job that cannot start; the CLI prints the message and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble.h5"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.h5"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    def owned(self) -> list[Path]:
        return [
            self.config,
            self.ensemble,
            self.checkpoint,
            self.log,
            self.checkpoint.with_name("checkpoint.h5.tmp"),
        ]


def default_run_dir(config_path: str | Path) -> Path:
    """``runs/x.toml`` → ``runs/x``."""
    p = Path(config_path)
    return p.with_suffix("") if p.suffix == ".toml" else p.with_name(p.name + ".run")


# ---------------------------------------------------------------------- building blocks
def build_theory(cfg: RunConfig):
    from lattice.numerics.phi4 import Phi4

    a = cfg.action
    if a.form == "kappa":
        return Phi4.kappa_form(cfg.lattice.shape, a.kappa, a.lam)
    return Phi4.mass_form(cfg.lattice.shape, a.m2, a.lam)


def build_sampler(cfg: RunConfig, theory):
    """The sampler of a config. Memoized on (sampler section, theory): the jitted loops take
    the sampler as a static argument, so identical configs reuse the compiled code."""
    return _cached_sampler(cfg.sampler, theory)


@functools.lru_cache(maxsize=32)
def _cached_sampler(s, theory):
    from lattice.samplers import hmc, langevin, mala, with_clusters

    if s.kind == "langevin":
        base = langevin(
            theory,
            s.step_size,
            s.scheme,
            s.fourier_acceleration,
            s.fourier_mass2,
            noise_precision=s.noise_precision or "single",
        )
    elif s.kind == "mala":
        base = mala(theory, s.step_size)
    elif s.kind == "hmc":
        base = hmc(theory, s.trajectory_length, s.steps, s.scheme)
    elif s.kind == "diffusion":
        from lattice.io.model import load_model, norm_function_of
        from lattice.score.model import check_compatible
        from lattice.samplers.diffusion import diffusion

        # the resolved config holds exactly the keys of its method (config._DIFFUSION_KEYS)
        keys = ("rtol", "atol", "max_steps", "divergence", "snr", "corrector_steps")
        keys += ("steps_per_level", "step_scale", "kernel")
        opts = {k: getattr(s, k) for k in keys if getattr(s, k) is not None}
        model = load_model(s.model)
        check_compatible(model, theory)  # before the kernel table is looked for
        if s.kernel == "analytic":  # the kernel's table, measured now for an older model
            opts["norm"] = norm_function_of(model)
        base = diffusion(
            theory, model, method=s.method, metropolis_step=s.metropolis, steps=s.steps, **opts
        )
    else:
        raise ConfigError(f"sampler.kind: {s.kind!r} is not available")
    if s.cluster == "sw":
        return with_clusters(base, theory, s.cluster_every)
    return base


def chain_sharding(chains: int, devices: int | None):
    """The sharding of the chain axis over local devices, and the device count.

    ``devices = None`` uses every local device, or the largest count that divides
    ``chains``. The chain axis (axis 0 of keys, states and fields) is split with a
    ``NamedSharding`` over a one-axis mesh ``("chains",)``; every kernel is per chain, so
    the jitted loops run without communication and, since a chain's stream depends only on
    (seed, chain, step), the results are bitwise those of one device. Returns
    ``(None, 1)`` for one device. Raises :class:`JobError` (exit 2) for an impossible request.
    """
    import math

    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class _Writer:
    """One background thread that runs the blocks' host work (HDF5 writes, fsyncs,
    checkpoints) in order while the main thread keeps the device busy. At most two blocks
    wait in its queue, which bounds the memory; an exception is re-raised in the caller."""

    def __init__(self):
        import queue
        import threading

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


class _Log:
    def __init__(self, path: Path, reporter: Reporter):
        self.path, self.reporter = path, reporter

    def __call__(self, msg: str, show: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as f:
            f.write(f"{stamp} {msg}\n")
        if show:
            self.reporter.log(msg)


# ---------------------------------------------------------------------- public entry points
def run_job(
    cfg: RunConfig, run_dir: str | Path, *, force: bool = False, reporter: Reporter | None = None
) -> Path:
    """Start a new run in ``run_dir``. Refuses (JobError, exit 2) to touch an existing run
    unless ``force``; with ``force`` the previous run's files are removed first."""
    paths = RunPaths(Path(run_dir))
    chain_sharding(cfg.run.chains, cfg.run.devices)  # refuse an impossible request first
    _check_model(cfg)
    if paths.config.exists() or paths.ensemble.exists() or paths.checkpoint.exists():
        if not force:
            state = _describe_existing(paths)
            raise JobError(
                f"{paths.root}: {state}; pass --force to overwrite it"
                + (
                    ""
                    if "finished" in state
                    else f", or continue it with `lattice resume {paths.root}`"
                )
            )
        for p in paths.owned():
            if p.exists():
                p.unlink()
    paths.root.mkdir(parents=True, exist_ok=True)
    write_file_atomic(paths.config, cfg.to_toml())
    return _execute(cfg, paths, reporter or QuietReporter(), resume=False)


def resume_job(run_dir: str | Path, *, reporter: Reporter | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint (bitwise identical result)."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise JobError(f"{paths.root}: not a run directory (no config.toml)")
    cfg = load_config(paths.config)
    _check_model(cfg)
    if paths.ensemble.exists():
        try:
            ens = open_ensemble(paths.ensemble, load_observables=False)
        except EnsembleError:
            ens = None  # created but never committed: start again from the checkpoint
        if ens is not None:
            recorded = parse_config(ens.config_toml)
            changed = recorded.diff(cfg)
            if changed:
                raise JobError(
                    f"{paths.config}: edited since the run started; differing keys: "
                    f"{', '.join(changed)} (restore them, or start a new run)"
                )
            if ens.complete:
                (reporter or QuietReporter()).log(f"{paths.root}: already complete")
                return paths.ensemble
    return _execute(cfg, paths, reporter or QuietReporter(), resume=True)


def _check_model(cfg: RunConfig) -> None:
    """A diffusion sampler's model must load and fit the run's theory before any work."""
    if cfg.sampler.kind != "diffusion":
        return
    from lattice.score.model import ModelError

    try:
        build_sampler(cfg, build_theory(cfg))
    except (ModelError, ValueError) as e:
        raise JobError(f"sampler.model: {e}") from None


def _describe_existing(paths: RunPaths) -> str:
    try:
        ens = open_ensemble(paths.ensemble, load_observables=False)
        if ens.complete:
            return "a finished run is there"
        return f"an unfinished run is there ({ens.committed}/{ens.samples} measurements)"
    except EnsembleError:
        return "a run directory is there"


# ---------------------------------------------------------------------- the driver
def _execute(cfg: RunConfig, paths: RunPaths, reporter: Reporter, resume: bool) -> Path:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from lattice.numerics.observables import observable_shapes
    from lattice.samplers.chains import chain_keys, evolve, init_states, initial_field, sample

    r = cfg.run
    dtype = jnp.dtype(r.dtype)
    theory = build_theory(cfg)
    sampler = build_sampler(cfg, theory)
    keys = chain_keys(r.seed, np.arange(r.first_chain, r.first_chain + r.chains), r.prng)
    key_data = np.asarray(jax.random.key_data(keys))
    sharding, n_dev = chain_sharding(r.chains, r.devices)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    log = _Log(paths.log, reporter)
    n_saved_total = _n_saved(r.samples, r.save_every)

    template = jax.eval_shape(
        lambda: init_states(sampler, jnp.zeros((r.chains, *theory.shape), dtype))
    )
    ckpt = None
    if resume and paths.checkpoint.exists() and paths.ensemble.exists():
        arrays, attrs = read_checkpoint(paths.checkpoint)
        if not np.array_equal(arrays["keys"], key_data):
            raise JobError(f"{paths.checkpoint}: random keys do not match the config's seed")
        ckpt = (arrays, attrs)

    if ckpt is None:
        EnsembleWriter.create(
            paths.ensemble,
            config_toml=cfg.to_toml(),
            config_attrs=_config_attrs(cfg, sampler),
            chains=r.chains,
            samples=r.samples,
            shape=theory.shape,
            n_saved=n_saved_total,
            dtype=dtype,
            observable_shapes=observable_shapes(theory),
            block=r.checkpoint_every,
            diagnostics=(CLUSTER_DIAGNOSTICS if sampler.cluster is not None else ())
            + sampler.diagnostics,
            weights=sampler.weighted,
        )
        states = init_states(sampler, initial_field(keys, theory, r.start, dtype))
        step, committed, saved_committed, seconds = 0, 0, 0, 0.0
        log(
            f"start {cfg.name}: {theory.describe()}, sampler {sampler.name}, "
            f"{r.chains} chains x {r.samples} measurements on {n_dev} device(s)",
            show=False,
        )
    else:
        arrays, attrs = ckpt
        missing = [f for f in template._fields if f"state/{f}" not in arrays]
        if missing:
            raise JobError(
                f"{paths.checkpoint}: written by another version of the sampler (no state "
                f"field {', '.join(missing)}); start the run again with --force"
            )
        states = type(template)(*(jnp.asarray(arrays[f"state/{f}"]) for f in template._fields))
        if sharding is not None:
            states = jax.device_put(states, sharding)
        step, committed = int(attrs["next_step"]), int(attrs["committed"])
        saved_committed, seconds = int(attrs["saved_committed"]), float(attrs["seconds"])
        log(f"resume {cfg.name} at step {step} ({committed}/{r.samples} measurements)")

    def checkpoint(states, step, committed, saved_committed, seconds):
        arrays = {f"state/{f}": np.asarray(getattr(states, f)) for f in states._fields}
        arrays["keys"] = key_data
        write_checkpoint(
            paths.checkpoint,
            arrays,
            {
                "next_step": step,
                "committed": committed,
                "saved_committed": saved_committed,
                "seconds": seconds,
                "config_toml": cfg.to_toml(),
            },
        )

    if ckpt is None:
        checkpoint(states, step, committed, saved_committed, seconds)

    total_steps = r.thermalization + r.samples * r.measure_every
    t_start = time.perf_counter()
    seconds0 = seconds

    def elapsed() -> float:
        return seconds0 + time.perf_counter() - t_start

    writer = EnsembleWriter(paths.ensemble).open()
    try:
        # ---------------- thermalization: blocks of checkpoint_every * measure_every steps
        if step < r.thermalization:
            reporter.start("thermalization", r.thermalization, step)
            block = r.checkpoint_every * r.measure_every
            while step < r.thermalization:
                n = min(block, r.thermalization - step)
                states, acc = evolve(sampler, keys, states, step, n)
                step += n
                checkpoint(states, step, 0, 0, elapsed())
                reporter.advance(step, float(np.mean(acc)))
            log(f"thermalized after {step} steps", show=False)

        # ---------------- measurement: pipelined blocks
        reporter.start("sampling", total_steps, step)
        size = _block_size(r.checkpoint_every, r.save_every)
        blocks = [(c, min(size, r.samples - c)) for c in range(committed, r.samples, size)]

        def dispatch(states, first, n):
            s0 = r.thermalization + first * r.measure_every
            return sample(sampler, theory, keys, states, s0, n, r.measure_every, r.save_every)

        def store(first, n, states, obs, diag, saved, saved_start):
            """Runs on the writer thread: write, commit, then checkpoint one block."""
            obs = {name: np.swapaxes(v, 0, 1) for name, v in obs.items()}
            diag = {name: np.swapaxes(v, 0, 1) for name, v in diag.items()}
            writer.write_block(first, obs, diag)
            idx = np.arange(first, first + n)
            idx = idx[idx % r.save_every == 0] if r.save_every else idx[:0]
            if len(idx):
                writer.write_configs(saved, saved_start, idx)
            committed, saved_committed = first + n, saved_start + len(idx)
            step = r.thermalization + committed * r.measure_every
            secs = elapsed()
            writer.commit(committed, saved_committed, secs, step)
            checkpoint(states, step, committed, saved_committed, secs)
            return committed, saved_committed, step

        with _Writer() as bg:
            pending = dispatch(states, *blocks[0]) if blocks else None
            for k, (first, n) in enumerate(blocks):
                states, obs, acc, saved = pending
                if k + 1 < len(blocks):
                    pending = dispatch(states, *blocks[k + 1])  # the device runs ahead
                host = jax.device_get((states, obs, acc, saved))  # waits for block k only
                bg.submit(store, first, n, *host, saved_committed)
                saved_committed += (
                    0 if not r.save_every else len(range(first, first + n, r.save_every))
                )
                reporter.advance(
                    r.thermalization + (first + n) * r.measure_every,
                    float(np.mean(host[2]["acceptance"])),
                )
            results = bg.drain()
        if results:
            committed, saved_committed, step = results[-1]
        writer.commit(committed, saved_committed, elapsed(), step, complete=True)
    finally:
        writer.close()
        reporter.finish()
    log(f"complete: {committed} measurements x {r.chains} chains, {elapsed():.1f} s")
    return paths.ensemble


def remove_run(run_dir: str | Path) -> None:
    """Delete a run directory created by :func:`run_job` (used by ``--force`` and tests)."""
    shutil.rmtree(run_dir, ignore_errors=True)
