"""Training config (``lattice train CONFIG.toml``): TOML in, a frozen :class:`TrainConfig` out.

>>> cfg = parse_train_config('''
... [train]
... ensemble = "runs/hmc_8x8"
... ''', ["train.steps=100"])
>>> cfg.train.steps, cfg.train.sde, cfg.network.physics
(100, 've', True)

Only ``train.ensemble`` is required; every other key has a default (``docs/config.md``).
Errors are :class:`lattice.config.ConfigError` with the dotted key path first, exactly as for
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


class TrainSection(Section):
    """``[train]``: data, noise schedule, optimizer and cadence."""

    ensemble: StrictStr
    #: "single": one score network for the whole field; "multilevel": the coarse-to-fine
    #: models of lattice.score.multilevel (one conditional network per Haar level). Unset is
    #: "single", and is not written into the resolved config, so that the configs (and
    #: checkpoints) of models trained before the key existed stay the same text
    method: Literal["single", "multilevel"] | None = None
    #: multilevel: Haar halvings ("auto": down to a coarsest lattice of at least 4 sites per axis)
    levels: PosInt | Literal["auto"] | None = None
    #: multilevel: the training objective, "dsm" (denoising score matching) or "tsm" (target
    #: score matching: the denoising target mixed with each level's part of the force,
    #: docs/multilevel.md §3). Unset is "tsm" and is not written into the resolved config
    objective: Literal["dsm", "tsm"] | None = None
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

    @field_validator("ensemble")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise rule("", "must name a run directory or an ensemble.h5 file (got '')")
        return v

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
        elif self.levels is not None:
            raise rule("levels", "only used by method = 'multilevel'")
        elif self.objective is not None:
            raise rule("objective", "only used by method = 'multilevel'")
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

    @model_validator(mode="after")
    def _multilevel_network(self) -> TrainConfig:
        name = self.network.architecture
        if self.train.multilevel and name and ARCHITECTURES[name].conditional is None:
            raise rule(
                "network.architecture",
                f"{show(name)} has no conditional network for method = 'multilevel'",
            )
        return self


_SECTIONS = {"train": TrainSection, "network": NetworkSection}


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training config, apply ``--set`` overrides, validate (:class:`ConfigError`)."""
    return load_document(path, overrides, TrainConfig, _SECTIONS)


def parse_train_config(
    source: str | Mapping[str, Any], overrides: Sequence[str] = (), *, origin: str = "<string>"
) -> TrainConfig:
    """Validate TOML text or a parsed dict as a :class:`TrainConfig`."""
    return parse_document(source, overrides, TrainConfig, _SECTIONS, origin=origin)


__all__ += ["ConfigError"]
