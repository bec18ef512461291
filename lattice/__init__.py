"""lattice: stochastic quantization of lattice φ⁴ theory in JAX.

The public API, in one place (see README.md and DESIGN.md for the conventions):
"""

from . import exact as exact
from . import score as score
from .analysis import GammaResult as GammaResult
from .analysis import gamma_method as gamma_method
from .analysis import gamma_method_derived as gamma_method_derived
from .analysis import jackknife as jackknife
from .chains import chain_keys as chain_keys
from .chains import evolve as evolve
from .chains import init_states as init_states
from .chains import initial_field as initial_field
from .chains import run_chains as run_chains
from .chains import sample as sample
from .chains import trace as trace
from .config import ConfigError as ConfigError
from .config import RunConfig as RunConfig
from .config import load_config as load_config
from .config import parse_config as parse_config
from .ensemble import Ensemble as Ensemble
from .ensemble import EnsembleError as EnsembleError
from .ensemble import open_ensemble as open_ensemble
from .jobs import resume_job as resume_job
from .jobs import run_job as run_job
from .measure import measure_ensemble as measure_ensemble
from .observables import measure as measure
from .phi4 import Phi4 as Phi4
from .samplers import Sampler as Sampler
from .samplers import StepInfo as StepInfo
from .samplers import hmc as hmc
from .samplers import langevin as langevin
from .samplers import mala as mala

__version__ = "0.1.0"
