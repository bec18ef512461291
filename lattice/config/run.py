"""Run configuration (DESIGN.md §2): TOML in, a validated, frozen :class:`RunConfig` out.

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

from pydantic import BaseModel, Field, StrictBool, StrictStr, field_validator, model_validator

from lattice.config import base
from lattice.config.base import (
    ConfigError,
    Document,
    Float,
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

__all__ = [
    "ConfigError",
    "RunConfig",
    "LatticeSection",
    "ActionSection",
    "SamplerSection",
    "RunSection",
    "KINDS",
    "SCHEMES",
    "load_config",
    "parse_config",
    "apply_overrides",
]

KINDS = ("langevin", "mala", "hmc", "diffusion")
#: Allowed integrators per sampler kind; the first one is the default.
SCHEMES = {
    "langevin": ("euler", "rk2"),
    "mala": ("euler",),
    "hmc": ("leapfrog", "omelyan"),
    "diffusion": ("none",),
}
#: Kind-dependent defaults filled in before validation.
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "langevin": {"step_size": 0.01, "scheme": "euler", "noise_precision": "single"},
    "mala": {"step_size": 0.01, "scheme": "euler"},
    "hmc": {"trajectory_length": 1.0, "steps": 10, "scheme": "leapfrog"},
    "diffusion": {"scheme": "none", "steps": 100},
}
#: Values that are part of the contract but not implemented yet: key -> (value, allowed).
_NOT_YET: dict[str, tuple[Any, tuple[str, ...]]] = {}
#: diffusion methods whose proposals carry an exact weight (Metropolis or reweighting)
DIFFUSION_DENSITY_METHODS = ("sde", "ode")
#: diffusion keys and the methods that use them (None: every method)
_DIFFUSION_KEYS: dict[str, tuple[str, ...] | None] = {
    "model": None,
    "method": None,
    "metropolis": None,
    "rtol": ("ode",),
    "atol": ("ode",),
    "max_steps": ("ode",),
    "divergence": ("ode",),
    "kernel": ("sde",),
    "snr": ("pc",),
    "corrector_steps": ("pc",),
    "steps_per_level": ("annealed",),
    "step_scale": ("annealed",),
}


# --------------------------------------------------------------------------- sections
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


_DIFFUSION_DEFAULTS: dict[str, dict[str, Any]] = {
    "ode": {"rtol": 1e-5, "atol": 1e-5, "max_steps": 4096, "divergence": "exact"},
    "sde": {"kernel": "analytic"},
    "pc": {"snr": 0.16, "corrector_steps": 1},
    "annealed": {"steps_per_level": 5, "step_scale": 0.1},
}


def _resolve_diffusion(data: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the diffusion defaults of the chosen method; refuse keys of other methods and
    Metropolis without a density."""
    for key in ("step_size", "trajectory_length"):
        if key in data:
            raise rule(key, "not used by diffusion")
    if data.get("fourier_acceleration") is True:
        raise rule("fourier_acceleration", "only available for langevin (kind = 'diffusion')")
    if "model" not in data:
        raise rule("model", "required key is missing (kind = 'diffusion': a model directory)")
    method = data.get("method", "sde")
    if method not in _DIFFUSION_DEFAULTS:
        return {**data, "method": method}  # reported by the field validation
    for key, users in _DIFFUSION_KEYS.items():
        if users is not None and method not in users and key in data:
            raise rule(key, f"only used by method = {users[0]!r} (method = {method!r})")
    exact = method in DIFFUSION_DENSITY_METHODS
    if data.get("metropolis", exact) is True and not exact:
        raise rule(
            "metropolis",
            f"needs method = 'sde' or 'ode', the ones with a density (method = {method!r});"
            " set metropolis = false for raw, approximate samples",
        )
    out = {**_KIND_DEFAULTS["diffusion"], "method": method, "metropolis": exact}
    out = {**out, **_DIFFUSION_DEFAULTS[method], **data}
    steps = out.get("steps")
    if method == "sde" and isinstance(steps, int) and not isinstance(steps, bool) and steps < 2:
        raise rule("steps", f"must be >= 2 for method = 'sde' (got {steps})")
    return out


