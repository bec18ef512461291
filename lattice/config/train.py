"""Training config (``lattice train CONFIG.toml``): TOML in, a frozen :class:`TrainConfig` out.

>>> cfg = parse_train_config('''
... [train]
... ensemble = "runs/hmc_8x8"
... ''', ["train.steps=100"])
>>> cfg.train.steps, cfg.train.sde, cfg.network.physics
(100, 've', True)

Only ``train.ensemble`` is required, or, for ``objective = "path"`` from the action alone, the
``[lattice]`` and ``[action]`` tables of a run config; every other key has a default
(``docs/config.md``).
Errors are :class:`lattice.config.base.ConfigError` with the dotted key path first, exactly as for
run configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictStr, field_validator, model_validator

from lattice.config.base import (
    ConfigError,
    Document,
    NonNegInt,
    PosFloat,
    PosInt,
    Section,
    load_document,
    parse_document,
    positive_or_auto,
    rule,
    show,
)
from lattice.config.run import ActionSection, LatticeSection
from lattice.score.factory import ARCHITECTURES
from lattice.score.network import NetworkSpec

__all__ = [
    "TrainConfig",
    "TrainSection",
    "NetworkSection",
    "load_train_config",
    "parse_train_config",
]

NonNegFloat = Annotated[float, Field(ge=0, strict=True)]

#: the resolved defaults of the path objective's unset keys: K, the fresh paths behind each
#: logged acceptance and ESS, and the kernel table's learning rate over the network's
PATH_STEPS, EVAL_PATHS, TABLE_LR_FACTOR = 32, 256, 20.0
#: the defaults of shared [train] keys that differ for objective = "path" (written into its
#: resolved config): a few hundred steps, so a shorter warm-up and a larger learning rate
#: (on the 8×8 ladder point after 450 steps, K = 32: Var log w 2.36 at 2e-3, 1.85 at 6e-3,
#: 1.28 at 1.2e-2; docs/PERFORMANCE.md)
PATH_DEFAULTS = {"learning_rate": 0.012, "warmup": 50}


class TrainSection(Section):
    """``[train]``: data, noise schedule, optimizer and cadence."""

    #: the training ensemble (a run directory or ensemble.h5); required by the data objectives
    #: ("dsm", "tsm"), not used by objective = "path" (it trains from the action alone)
    ensemble: StrictStr | None = None
    #: "single": one score network for the whole field; "multilevel": the coarse-to-fine
    #: models of lattice.score.multilevel (one conditional network per Haar level). Unset is
    #: "single", and is not written into the resolved config, so that the configs (and
    #: checkpoints) of models trained before the key existed stay the same text
    method: Literal["single", "multilevel"] | None = None
    #: multilevel: Haar halvings ("auto": down to a coarsest lattice of at least 4 sites per axis)
    levels: PosInt | Literal["auto"] | None = None
    #: the training objective: "dsm" (denoising score matching on the ensemble; unset for
    #: method = "single"), "tsm" (target score matching: the denoising target mixed with each
    #: level's part of the force, docs/multilevel.md §3; unset for "multilevel") or "path"
    #: (the variance of the path log-weight of K-step reverse paths, from the action alone,
    #: lattice.score.path_train; method = "single"). Unset is not written into the resolved
    #: config
    objective: Literal["dsm", "tsm", "path"] | None = None
    #: path: a model directory to start from (fine-tuning; its theory, network and SDE are
    #: kept). Unset: start from the Hartree Gaussian of the config's [lattice] and [action]
    init: StrictStr | None = None
    #: path: the divergence minimized, "kl" (the reverse KL E[−log w] through the
    #: reparametrized paths) or "log_variance" (Var log w on paths of the current model with
    #: stopped gradients). Unset: "kl"
    path_loss: Literal["kl", "log_variance"] | None = None
    #: path: K, the reverse steps of every training path (run the sampler with steps = K)
    path_steps: Annotated[int, Field(ge=2, strict=True)] | None = None
    #: path: the learning rate of the kernel table and the base mass (unset: 20 x learning_rate)
    table_learning_rate: PosFloat | None = None
    #: path: fresh paths of the EMA model behind each logged acceptance and ESS (unset: 256)
    eval_paths: Annotated[int, Field(ge=2, strict=True)] | None = None
    discard: NonNegInt = 0
    validation: Annotated[float, Field(gt=0, le=0.5, strict=True)] = 0.1
    sde: Literal["ve", "vp"] = "ve"
    sigma_min: float | Literal["auto"] = "auto"
    sigma_max: float | Literal["auto"] = "auto"
    beta_min: NonNegFloat = 0.1
    beta_max: PosFloat = 20.0
    steps: PosInt = 2000
    batch_size: PosInt = 64
    learning_rate: PosFloat = 2e-3
    warmup: NonNegInt = 100
    weight_decay: NonNegFloat = 1e-4
    grad_clip: PosFloat = 1.0
    ema: Annotated[float, Field(ge=0, lt=1, strict=True)] = 0.999
    augment: StrictBool = True
    seed: NonNegInt = 0
    log_every: PosInt = 50
    checkpoint_every: PosInt = 500

    @model_validator(mode="before")
    @classmethod
    def _path_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("objective") == "path":
            data = {**PATH_DEFAULTS, **data}
        return data

    @field_validator("ensemble")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise rule("", "must name a run directory or an ensemble.h5 file (got '')")
        return v

    @field_validator("init")
    @classmethod
    def _init_not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise rule("", "must name a model directory (got '')")
        return v

    @property
    def path(self) -> bool:
        """Trained on the path weight (objective = "path")."""
        return self.objective == "path"

    @property
    def divergence(self) -> str:
        """The path objective's divergence (``path_loss``, unset: "kl")."""
        return self.path_loss or "kl"

    @property
    def steps_per_path(self) -> int:
        """K of the path objective (``path_steps``, unset: :data:`PATH_STEPS`)."""
        return self.path_steps or PATH_STEPS

    @property
    def table_lr(self) -> float:
        """The kernel table's learning rate (unset: :data:`TABLE_LR_FACTOR` × the network's)."""
        return self.table_learning_rate or TABLE_LR_FACTOR * self.learning_rate

    @property
    def paths_per_eval(self) -> int:
        return self.eval_paths or EVAL_PATHS

    @field_validator("sigma_min", "sigma_max", mode="plain")
    @classmethod
    def _positive_or_auto(cls, v: Any) -> float | str:
        return positive_or_auto(v)

    @property
    def multilevel(self) -> bool:
        return self.method == "multilevel"

    @model_validator(mode="after")
    def _consistent(self) -> TrainSection:
        if self.checkpoint_every % self.log_every:
            raise rule(
                "checkpoint_every",
                f"must be a multiple of log_every = {self.log_every} (got {self.checkpoint_every})",
            )
        if self.sde == "ve":
            lo, hi = self.sigma_min, self.sigma_max
            if lo != "auto" and hi != "auto" and not lo < hi:
                raise rule("sigma_max", f"must be > sigma_min = {show(lo)} (got {show(hi)})")
        else:
            if self.sigma_max != "auto":
                raise rule("sigma_max", 'not used by sde = "vp" (its range is set by beta_max)')
            if not self.beta_min < self.beta_max:
                raise rule(
                    "beta_max",
                    f"must be > beta_min = {show(self.beta_min)} (got {show(self.beta_max)})",
                )
        if self.multilevel:
            if self.sde != "ve":
                raise rule("sde", "method = 'multilevel' trains variance-exploding SDEs only")
            if self.objective == "path":
                raise rule("objective", "'path' trains method = 'single' models only")
        elif self.levels is not None:
            raise rule("levels", "only used by method = 'multilevel'")
        elif self.objective == "tsm":
            raise rule("objective", "'tsm' is only used by method = 'multilevel'")
        path_keys = ("init", "path_loss", "path_steps", "table_learning_rate", "eval_paths")
        if self.path:
            if self.ensemble is not None:
                raise rule(
                    "ensemble",
                    "not used by objective = 'path' (it trains from the action alone; to"
                    " start from a model trained on an ensemble, name it in train.init)",
                )
            if self.sde != "ve":
                raise rule("sde", "objective = 'path' trains variance-exploding SDEs only")
            if self.init is not None:
                for k in ("sigma_min", "sigma_max"):
                    if getattr(self, k) != "auto":
                        raise rule(k, "not used with train.init (the model's SDE is kept)")
        else:
            for k in path_keys:
                if getattr(self, k) is not None:
                    raise rule(k, "only used by objective = 'path'")
            if self.ensemble is None:
                raise rule("ensemble", "required key is missing (the training ensemble)")
        if self.warmup >= self.steps:
            raise rule("warmup", f"must be < steps = {self.steps} (got {self.warmup})")
        return self


