"""Run configuration (docs/conventions.md §2): TOML in, a validated, frozen :class:`RunConfig` out.

>>> cfg = parse_config('''
... [lattice]
... shape = [8, 8]
... [action]
... kappa = 0.2
... lambda = 0.02
... [sampler]
... kind = "hmc"
... ''', ["run.chains=4", "run.dtype=float32"])
>>> cfg.run.chains, cfg.run.dtype, cfg.sampler.scheme, cfg.sampler.leapfrog_step
(4, 'float32', 'leapfrog', 0.1)
>>> parse_config(cfg.to_toml()) == cfg
True

Every problem is reported as a :class:`ConfigError` whose one-line message starts with the
dotted key path (``sampler.step_size: must be > 0 (got -0.1)``); several problems found in one
pass are joined by ``"; "``. Types are strict: no str -> int coercion, bool is not an integer,
integers are accepted (and stored) as floats, non-finite floats are refused.

Keys that do not apply to the chosen ``sampler.kind`` are ``None`` in the resolved config and
absent from :meth:`RunConfig.to_dict` / :meth:`RunConfig.to_toml`: ``step_size`` for hmc,
``trajectory_length`` and ``steps`` for langevin and mala. Likewise ``action.kappa`` is ``None``
in the mass form and ``action.m2`` in the kappa form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictStr, field_validator, model_validator

from lattice.config import base
from lattice.config.base import (
    ConfigError,
    Document,
    Float,
    NonNegInt,
    PosInt,
    Section,
    load_document,
    parse_document,
    rule,
    show,
)
from lattice.config.sampler import (
    KINDS,
    SCHEMAS,
    SCHEMES,
    SamplerSection,
)
from lattice.numerics.phi4 import Phi4

__all__ = [
    "ConfigError",
    "RunConfig",
    "LatticeSection",
    "ActionSection",
    "SamplerSection",
    "RunSection",
    "MAX_STEPS",
    "KINDS",
    "SCHEMES",
    "load_config",
    "parse_config",
    "apply_overrides",
]


class LatticeSection(Section):
    """``[lattice]``: the periodic lattice."""

    shape: tuple[PosInt, ...] = Field(min_length=1)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return math.prod(self.shape)


class ActionSection(Section):
    """``[action]``: kappa form (``kappa``, ``lambda``) or mass form (``m2``, ``lambda``).

    The TOML key ``lambda`` is the attribute ``lam``; the coupling of the other form is None.
    """

    form: Literal["kappa", "mass"] = "kappa"
    kappa: Float | None = None
    m2: Float | None = None
    lam: Float = Field(alias="lambda")

    @field_validator("lam")
    @classmethod
    def _lam_nonnegative(cls, v: float) -> float:
        if v < 0:
            raise rule(
                "",
                "must be >= 0 (the action is unbounded below for a negative quartic coupling;"
                f" got {show(v)})",
            )
        return v

    @model_validator(mode="after")
    def _couplings_match_form(self) -> ActionSection:
        need, other = ("kappa", "m2") if self.form == "kappa" else ("m2", "kappa")
        if getattr(self, other) is not None:
            raise rule(other, f'not used by form = "{self.form}" (its couplings: {need}, lambda)')
        if getattr(self, need) is None:
            raise rule(need, f'required key is missing (form = "{self.form}")')
        return self


#: the bound on a run's sampler steps (thermalization + samples × measure_every, exclusive)
MAX_STEPS = 2**31


class RunSection(Section):
    """``[run]``: chains, statistics, precision and output cadence."""

    chains: PosInt = 8
    seed: NonNegInt = 1
    thermalization: NonNegInt = 1000
    samples: PosInt = 2000
    measure_every: PosInt = 10
    save_every: NonNegInt = 10
    dtype: Literal["float64", "float32"] = "float64"
    start: Literal["hot", "cold", "ordered"] = "hot"
    checkpoint_every: PosInt = 100
    prng: Literal["threefry", "rbg", "unsafe_rbg"] = "threefry"
    devices: PosInt | None = (
        None  # None: all local devices (see lattice.runs.resources.chain_sharding)
    )
    #: global index of this run's first chain: its chains are first_chain … first_chain +
    #: chains − 1, with those chains' streams (a shard of a larger ensemble, docs/scaling.md)
    first_chain: NonNegInt = 0

    @field_validator("seed")
    @classmethod
    def _seed_fits_64_bits(cls, v: int) -> int:
        if v >= 2**63:
            raise rule("", f"must be < 2**63 (a 64-bit seed; got {v})")
        return v

    @model_validator(mode="after")
    def _chain_indices_fit_32_bits(self) -> RunSection:
        """Chain c's stream is fold_in(key(seed), c), with c a 32-bit integer."""
        if self.first_chain + self.chains > 2**31:
            raise rule(
                "first_chain",
                f"first_chain + chains must be <= 2**31 (got {self.first_chain + self.chains})",
            )
        return self

    @model_validator(mode="after")
    def _steps_fit_the_step_counter(self) -> RunSection:
        """Step t's keys are fold_in(chain key, t) with t a 32-bit integer (and a signed one in
        the loops without x64): every step index, and t + 1, must stay below 2**31."""
        sampling = self.samples * self.measure_every
        total = self.thermalization + sampling
        if total >= MAX_STEPS:
            key = "thermalization" if self.thermalization >= sampling else (
                "measure_every" if self.measure_every >= self.samples else "samples"
            )  # fmt: skip
            raise rule(
                key,
                "the run's sampler steps, thermalization + samples × measure_every, must be "
                f"< 2**31 (a step's index is a 32-bit integer; got {total})",
            )
        return self


#: the fewest steps the step-size tuner runs (run.thermalization >= twice this)
MIN_TUNING_STEPS = 10