class SamplerSection(Section):
    """``[sampler]``: the update algorithm; kind-dependent keys are resolved on validation."""

    kind: Literal["langevin", "mala", "hmc", "diffusion"]
    step_size: PosFloat | None = None  # langevin, mala
    scheme: StrictStr | None = None  # resolved per kind, see SCHEMES
    fourier_acceleration: StrictBool = False  # langevin only
    fourier_mass2: float | Literal["auto"] = "auto"
    noise_precision: Literal["single", "full"] | None = None  # langevin only
    trajectory_length: PosFloat | None = None  # hmc only
    steps: PosInt | None = None  # hmc: leapfrog steps; diffusion: time steps (sde, pc, annealed)
    cluster: Literal["none", "sw"] = "none"
    cluster_every: PosInt = 1
    # diffusion only (docs/diffusion.md)
    model: StrictStr | None = None
    method: Literal["ode", "sde", "pc", "annealed"] | None = None
    metropolis: StrictBool | None = None
    rtol: PosFloat | None = None
    atol: PosFloat | None = None
    max_steps: PosInt | None = None
    divergence: Literal["exact", "hutchinson"] | None = None
    kernel: Literal["analytic", "em"] | None = None
    snr: PosFloat | None = None
    corrector_steps: PosInt | None = None
    steps_per_level: PosInt | None = None
    step_scale: PosFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_for_kind(cls, data: Any) -> Any:
        """Refuse keys that do not apply to the kind and fill the kind's defaults."""
        if not isinstance(data, Mapping):
            return data
        for key, (value, allowed) in _NOT_YET.items():
            if data.get(key) == value:
                raise rule(
                    key,
                    f"{value!r} is not available in this version (allowed: {', '.join(allowed)})",
                )
        kind = data.get("kind")
        if kind not in KINDS:
            return data  # reported by the field validation
        if kind != "diffusion":
            for key in _DIFFUSION_KEYS:
                if key in data:
                    raise rule(key, f"only used by diffusion (kind = {kind!r})")
        else:
            return _resolve_diffusion(data)
        if kind == "hmc":
            if "step_size" in data:
                raise rule("step_size", "not used by hmc (its step is trajectory_length / steps)")
        else:
            for key in ("trajectory_length", "steps"):
                if key in data:
                    raise rule(key, f"only used by hmc (kind = {kind!r})")
        if kind != "langevin" and "noise_precision" in data:
            raise rule(
                "noise_precision",
                f"only used by langevin (kind = {kind!r}; exact samplers always draw at the "
                "run's precision)",
            )
        if kind != "langevin" and data.get("fourier_acceleration") is True:
            raise rule(
                "fourier_acceleration",
                f"only available for langevin (got true with kind = {kind!r})",
            )
        return {**_KIND_DEFAULTS[kind], **data}

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise rule("", "must name a trained model directory (got '')")
        return v

    @field_validator("fourier_mass2", mode="plain")
    @classmethod
    def _check_fourier_mass2(cls, v: Any) -> float | str:
        return positive_or_auto(v)

    @model_validator(mode="after")
    def _scheme_fits_kind(self) -> SamplerSection:
        allowed = SCHEMES[self.kind]
        if self.scheme not in allowed:
            raise rule(
                "scheme",
                f"must be one of {', '.join(allowed)} for kind = {self.kind!r}"
                f" (got {show(self.scheme)})",
            )
        return self

    @property
    def leapfrog_step(self) -> float | None:
        """HMC's integrator step trajectory_length / steps (None for other kinds)."""
        if self.kind != "hmc":
            return None
        return self.trajectory_length / self.steps


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
        None  # None: all local devices (see lattice.runs.sampling.chain_sharding)
    )
    #: global index of this run's first chain: its chains are first_chain … first_chain +
    #: chains − 1, with those chains' streams (a shard of a larger ensemble, docs/scaling.md)
    first_chain: NonNegInt = 0


class RunConfig(Document):
    """The fully resolved run config. Build it with :func:`load_config` or :func:`parse_config`."""

    name: StrictStr = "run"
    description: StrictStr = ""
    lattice: LatticeSection
    action: ActionSection
    sampler: SamplerSection
    run: RunSection = Field(default_factory=RunSection)

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


_SECTIONS: dict[str, type[BaseModel]] = {
    "lattice": LatticeSection,
    "action": ActionSection,
    "sampler": SamplerSection,
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


# sampler keys that only some kinds use
_KIND_KEYS = {
    "step_size": ("langevin", "mala"),
    "trajectory_length": ("hmc",),
    "steps": ("hmc", "diffusion"),
    "fourier_acceleration": ("langevin",),
    "fourier_mass2": ("langevin",),
    "noise_precision": ("langevin",),
    **{k: ("diffusion",) for k in _DIFFUSION_KEYS},
}


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
    kind = new.get("kind")
    explicit = {o.partition("=")[0].strip() for o in overrides}
    for key in list(new):
        if f"sampler.{key}" in explicit or key not in old:
            continue
        if key in _KIND_KEYS and kind not in _KIND_KEYS[key]:
            del new[key]
        elif key == "scheme" and kind in SCHEMES and new[key] not in SCHEMES[kind]:
            del new[key]


# --------------------------------------------------------------------------- helpers
def _min_cos(n: int) -> float:
    """min over p = 2πk/n of cos p: -1 on even axes, -cos(π/n) on odd ones, 1 for n = 1."""
    return -1.0 if n % 2 == 0 else -math.cos(math.pi / n)
