"""The learned score model (layer 2, pure: no file I/O): noising SDEs, the symmetric score
network, the path-space and ODE samplers, and denoising score matching (docs/score.md). Model
directories on disk are :mod:`lattice.io.model`; ``lattice train``'s run is
:mod:`lattice.runs.training`."""

from lattice.score.gaussian import GaussianScore as GaussianScore
from lattice.score.gaussian import exact_dsm_loss as exact_dsm_loss
from lattice.score.gaussian import exact_gaussian_model as exact_gaussian_model
from lattice.score.gaussian import free_field_samples as free_field_samples
from lattice.score.model import ModelError as ModelError
from lattice.score.model import ScoreModel as ScoreModel
from lattice.score.model import check_compatible as check_compatible
from lattice.score.network import NetworkSpec as NetworkSpec
from lattice.score.network import ScoreNet as ScoreNet
from lattice.score.network import build_network as build_network
from lattice.score.network import count_parameters as count_parameters
from lattice.score.path import kernel_variances as kernel_variances
from lattice.score.path import noise_levels as noise_levels
from lattice.score.path import sample_path as sample_path
from lattice.score.path import score_norms as score_norms
from lattice.score.sde import SDE as SDE
from lattice.score.sde import VESDE as VESDE
from lattice.score.sde import VPSDE as VPSDE
from lattice.score.sde import make_sde as make_sde
from lattice.score.train import dsm_loss as dsm_loss
