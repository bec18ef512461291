"""The learned score model (layer 2, pure: no file I/O): noising SDEs, the symmetric score
network, the path-space and ODE samplers, and denoising score matching (docs/score.md). Model
directories on disk are :mod:`lattice.io.model`; ``lattice train``'s run is
:mod:`lattice.runs.training`.

The names below are loaded on first use (PEP 562): importing one light module of this layer
(``lattice.score.flow`` or ``lattice.score.sde``, which need jax only) then does not import
the network's equinox, the trainer's optax or the Γ-method's scipy (0.34 s at every run's
start-up, docs/PERFORMANCE.md)."""

from __future__ import annotations

from lattice._lazy import lazy_names

#: public name -> the module that defines it
_API = {
    "GaussianScore": "lattice.score.gaussian",
    "exact_dsm_loss": "lattice.score.gaussian",
    "exact_gaussian_model": "lattice.score.gaussian",
    "free_field_samples": "lattice.score.gaussian",
    "ModelError": "lattice.score.model",
    "ScoreModel": "lattice.score.model",
    "check_compatible": "lattice.score.model",
    "build_network": "lattice.score.factory",
    "NetworkSpec": "lattice.score.network",
    "ScoreNet": "lattice.score.network",
    "count_parameters": "lattice.score.network",
    "kernel_variances": "lattice.score.path",
    "noise_levels": "lattice.score.path",
    "sample_path": "lattice.score.path",
    "sample_spectral_path": "lattice.score.path",
    "SpectralTable": "lattice.score.spectral",
    "measure_spectral": "lattice.score.spectral",
    "score_norms": "lattice.score.path",
    "SDE": "lattice.score.sde",
    "VESDE": "lattice.score.sde",
    "VPSDE": "lattice.score.sde",
    "make_sde": "lattice.score.sde",
    "dsm_loss": "lattice.score.train",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_names(__name__, globals(), _API)
