"""The learned score model: noising SDEs, the symmetric score network, denoising score matching
and trained models on disk (docs/score.md)."""

from .config import TrainConfig, load_train_config, parse_train_config
from .gaussian import GaussianScore, exact_dsm_loss, exact_gaussian_model, free_field_samples
from .model import ModelError, ScoreModel, check_compatible, load_model, save_model
from .network import NetworkSpec, ScoreNet, build_network, count_parameters
from .path import kernel_variances, noise_levels, sample_path, score_norms
from .sde import SDE, VESDE, VPSDE, make_sde
from .train import TrainError, dsm_loss, load_training_data, resume_training, train_model

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "make_sde",
    "NetworkSpec",
    "ScoreNet",
    "build_network",
    "count_parameters",
    "GaussianScore",
    "exact_dsm_loss",
    "exact_gaussian_model",
    "free_field_samples",
    "TrainConfig",
    "load_train_config",
    "parse_train_config",
    "TrainError",
    "dsm_loss",
    "load_training_data",
    "train_model",
    "resume_training",
    "ModelError",
    "ScoreModel",
    "save_model",
    "load_model",
    "check_compatible",
    "noise_levels",
    "kernel_variances",
    "sample_path",
    "score_norms",
]