_SPEC = NetworkSpec()


class NetworkSection(Section):
    """``[network]``: the score network of ``lattice.score.network``. The defaults are
    :class:`~lattice.score.network.NetworkSpec`'s (also those of a model stored without the
    key), not a second copy."""

    channels: PosInt = _SPEC.channels
    blocks: PosInt = _SPEC.blocks
    kernel: PosInt = _SPEC.kernel
    dilations: tuple[PosInt, ...] = Field(default=_SPEC.dilations, min_length=1)
    fourier_features: PosInt = _SPEC.fourier_features
    embedding: PosInt = _SPEC.embedding
    physics: StrictBool = _SPEC.physics
    #: the Gaussian the network corrects (lattice.score.network eq. (3)): "white", or
    #: "hartree", the self-consistent Gaussian of the action with a trained mass. Unset:
    #: "hartree" for objective = "path" from the action, else "white"; not written when unset
    base: Literal["white", "hartree"] | None = None
    global_channel: StrictBool = _SPEC.global_channel
    #: a key of lattice.score.factory.ARCHITECTURES. Unset is the spec's default ("resnet")
    #: and is not written into the resolved config, so that earlier models' configs stay
    #: the same text
    architecture: StrictStr | None = None

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in ARCHITECTURES:
            raise rule("", f"must be one of {', '.join(sorted(ARCHITECTURES))} (got {show(v)})")
        return v

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise rule("", f"must be odd, so that the kernel is centred on the site (got {v})")
        return v


