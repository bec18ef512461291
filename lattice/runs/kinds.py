"""Which command a directory belongs to, judged without opening its HDF5 files: the files and
config tables that mark each kind. Light on purpose (no jax, no h5py): ``lattice info`` asks
it before it knows what it will read (importing :mod:`lattice.runs.training` for this cost
0.31 s of its start-up, :mod:`lattice.runs.directory` 0.78 s)."""

from __future__ import annotations

from pathlib import Path

from lattice.config.base import ConfigError, load_toml, read_config_text

__all__ = ["KIND_OF", "CONFIG", "is_training_dir"]

#: a command's resolved config in its directory
CONFIG = "config.toml"

#: the kind of directory a file, a checkpoint's command or a config table marks
KIND_OF = {
    "manifest.json": "a multi-process run is there",
    "model.json": "a trained model is there",
    "model.eqx": "a trained model is there",
    "history.csv": "a model in training is there",
    "train.log": "a model in training is there",
    "ensemble.h5": "an ensemble is there",
    "run.log": "an ensemble run is there",
    "train": "a model's training is there",
    "model": "a model's training is there",
    "run": "an ensemble run is there",
}


def is_training_dir(path: str | Path) -> bool:
    """Whether ``path`` is a model directory (finished or not), judged by its config: a
    ``config.toml`` with a ``[train]`` table."""
    p = Path(path) / CONFIG
    if not p.is_file():
        return False
    try:
        return "train" in load_toml(read_config_text(p), str(p))
    except ConfigError:
        return False
