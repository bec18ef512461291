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

import copy
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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

Float = Annotated[float, Strict()]  # strict float still accepts int (stored as float)
PosFloat = Annotated[float, Strict(), Field(gt=0)]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]


class ConfigError(Exception):
    """A config that must not run; the message names the key path and what is allowed."""


def _rule(key: str, reason: str) -> PydanticCustomError:
    """A validation error at ``key`` (dotted, relative to the model raising it; "" = here)."""
    return PydanticCustomError("config_rule", "{reason}", {"key": key, "reason": reason})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- sections
class LatticeSection(_Section):
    """``[lattice]``: the periodic lattice."""

    shape: tuple[PosInt, ...] = Field(min_length=1)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return math.prod(self.shape)


class ActionSection(_Section):
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
            raise _rule(
                "",
                "must be >= 0 (the action is unbounded below for a negative quartic coupling;"
                f" got {_show(v)})",
            )
        return v

    @model_validator(mode="after")
    def _couplings_match_form(self) -> ActionSection:
        need, other = ("kappa", "m2") if self.form == "kappa" else ("m2", "kappa")
        if getattr(self, other) is not None:
            raise _rule(other, f'not used by form = "{self.form}" (its couplings: {need}, lambda)')
        if getattr(self, need) is None:
            raise _rule(need, f'required key is missing (form = "{self.form}")')
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
            raise _rule(key, "not used by diffusion")
    if data.get("fourier_acceleration") is True:
        raise _rule("fourier_acceleration", "only available for langevin (kind = 'diffusion')")
    if "model" not in data:
        raise _rule("model", "required key is missing (kind = 'diffusion': a model directory)")
    method = data.get("method", "sde")
    if method not in _DIFFUSION_DEFAULTS:
        return {**data, "method": method}  # reported by the field validation
    for key, users in _DIFFUSION_KEYS.items():
        if users is not None and method not in users and key in data:
            raise _rule(key, f"only used by method = {users[0]!r} (method = {method!r})")
    exact = method in DIFFUSION_DENSITY_METHODS
    if data.get("metropolis", exact) is True and not exact:
        raise _rule(
            "metropolis",
            f"needs method = 'sde' or 'ode', the ones with a density (method = {method!r});"
            " set metropolis = false for raw, approximate samples",
        )
    out = {**_KIND_DEFAULTS["diffusion"], "method": method, "metropolis": exact}
    out = {**out, **_DIFFUSION_DEFAULTS[method], **data}
    steps = out.get("steps")
    if method == "sde" and isinstance(steps, int) and not isinstance(steps, bool) and steps < 2:
        raise _rule("steps", f"must be >= 2 for method = 'sde' (got {steps})")
    return out


def positive_or_auto(v: Any) -> float | str:
    """Validate a key that takes a number > 0 or the string "auto" (a plain validator)."""
    if isinstance(v, str) and v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _rule("", f'expected a number > 0 or "auto" (got {_show(v)})')
    if not (math.isfinite(v) and v > 0):
        raise _rule("", f'must be > 0 or "auto" (got {_show(v)})')
    return float(v)


