"""What every config document shares: TOML in, strict pydantic validation, one-line errors.

Every problem is reported as a :class:`ConfigError` whose one-line message starts with the
dotted key path (``sampler.step_size: must be > 0 (got -0.1)``); several problems found in one
pass are joined by ``"; "``. Types are strict: no str -> int coercion, bool is not an integer,
integers are accepted (and stored) as floats, non-finite floats are refused.
"""

from __future__ import annotations

import copy
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic_core import PydanticCustomError

from lattice.errors import LatticeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "Float",
    "PosFloat",
    "PosInt",
    "NonNegInt",
    "positive_or_auto",
    "MAX_CONFIG_BYTES",
    "read_config_text",
    "load_toml",
    "load_document",
    "parse_document",
    "apply_overrides",
    "describe_errors",
]

Float = Annotated[float, Strict()]  # strict float still accepts int (stored as float)
PosFloat = Annotated[float, Strict(), Field(gt=0)]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]


class ConfigError(LatticeError):
    """A config that must not run; the message names the key path and what is allowed."""


def rule(key: str, reason: str) -> PydanticCustomError:
    """A validation error at ``key`` (dotted, relative to the model raising it; "" = here)."""
    return PydanticCustomError("config_rule", "{reason}", {"key": key, "reason": reason})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def positive_or_auto(v: Any) -> float | str:
    """Validate a key that takes a number > 0 or the string "auto" (a plain validator)."""
    if isinstance(v, str) and v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise rule("", f'expected a number > 0 or "auto" (got {show(v)})')
    if not (math.isfinite(v) and v > 0):
        raise rule("", f'must be > 0 or "auto" (got {show(v)})')
    return float(v)


class Document(Section):
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

    def diff(self, other: Document) -> list[str]:
        """Dotted key paths (``run.chains``, ``action.lambda``) whose resolved values differ."""
        a, b = (_flatten(c.model_dump(mode="json", by_alias=True)) for c in (self, other))
        # a table may hold other keys in the other document (another sampler kind): the keys
        # of each table in this document's order, then the other's extra ones
        keys: dict[str, list[str]] = {}
        for k in [*a, *(k for k in b if k not in a)]:
            keys.setdefault(k.partition(".")[0] if "." in k else "", []).append(k)
        order = [k for table in keys.values() for k in table]
        return [k for k in order if a.get(k) != b.get(k)]


def load_document(
    path: str | Path,
    overrides: Sequence[str],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
    *,
    adjust: Callable[[Mapping[str, Any], dict[str, Any], Sequence[str]], None] | None = None,
) -> Any:
    """Read a TOML file and validate it as ``root`` (with ``--set`` overrides applied)."""
    text = read_config_text(path)
    return parse_document(text, overrides, root, sections, origin=str(path), adjust=adjust)


#: the largest config file read (docs/config.md, "Limits"): a config is a few hundred bytes,
#: so a larger file is a wrong one (a data file, a log), refused before it is read whole
MAX_CONFIG_BYTES = 1 << 20


def read_config_text(path: str | Path) -> str:
    """The text of a config file, the one way every config file is read; or a ConfigError
    naming the file. It must be a regular file (a FIFO or a device is refused without being
    opened: reading one would wait for a writer or never end) of at most
    :data:`MAX_CONFIG_BYTES`, looked at before reading and enforced while reading, in UTF-8."""
    path = Path(path)
    limit = MAX_CONFIG_BYTES
    size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
    too_large = f"{path}: larger than {size}, the limit for a config file"
    try:
        _require_regular(path, os.stat(path).st_mode)
        # O_NONBLOCK: a file swapped for a FIFO since the stat does not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            _require_regular(path, st.st_mode)
            if st.st_size > limit:
                raise ConfigError(too_large)
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ConfigError(too_large)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: malformed TOML: the file is not UTF-8 text") from None


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket")]  # fmt: skip
        kind = next((k for test, k in kinds if test(mode)), "a special file")
        raise ConfigError(f"{path}: not a regular file ({kind}); a config must be a file")


def load_toml(text: str, origin: str) -> dict[str, Any]:
    """TOML text as a dict, or a ConfigError naming ``origin``: malformed, or nested too
    deeply for the parser."""
    try:
        return _guard_depth(tomllib.loads, text, origin=origin)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: malformed TOML: {exc}") from None