class RunConfig(Document):
    """The fully resolved run config. Build it with :func:`load_config` or :func:`parse_config`."""

    name: StrictStr = "run"
    description: StrictStr = ""
    lattice: LatticeSection
    action: ActionSection
    sampler: SamplerSection
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _tuning_has_room(self) -> RunConfig:
        """The step-size tuner runs over the first half of thermalization: at least 10 steps."""
        if self.sampler.kind != "hmc" or self.sampler.target_acceptance is None:
            return self
        if self.run.thermalization < 2 * MIN_TUNING_STEPS:
            raise rule(
                "run.thermalization",
                f"sampler.target_acceptance tunes over the first half of thermalization and "
                f"needs thermalization >= {2 * MIN_TUNING_STEPS} (got {self.run.thermalization})",
            )
        return self

    @property
    def tuning_steps(self) -> int:
        """Thermalization steps the step-size tuner runs (0: no tuner): the first half. (A
        diffusion sampler's ``target_acceptance`` is its path-length pilot, not this tuner.)"""
        if self.sampler.kind != "hmc" or self.sampler.target_acceptance is None:
            return 0
        return self.run.thermalization // 2

    @model_validator(mode="after")
    def _free_field_is_stable(self) -> RunConfig:
        """At lambda = 0 the Gaussian kernel A(p) must be positive at every lattice momentum."""
        a, shape, d = self.action, self.lattice.shape, self.lattice.ndim
        if a.lam != 0:
            return self
        unbounded = f"the action is unbounded below (got {show(a.kappa if a.m2 is None else a.m2)})"
        if a.form == "mass":  # A(p) = 2 (m2 + p̂²), smallest at p = 0
            if a.m2 <= 0:
                raise rule("action.m2", f"free field (lambda = 0) needs m2 > 0; {unbounded}")
            return self
        # A(p) = 2 − 4κ Σ_μ cos p_μ: Σ cos ranges over [s_min, d] on the lattice momenta
        k, s_min = a.kappa, sum(_min_cos(n) for n in shape)
        if k > 0 and 1.0 - 2.0 * k * d <= 0:
            raise rule(
                "action.kappa",
                f"free field (lambda = 0) needs kappa < 1/(2d) = {1 / (2 * d):g} for d = {d};"
                f" {unbounded}",
            )
        if k < 0 and 1.0 - 2.0 * k * s_min <= 0:
            bound = (
                f"-1/(2d) = {-1 / (2 * d):g} for d = {d}"
                if s_min == -d
                else f"1/(2 min_p Σ_μ cos p_μ) = {1 / (2 * s_min):.6g} for shape {list(shape)}"
            )
            raise rule(
                "action.kappa", f"free field (lambda = 0) needs kappa > {bound}; {unbounded}"
            )
        return self


_SECTIONS: dict[str, Any] = {
    "lattice": LatticeSection,
    "action": ActionSection,
    "sampler": SCHEMAS,
    "run": RunSection,
}


# --------------------------------------------------------------------------- public functions
def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML file, apply ``--set`` overrides and validate."""
    return load_document(path, overrides, RunConfig, _SECTIONS, adjust=_drop_keys_of_old_kind)


def parse_config(
    source: str | Mapping[str, Any], overrides: Sequence[str] = (), *, origin: str = "<string>"
) -> RunConfig:
    """Validate TOML text or an already parsed dict; ``origin`` names the text in errors."""
    return parse_document(
        source, overrides, RunConfig, _SECTIONS, origin=origin, adjust=_drop_keys_of_old_kind
    )


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """:func:`lattice.config.base.apply_overrides`, then the sampler keys of an old kind dropped
    (see :func:`_drop_keys_of_old_kind`)."""
    out = base.apply_overrides(raw, overrides)
    _drop_keys_of_old_kind(raw, out, overrides)
    return out


def _drop_keys_of_old_kind(
    raw: Mapping[str, Any], out: dict[str, Any], overrides: Sequence[str]
) -> None:
    """When an override changes ``sampler.kind``, the file's sampler keys that the new kind
    does not use (e.g. ``step_size`` for hmc, or ``scheme = "euler"``) are dropped, so that
    ``--set sampler.kind=hmc`` works on a Langevin config. Keys given as overrides stay and
    are validated as usual."""
    old = raw.get("sampler", {}) if isinstance(raw.get("sampler"), Mapping) else {}
    new = out.get("sampler")
    if not isinstance(new, dict) or new.get("kind") == old.get("kind"):
        return
    schema = SCHEMAS.get(new.get("kind"))
    if schema is None:
        return  # reported by the validation
    explicit = {o.partition("=")[0].strip() for o in overrides}
    for key in list(new):
        if f"sampler.{key}" in explicit or key not in old:
            continue
        if key not in schema.model_fields:
            del new[key]
        elif key == "scheme" and new[key] not in schema.SCHEMES:
            del new[key]
        elif key == "fourier_acceleration" and new[key] is True and not schema.FOURIER:
            del new[key]


def _min_cos(n: int) -> float:
    """min over p = 2πk/n of cos p: -1 on even axes, -cos(π/n) on odd ones, 1 for n = 1."""
    return -1.0 if n % 2 == 0 else -math.cos(math.pi / n)


def build_theory(cfg: RunConfig) -> Phi4:
    """The action of a config's ``[lattice]`` and ``[action]`` tables: eq. (1) in the κ-form
    (``form = "kappa"``) or the mass form."""
    a = cfg.action
    if a.form == "kappa":
        return Phi4.kappa_form(cfg.lattice.shape, a.kappa, a.lam)
    return Phi4.mass_form(cfg.lattice.shape, a.m2, a.lam)