class SamplerSection(_Section):
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
                raise _rule(
                    key,
                    f"{value!r} is not available in this version (allowed: {', '.join(allowed)})",
                )
        kind = data.get("kind")
        if kind not in KINDS:
            return data  # reported by the field validation
        if kind != "diffusion":
            for key in _DIFFUSION_KEYS:
                if key in data:
                    raise _rule(key, f"only used by diffusion (kind = {kind!r})")
        else:
            return _resolve_diffusion(data)
        if kind == "hmc":
            if "step_size" in data:
                raise _rule("step_size", "not used by hmc (its step is trajectory_length / steps)")
        else:
            for key in ("trajectory_length", "steps"):
                if key in data:
                    raise _rule(key, f"only used by hmc (kind = {kind!r})")
        if kind != "langevin" and "noise_precision" in data:
            raise _rule(
                "noise_precision",
                f"only used by langevin (kind = {kind!r}; exact samplers always draw at the "
                "run's precision)",
            )
        if kind != "langevin" and data.get("fourier_acceleration") is True:
            raise _rule(
                "fourier_acceleration",
                f"only available for langevin (got true with kind = {kind!r})",
            )
        return {**_KIND_DEFAULTS[kind], **data}

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise _rule("", "must name a trained model directory (got '')")
        return v

    @field_validator("fourier_mass2", mode="plain")
    @classmethod
    def _check_fourier_mass2(cls, v: Any) -> float | str:
        return positive_or_auto(v)

    @model_validator(mode="after")
    def _scheme_fits_kind(self) -> SamplerSection:
        allowed = SCHEMES[self.kind]
        if self.scheme not in allowed:
            raise _rule(
                "scheme",
                f"must be one of {', '.join(allowed)} for kind = {self.kind!r}"
                f" (got {_show(self.scheme)})",
            )
        return self

    @property
    def leapfrog_step(self) -> float | None:
        """HMC's integrator step trajectory_length / steps (None for other kinds)."""
        if self.kind != "hmc":
            return None
        return self.trajectory_length / self.steps


class RunSection(_Section):
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
    devices: PosInt | None = None  # None: all local devices (see lattice.jobs.chain_sharding)
    #: global index of this run's first chain: its chains are first_chain … first_chain +
    #: chains − 1, with those chains' streams (a shard of a larger ensemble, docs/scaling.md)
    first_chain: NonNegInt = 0


class _Document(_Section):
    """A whole TOML document (run or train config): output as dict and TOML, and diffs."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict with TOML key names (``lambda``); keys that do not apply omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_toml(self) -> str:
        """The resolved config as TOML text; parsing it again gives an equal config."""
        data = self.to_dict()
        lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
        for section, table in data.items():
            if isinstance(table, dict):
                lines += ["", f"[{section}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        return "\n".join(lines) + "\n"

    def diff(self, other: _Document) -> list[str]:
        """Dotted key paths (``run.chains``, ``action.lambda``) whose resolved values differ."""
        a, b = (_flatten(c.model_dump(mode="json", by_alias=True)) for c in (self, other))
        return [k for k in a if a.get(k) != b.get(k)]


class RunConfig(_Document):
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
        unbounded = (
            f"the action is unbounded below (got {_show(a.kappa if a.m2 is None else a.m2)})"
        )
        if a.form == "mass":  # A(p) = 2 (m2 + p̂²), smallest at p = 0
            if a.m2 <= 0:
                raise _rule("action.m2", f"free field (lambda = 0) needs m2 > 0; {unbounded}")
            return self
        # A(p) = 2 − 4κ Σ_μ cos p_μ: Σ cos ranges over [s_min, d] on the lattice momenta
        k, s_min = a.kappa, sum(_min_cos(n) for n in shape)
        if k > 0 and 1.0 - 2.0 * k * d <= 0:
            raise _rule(
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
            raise _rule(
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
    return load_document(path, overrides, RunConfig, _SECTIONS)


def parse_config(
    source: str | Mapping[str, Any], overrides: Sequence[str] = (), *, origin: str = "<string>"
) -> RunConfig:
    """Validate TOML text or an already parsed dict; ``origin`` names the text in errors."""
    return parse_document(source, overrides, RunConfig, _SECTIONS, origin=origin)


def load_document(
    path: str | Path,
    overrides: Sequence[str],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
) -> Any:
    """Read a TOML file and validate it as ``root`` (with ``--set`` overrides applied)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: malformed TOML: the file is not UTF-8 text") from None
    return parse_document(text, overrides, root, sections, origin=str(path))


