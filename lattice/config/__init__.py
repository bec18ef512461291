"""Validated configs (layer 3): the run config of ``lattice run`` (DESIGN.md §2) and the
training config of ``lattice train``, built from TOML at the edge."""

from lattice.config.base import ConfigError as ConfigError
from lattice.config.base import apply_overrides as apply_overrides
from lattice.config.run import RunConfig as RunConfig
from lattice.config.run import load_config as load_config
from lattice.config.run import parse_config as parse_config
from lattice.config.train import TrainConfig as TrainConfig
from lattice.config.train import load_train_config as load_train_config
from lattice.config.train import parse_train_config as parse_train_config
