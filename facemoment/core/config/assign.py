"""Setting one field by its section path, from text (environment) or TOML values."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Mapping, get_args, get_origin, get_type_hints

from facemoment.core.config.errors import ConfigError
from facemoment.core.config.aliases import FRAME_ALIASES, from_frames
from facemoment.core.config.sections import TABLES, Config, check_table_key


def section_of(cfg: Config, path: str) -> Any:
    """The section object at a dotted path ("fusion.gate", "cameras.gate_a").

    In a table of sections (`TABLES`) the part after the table's name is an entry's
    key; a key not there yet gets a new section with its defaults.
    """
    obj: Any = cfg
    parts = path.split(".")
    i = 0
    while i < len(parts):
        part = parts[i]
        if obj is cfg and part in TABLES:
            if i + 1 >= len(parts):
                raise ConfigError(f"settings of {part!r} sit in a named entry, e.g. [{part}.NAME]")
            key = parts[i + 1]
            check_table_key(part, key)
            table = getattr(cfg, part)
            if key not in table:
                table[key] = TABLES[part]()
            obj = table[key]
            i += 2
            continue
        if not hasattr(obj, part) or not dataclasses.is_dataclass(getattr(obj, part)):
            raise ConfigError(f"unknown configuration section {path!r}")
        obj = getattr(obj, part)
        i += 1
    return obj


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's declared type (ranges are validation's)."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(value, inner, where)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if isinstance(value, (Mapping, list, bool)):
                raise ValueError(value)
            return str(value)
        if origin in (list, List):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(value)
            return [coerce(v, args[0], where) for v in value]
    except (TypeError, ValueError, OverflowError) as exc:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ConfigError(f"{where}: cannot use {shown} as {getattr(hint, '__name__', hint)}") from exc
    return value


def set_value(cfg: Config, section: str, name: str, value: Any, where: str) -> None:
    if (section, name) in FRAME_ALIASES:  # a frame-counted setting of the previous release
        section, name, value = from_frames(section, name, value, where)
    target = section_of(cfg, section)
    hints = get_type_hints(type(target))
    if name not in hints or dataclasses.is_dataclass(getattr(target, name)):
        raise ConfigError(f"{where}: unknown setting {section}.{name}")
    setattr(target, name, coerce(value, hints[name], f"{where}: {section}.{name}"))


def apply_mapping(cfg: Config, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """Nested `{section: {field: value}}` (a TOML file's shape) onto `cfg`; top-level `preset` is skipped."""
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            if prefix in TABLES:
                check_table_key(prefix, key)  # before it joins a dotted path
                section_of(cfg, path)  # an entry with no setting of its own still exists
            apply_mapping(cfg, value, where, path)
            continue
        if not prefix:
            if key == "preset":
                continue  # presets apply before the rest (loading.py)
            raise ConfigError(f"{where}: setting {key!r} must sit inside a [section]")
        set_value(cfg, prefix, key, value, where)


def nest(settings: Mapping[str, Any], where: str) -> dict:
    """`{"fusion.cooldown_sec": 3}` / `{"fusion__cooldown_sec": 3}` / `{"fusion": {...}}` as one nested mapping."""
    nested: dict = {}
    for key, value in settings.items():
        *sections, name = key.replace("__", ".").split(".")
        if not sections:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: setting {key!r} needs its section, e.g. fusion.{key}")
            nested.setdefault(key, {}).update(value)
            continue
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return nested