def _guard_depth(fn: Callable[..., Any], *args: Any, origin: str) -> Any:
    """``fn(*args)``; a RecursionError (TOML arrays or tables nested thousands of levels deep
    in the parser, the copy or the validation) becomes a ConfigError naming ``origin``."""
    try:
        return fn(*args)
    except RecursionError:
        raise ConfigError(
            f"{origin}: nested too deeply (arrays or tables inside one another, more levels"
            " than a config has)"
        ) from None


def parse_document(
    source: str | Mapping[str, Any],
    overrides: Sequence[str],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
    *,
    origin: str = "<string>",
    adjust: Callable[[Mapping[str, Any], dict[str, Any], Sequence[str]], None] | None = None,
) -> Any:
    """TOML text or a parsed dict, overrides applied, validated as ``root``; or ConfigError."""
    if isinstance(source, str):
        source = load_toml(source, origin)
    return _guard_depth(_validate, source, overrides, root, sections, adjust, origin=origin)


def _validate(
    source: Mapping[str, Any],
    overrides: Sequence[str],
    root: type[BaseModel],
    sections: Mapping[str, type[BaseModel]],
    adjust: Callable[[Mapping[str, Any], dict[str, Any], Sequence[str]], None] | None,
) -> Any:
    raw = apply_overrides(source, overrides)
    if adjust is not None:
        adjust(source, raw, overrides)
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, root, sections)) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` (or ``key=value``) overrides applied.

    The value is parsed as a TOML value (``[8, 8]``, ``0.1``, ``true``, ``"x"``); text that is
    not valid TOML is taken as a bare string (``run.dtype=float32``). Unknown keys are not
    checked here but by the validation, like any other unknown key. A table as the value
    (``run={chains=2}``) is refused: it would replace the whole table and drop the keys it
    does not name.
    """
    out = copy.deepcopy(dict(raw))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        if "\n" in item or "\r" in item:
            # TOML would read the next line as another key, and the value ignores it
            first = item.splitlines()[0].partition("=")[0].strip()
            raise ConfigError(
                f"{first or '--set'}: bad override {item!r}, a line break in it; give one"
                " key=value per --set"
            )
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
        value = _guard_depth(_parse_value, text, origin=key)
        if isinstance(value, dict):
            # a table given whole would silently drop the keys it does not name
            raise ConfigError(
                f"{key}: --set takes one key at a time, not a whole table ({item!r}); "
                f"set its keys instead, e.g. {key}.<key>=value"
            )
        table[parts[-1]] = value
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat


def show(v: Any) -> str:
    """A value as the user wrote it (TOML-ish): 'str', true, 1.5, [8, 8]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show(x) for x in v) + "]"
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
    exc: ValidationError, root: type[BaseModel], sections: Mapping[str, Any]
) -> str:
    """One line for all errors of a validation, each starting with its dotted key path.

    ``root`` is the document model and ``sections`` its tables (to list the allowed keys); a
    table that is a union discriminated on ``kind`` is given as {kind: model}."""
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
    model = sections.get(loc[0]) if len(loc) > 1 else root
    if loc and isinstance(sections.get(loc[0]), Mapping):  # a union discriminated on "kind"
        tags = sections[loc[0]]
        if kind == "union_tag_invalid":
            return f"{_path(loc)}.kind: must be one of {', '.join(tags)} (got {show(ctx['tag'])})"
        if kind == "union_tag_not_found":
            if not isinstance(value, Mapping):
                return f"{_path(loc)}: expected a table (got {show(value)})"
            return f"{_path(loc)}.kind: required key is missing"
        if len(loc) > 1 and loc[1] in tags:  # the tag is not a key of the file
            model, loc = tags[loc[1]], loc[:1] + loc[2:]
    if kind == "config_rule":
        loc += tuple(k for k in ctx["key"].split(".") if k)
        return f"{_path(loc)}: {ctx['reason']}"
    if kind == "missing":
        what = "section" if len(loc) == 1 and loc[0] in sections else "key"
        return f"{_path(loc)}: required {what} is missing"
    if kind == "extra_forbidden":
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
    return f"{_path(loc)}: {text} (got {show(value)})"


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"