def parse_document(
    source: str | Mapping[str, Any],
    overrides: Sequence[str],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
    *,
    origin: str = "<string>",
) -> Any:
    """TOML text or a parsed dict, overrides applied, validated as ``root``; or ConfigError."""
    if isinstance(source, str):
        try:
            source = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: malformed TOML: {exc}") from None
    raw = apply_overrides(source, overrides)
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, root, sections)) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` (or ``key=value``) overrides applied.

    The value is parsed as a TOML value (``[8, 8]``, ``0.1``, ``true``, ``"x"``); text that is
    not valid TOML is taken as a bare string (``run.dtype=float32``). Unknown keys are not
    checked here but by the validation, like any other unknown key.
    """
    out = copy.deepcopy(dict(raw))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        key, text = ".".join(parts), text.strip()
        if not sep or not all(parts):
            raise ConfigError(
                f"{key or '--set'}: bad override {item!r}, expected section.key=value or"
                " key=value (e.g. run.chains=4)"
            )
        if not text:
            raise ConfigError(f"{key}: bad override {item!r}, the value after '=' is missing")
        table = out
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{'.'.join(parts[: i + 1])}: is not a table, cannot set {key} ({item!r})"
                )
        table[parts[-1]] = _parse_value(text)
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
def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _min_cos(n: int) -> float:
    """min over p = 2πk/n of cos p: -1 on even axes, -cos(π/n) on odd ones, 1 for n = 1."""
    return -1.0 if n % 2 == 0 else -math.cos(math.pi / n)


def _flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat


def _show(v: Any) -> str:
    """A value as the user wrote it (TOML-ish): 'str', true, 1.5, [8, 8]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "a table"
    return str(v)


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else f"{v:+}"[0] + "inf")
    if isinstance(v, str):
        return '"' + "".join(_toml_char(c) for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def _toml_char(c: str) -> str:
    if c in _TOML_ESCAPES:
        return _TOML_ESCAPES[c]
    return f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c


_EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected a boolean (true or false)",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "dict_type": "expected a table",
    "finite_number": "must be a finite number",
}


def describe_errors(
    exc: ValidationError, root: type[BaseModel], sections: Mapping[str, type[BaseModel]]
) -> str:
    """One line for all errors of a validation, each starting with its dotted key path.

    ``root`` is the document model and ``sections`` its tables (to list the allowed keys)."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    lines = []
    for e, loc in zip(errors, locs, strict=True):
        # a list with a bad entry also reports "too short" for the entries that survived
        if e["type"] == "too_short" and any(
            len(o) > len(loc) and o[: len(loc)] == loc for o in locs
        ):
            continue
        lines.append(_describe_one(e, loc, root, sections))
    return "; ".join(dict.fromkeys(lines))


def _describe_one(
    e: Mapping[str, Any],
    loc: tuple[str | int, ...],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
) -> str:
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "config_rule":
        loc += tuple(k for k in ctx["key"].split(".") if k)
        return f"{_path(loc)}: {ctx['reason']}"
    if kind == "missing":
        what = "section" if len(loc) == 1 and loc[0] in sections else "key"
        return f"{_path(loc)}: required {what} is missing"
    if kind == "extra_forbidden":
        model = sections.get(loc[0]) if len(loc) > 1 else root
        allowed = ", ".join(f.alias or n for n, f in model.model_fields.items())
        what = "section" if len(loc) == 1 and isinstance(value, Mapping) else "key"
        return f"{_path(loc)}: unknown {what} (allowed: {allowed})"
    if kind == "literal_error":
        text = "must be one of " + ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
    elif kind == "greater_than":
        text = f"must be > {ctx['gt']:g}"
    elif kind == "greater_than_equal":
        text = f"must be >= {ctx['ge']:g}"
    elif kind == "less_than":
        text = f"must be < {ctx['lt']:g}"
    elif kind == "less_than_equal":
        text = f"must be <= {ctx['le']:g}"
    elif kind == "too_short":
        n = ctx["min_length"]
        text = f"must have at least {n} entr{'y' if n == 1 else 'ies'}"
    else:
        text = _EXPECTED.get(kind) or e["msg"][:1].lower() + e["msg"][1:]
    return f"{_path(loc)}: {text} (got {_show(value)})"


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"
