"""Validated configs (layer 3): the run config of ``lattice run`` (docs/conventions.md §2) and the
training config of ``lattice train``, built from TOML at the edge.

The names below are loaded on first use (PEP 562): the training config needs the score
network's equinox, which a run config does not (0.16 s of every run's start-up)."""

from __future__ import annotations

from lattice._lazy import lazy_names

#: public name -> the module that defines it
_API = {
    "ConfigError": "lattice.config.base",
    "apply_overrides": "lattice.config.base",
    "RunConfig": "lattice.config.run",
    "load_config": "lattice.config.run",
    "parse_config": "lattice.config.run",
    "TrainConfig": "lattice.config.train",
    "load_train_config": "lattice.config.train",
    "parse_train_config": "lattice.config.train",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_names(__name__, globals(), _API)
