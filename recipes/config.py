"""Recipe configs: YAML (``yaml.safe_load``) checked against a small schema, with errors naming the key.

A schema is a dict ``key -> Field``; a nested section is a ``Field`` whose ``schema`` is another dict.
:func:`validate` fills defaults, rejects unknown keys (with a "did you mean" hint), wrong types, values
outside ``choices`` or failing ``check``, and reports the dotted key path (``tune.method``) and, when
the YAML is read from a file, the line it is on.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import InputError

__all__ = ["ConfigError", "Field", "load_config", "validate"]

_MISSING = object()


class ConfigError(InputError):
    """A bad recipe config; ``.field`` is the dotted key path."""


@dataclass(frozen=True)
class Field:
    """One config key: its type(s), default (``required`` if none), and optional checks."""

    types: type | tuple[type, ...] = object
    default: Any = _MISSING
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    """Returns an error message, or None when the value is fine."""
    schema: Mapping[str, Field] | None = None
    """A nested section (the value must be a mapping)."""
    items: Field | None = None
    """For lists: the field every item must satisfy."""
    values: Field | None = None
    """For free-form mappings (any keys): the field every value must satisfy."""
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.schema is None


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


MAX_FLOW_DEPTH = 64
"""Deepest ``[``/``{`` nesting a config may have."""


def refuse_aliases(text: str, path: str | Path = "<config>") -> None:
    """Refuse YAML anchors and aliases before anything expands them (a few hundred bytes of nested
    aliases expand to gigabytes: a "billion laughs"). Recipe configs never need them. Flow brackets
    nested deeper than :data:`MAX_FLOW_DEPTH` are refused first (PyYAML's scanner slows down on them)."""
    depth = top = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            top = max(top, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    if top > MAX_FLOW_DEPTH:
        raise ConfigError(f"YAML nested too deeply ({top} levels of [ or {{; at most {MAX_FLOW_DEPTH})", path=path)
    try:
        for tok in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(tok, (yaml.AnchorToken, yaml.AliasToken)):
                kind = "anchor" if isinstance(tok, yaml.AnchorToken) else "alias"
                raise ConfigError(
                    f"YAML {kind} {'&' if kind == 'anchor' else '*'}{tok.value} is not allowed in configs "
                    "(write the value out)",
                    path=path,
                    line=tok.start_mark.line + 1,
                )
    except yaml.YAMLError:
        return  # safe_load reports the syntax error with its line


def _line_map(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line, from the YAML node tree (best effort; aliases are refused
    earlier by :func:`refuse_aliases`, so nothing here expands)."""
    out: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}[{i}]"
                out[key] = v.start_mark.line + 1
                walk(v, key)

    if root is not None:
        walk(root, "")
    return out


def validate(
    data: Any, schema: Mapping[str, Field], *, source: str | Path = "<config>", lines: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """A validated deep copy of ``data`` with defaults filled in; raises :class:`ConfigError`."""
    lines = lines or {}

    def fail(msg: str, key: str) -> ConfigError:
        return ConfigError(msg, path=source, line=lines.get(key), field=key or None)

    def check_value(value: Any, f: Field, key: str) -> Any:
        if f.schema is not None:
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise fail(f"must be a mapping (a YAML section), got {type(value).__name__}", key)
            return section(value, f.schema, key)
        if value is None and f.default is None:
            return None
        ok_types = f.types if isinstance(f.types, tuple) else (f.types,)
        if float in ok_types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if bool not in ok_types and isinstance(value, bool) and (int in ok_types or float in ok_types):
            raise fail(f"must be {_type_name(f.types)}, got a boolean", key)
        if not isinstance(value, f.types):
            raise fail(f"must be {_type_name(f.types)}, got {type(value).__name__} {value!r}", key)
        if f.choices is not None and value not in f.choices:
            raise fail(f"must be one of {list(f.choices)}, got {value!r}", key)
        if f.items is not None:
            assert isinstance(value, (list, tuple))
            value = [check_value(v, f.items, f"{key}[{i}]") for i, v in enumerate(value)]
        if f.values is not None:
            value = {str(k): check_value(v, f.values, f"{key}.{k}") for k, v in value.items()}
        if f.check is not None:
            msg = f.check(value)
            if msg:
                raise fail(msg, key)
        return copy.deepcopy(value)

    def section(d: Mapping[str, Any], sch: Mapping[str, Field], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in d:
            if k not in sch:
                key = f"{prefix}.{k}" if prefix else str(k)
                hint = difflib.get_close_matches(str(k), list(sch), n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(sch)}"
                raise fail(f"unknown key {k!r}{extra}", key)
        for k, f in sch.items():
            key = f"{prefix}.{k}" if prefix else k
            if k in d:
                out[k] = check_value(d[k], f, key)
            elif f.schema is not None:
                out[k] = section({}, f.schema, key)
            elif f.required:
                raise fail(f"missing required key {k!r}" + (f" ({f.doc})" if f.doc else ""), key)
            else:
                out[k] = copy.deepcopy(f.default)
        return out

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a YAML mapping, got {type(data).__name__}", path=source)
    return section(data, schema, "")


def load_config(path: str | Path, schema: Mapping[str, Field], overrides: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """Read a YAML config with ``yaml.safe_load`` and validate it; ``overrides`` are dotted keys."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory, not a YAML config", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror}", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not valid UTF-8 (byte {e.start})", path=path) from None
    refuse_aliases(text, path)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("YAML nested too deeply", path=path) from None
    except ValueError as e:  # an integer over Python's digit limit
        raise ConfigError(f"invalid YAML number: {str(e).split(';')[0]}", path=path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", path=path,
                          line=None if mark is None else mark.line + 1) from None  # fmt: skip
    for dotted, v in (overrides or {}).items():
        if not isinstance(data, dict):
            break
        cur = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"override {dotted!r}: {p!r} is not a section", path=path, field=dotted)
        cur[parts[-1]] = v
    return validate(data, schema, source=path, lines=_line_map(text))


def positive(x: Any) -> str | None:
    return None if x > 0 else f"must be > 0, got {x}"


def non_negative(x: Any) -> str | None:
    return None if x >= 0 else f"must be >= 0, got {x}"


def non_empty(x: Any) -> str | None:
    return None if len(x) > 0 else "must not be empty"


