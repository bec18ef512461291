"""Sampler assembly: from a validated run config to what a run computes with.

The sampler's schema (:mod:`lattice.config.sampler`) builds it; this module supplies what the
kind needs from files (a diffusion sampler's model, checked against the theory, and its kernel
table) and the per-chain keys and sharding. Everything here happens before a file of the run
is touched, so a bad model fails first. ``lattice run``, ``lattice check`` and the benchmarks
assemble samplers through :func:`build_sampler`.

Equal configs give equal samplers (their ``identity``), which share compiled code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lattice.config.run import RunConfig, build_theory
from lattice.errors import LatticeError
from lattice.numerics.phi4 import Phi4
from lattice.runs.directory import JobError
from lattice.runs.resources import chain_sharding
from lattice.samplers.chains import chain_keys, init_states

__all__ = [
    "build_sampler",
    "resolved_config",
    "checked_model",
    "config_attrs",
    "Job",
    "prepare",
    "tuned",
    "with_path_steps",
]


def build_sampler(cfg: RunConfig, theory: Phi4):
    """The sampler of a config: its schema builds it, with what the kind needs from files
    loaded here (a diffusion sampler's model, checked against the theory, and its kernel
    table, measured now for a model older than the table)."""
    s = cfg.sampler
    if not s.needs_model():
        return s.build(theory)
    # imported only for a model: equinox and the score layer cost a run without one 0.3 s of
    # start-up (docs/PERFORMANCE.md)
    from lattice.io.model import training_configs
    from lattice.score.tables import norm_function_of, spectral_table_of  # lazy (above)

    model = checked_model(cfg, theory)
    s = s.with_model_defaults(model)
    norm = norm_function_of(model, training_configs) if s.kernel == "analytic" else None
    table = spectral_table_of(model, training_configs) if s.kernel == "spectral" else None
    return s.build(theory, model=model, norm=norm, table=table)


def checked_model(cfg: RunConfig, theory: Phi4):
    """The model of ``sampler.model``, refused (:class:`~lattice.score.model.ModelError`)
    unless it was trained for ``theory``'s lattice shape."""
    from lattice.io.model import load_model  # lazy: see build_sampler
    from lattice.score.model import check_compatible  # lazy (above)

    model = load_model(cfg.sampler.model)
    check_compatible(model, theory)  # before the kernel table is looked for
    return model


def resolved_config(cfg: RunConfig, model=None) -> RunConfig:
    """``cfg`` with the sampler's defaults that depend on a model filled in
    (:meth:`~lattice.config.sampler.SamplerSchema.with_model_defaults`), so that the run
    directory records them. ``model`` is loaded from ``sampler.model`` when needed and not
    given."""
    s = cfg.sampler
    if not s.lacks_model_defaults():
        return cfg
    if model is None:
        model = checked_model(cfg, build_theory(cfg))
    return cfg.model_copy(update={"sampler": s.with_model_defaults(model)})


def config_attrs(cfg: RunConfig, sampler) -> dict[str, Any]:
    """The ensemble's ``/config`` attributes (docs/conventions.md §4): every resolved key as
    ``section.key``, and the built sampler's declared metadata."""
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


@dataclass(frozen=True)
class Job:
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
    #: the uuid of the ensemble file the run writes (each checkpoint records it)
    ensemble_uuid: str | None = None

    def state_template(self):
        """The shapes and dtypes of the chains' states (a checkpoint's expected tree)."""
        shape = (self.cfg.run.chains, *self.theory.shape)
        return jax.eval_shape(lambda: init_states(self.sampler, jnp.zeros(shape, self.dtype)))


def prepare(cfg: RunConfig) -> Job:
    """Theory, sampler (a diffusion sampler's model is loaded and checked here, so a bad
    model fails before any file is written), keys and sharding of a config. A model that
    cannot be used is a :class:`~lattice.runs.directory.JobError` naming ``sampler.model``."""
    r = cfg.run
    theory = build_theory(cfg)
    try:
        cfg = resolved_config(cfg)
        sampler = build_sampler(cfg, theory)
    except (LatticeError, ValueError) as e:
        raise JobError(f"sampler.model: {e}") from None
    keys = chain_keys(r.seed, np.arange(r.first_chain, r.first_chain + r.chains), r.prng)
    key_data = np.asarray(jax.random.key_data(keys))
    sharding, n_dev = chain_sharding(r.chains, r.devices)
    if sharding is not None:
        keys = jax.device_put(keys, sharding)
    return Job(cfg, theory, sampler, jnp.dtype(r.dtype), keys, key_data, sharding, n_dev)


def tuned(job: Job, step_size: float) -> Job:
    """The job with the step the tuner froze: the config's sampler at that step, untuned."""
    cfg = job.cfg.model_copy(update={"sampler": job.cfg.sampler.tuned(step_size)})
    return replace(job, sampler=build_sampler(cfg, job.theory), tuned_step_size=step_size)


def with_path_steps(job: Job, steps: int) -> Job:
    """The job with the reverse steps the pilot chose: the config's sampler at that K."""
    cfg = job.cfg.model_copy(update={"sampler": job.cfg.sampler.with_path_steps(steps)})
    return replace(job, sampler=build_sampler(cfg, job.theory), tuned_path_steps=steps)
