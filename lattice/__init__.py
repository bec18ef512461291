"""lattice: stochastic quantization of lattice φ⁴ theory in JAX.

The public API, in one place (README.md, docs/architecture.md, docs/conventions.md). The package
is layered, each layer importing only from those below it:

- :mod:`lattice.numerics`: the action, geometry, noise, observables, exact results, the Γ-method;
- :mod:`lattice.samplers` and :mod:`lattice.score`: pure sampler kernels and score models;
- :mod:`lattice.config`: the validated run and training configs, one schema per sampler kind;
- :mod:`lattice.io`: the HDF5 ensemble, manifests, checkpoints, model directories;
- :mod:`lattice.runs` and :mod:`lattice.results`: run-directory lifecycles, and measurement,
  comparison and checks of ensembles;
- :mod:`lattice.app`: the CLI, plots and reports.

The names below are loaded on first use (PEP 562), so that ``import lattice`` costs only what
a command needs: importing every layer's dependencies (jax, equinox, diffrax, scipy, h5py,
pydantic) took 3.2–3.6 s, and ``lattice --help`` needs none of them (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lattice._version import __version__ as __version__

#: public name -> the module that defines it
_API = {
    # numerics
    "Phi4": "lattice.numerics.phi4",
    "measure": "lattice.numerics.observables",
    "GammaResult": "lattice.numerics.analysis",
    "gamma_method": "lattice.numerics.analysis",
    "gamma_method_derived": "lattice.numerics.analysis",
    "jackknife": "lattice.numerics.analysis",
    "log_mean_exp": "lattice.numerics.analysis",
    "free_log_z": "lattice.numerics.exact",
    "strip_log_z": "lattice.numerics.transfer",
    # samplers
    "Sampler": "lattice.samplers.base",
    "StepInfo": "lattice.samplers.base",
    "hmc": "lattice.samplers.hmc",
    "langevin": "lattice.samplers.langevin",
    "mala": "lattice.samplers.mala",
    "Langevin": "lattice.config.sampler",
    "Mala": "lattice.config.sampler",
    "Hmc": "lattice.config.sampler",
    "Diffusion": "lattice.config.sampler",
    "chain_keys": "lattice.samplers.chains",
    "evolve": "lattice.samplers.chains",
    "init_states": "lattice.samplers.chains",
    "initial_field": "lattice.samplers.chains",
    "run_chains": "lattice.samplers.chains",
    "sample": "lattice.samplers.chains",
    "trace": "lattice.samplers.chains",
    # config
    "ConfigError": "lattice.config.base",
    "RunConfig": "lattice.config.run",
    "load_config": "lattice.config.run",
    "parse_config": "lattice.config.run",
    # io
    "Ensemble": "lattice.io.ensemble",
    "EnsembleError": "lattice.io.ensemble",
    "open_ensemble": "lattice.io.reader",
    "load_model": "lattice.io.model",
    "save_model": "lattice.io.model",
    # runs and results
    "run_job": "lattice.runs.sampling",
    "resume_job": "lattice.runs.sampling",
    "train_model": "lattice.runs.training",
    "resume_training": "lattice.runs.training",
    "measure_ensemble": "lattice.results.measure",
    "Measurement": "lattice.results.measure",
    "compare_runs": "lattice.results.compare",
    "Comparison": "lattice.results.compare",
    "run_checks": "lattice.results.checks",
}
#: public submodules, also loaded on first use
_MODULES = {"exact": "lattice.numerics.exact", "score": "lattice.score"}

__all__ = sorted([*_API, *_MODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'lattice' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from lattice import score as score
    from lattice.config.base import ConfigError as ConfigError
    from lattice.config.run import RunConfig as RunConfig
    from lattice.config.run import load_config as load_config
    from lattice.config.run import parse_config as parse_config
    from lattice.config.sampler import Diffusion as Diffusion
    from lattice.config.sampler import Hmc as Hmc
    from lattice.config.sampler import Langevin as Langevin
    from lattice.config.sampler import Mala as Mala
    from lattice.io.ensemble import Ensemble as Ensemble
    from lattice.io.ensemble import EnsembleError as EnsembleError
    from lattice.io.model import load_model as load_model
    from lattice.io.model import save_model as save_model
    from lattice.io.reader import open_ensemble as open_ensemble
    from lattice.numerics import exact as exact
    from lattice.numerics.analysis import GammaResult as GammaResult
    from lattice.numerics.analysis import gamma_method as gamma_method
    from lattice.numerics.analysis import gamma_method_derived as gamma_method_derived
    from lattice.numerics.analysis import jackknife as jackknife
    from lattice.numerics.analysis import log_mean_exp as log_mean_exp
    from lattice.numerics.exact import free_log_z as free_log_z
    from lattice.numerics.observables import measure as measure
    from lattice.numerics.phi4 import Phi4 as Phi4
    from lattice.numerics.transfer import strip_log_z as strip_log_z
    from lattice.results.checks import run_checks as run_checks
    from lattice.results.compare import Comparison as Comparison
    from lattice.results.compare import compare_runs as compare_runs
    from lattice.results.measure import Measurement as Measurement
    from lattice.results.measure import measure_ensemble as measure_ensemble
    from lattice.runs.sampling import resume_job as resume_job
    from lattice.runs.sampling import run_job as run_job
    from lattice.runs.training import resume_training as resume_training
    from lattice.runs.training import train_model as train_model
    from lattice.samplers.base import Sampler as Sampler
    from lattice.samplers.base import StepInfo as StepInfo
    from lattice.samplers.chains import chain_keys as chain_keys
    from lattice.samplers.chains import evolve as evolve
    from lattice.samplers.chains import init_states as init_states
    from lattice.samplers.chains import initial_field as initial_field
    from lattice.samplers.chains import run_chains as run_chains
    from lattice.samplers.chains import sample as sample
    from lattice.samplers.chains import trace as trace
    from lattice.samplers.hmc import hmc as hmc
    from lattice.samplers.langevin import langevin as langevin
    from lattice.samplers.mala import mala as mala