class TrainConfig(Document):
    """The fully resolved training config."""

    name: StrictStr = "model"
    description: StrictStr = ""
    train: TrainSection
    network: NetworkSection = Field(default_factory=NetworkSection)
    #: the theory of a training from the action alone (objective = "path" without init): the
    #: tables of a run config (docs/conventions.md §2)
    lattice: LatticeSection | None = None
    action: ActionSection | None = None

    @property
    def from_action(self) -> bool:
        """Trained from the action alone: objective = "path" without ``train.init``."""
        return self.train.path and self.train.init is None

    @model_validator(mode="after")
    def _multilevel_network(self) -> TrainConfig:
        if self.from_action:
            for k in ("lattice", "action"):
                if getattr(self, k) is None:
                    raise rule(
                        k,
                        "required table is missing (objective = 'path' without train.init"
                        " trains from the action: give [lattice] and [action])",
                    )
        else:
            for k in ("lattice", "action"):
                if getattr(self, k) is not None:
                    where = "train.init's model" if self.train.path else "train.ensemble"
                    raise rule(k, f"not used here (the theory is {where}'s)")
        if self.train.path and self.train.init is not None and "network" in self.model_fields_set:
            raise rule("network", "not used with train.init (the model's network is kept)")
        if self.network.base == "hartree" and self.train.multilevel:
            raise rule("network.base", "'hartree' is not available for method = 'multilevel'")
        name = self.network.architecture
        if self.train.multilevel and name and ARCHITECTURES[name].conditional is None:
            raise rule(
                "network.architecture",
                f"{show(name)} has no conditional network for method = 'multilevel'",
            )
        return self


_SECTIONS = {
    "train": TrainSection,
    "network": NetworkSection,
    "lattice": LatticeSection,
    "action": ActionSection,
}


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training config, apply ``--set`` overrides, validate (:class:`ConfigError`)."""
    return load_document(path, overrides, TrainConfig, _SECTIONS)


def parse_train_config(
    source: str | Mapping[str, Any], overrides: Sequence[str] = (), *, origin: str = "<string>"
) -> TrainConfig:
    """Validate TOML text or a parsed dict as a :class:`TrainConfig`."""
    return parse_document(source, overrides, TrainConfig, _SECTIONS, origin=origin)


__all__ += ["ConfigError"]
