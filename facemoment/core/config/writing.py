"""A configuration as a TOML file that `load_config` reads back to an equal `Config`.

This is how a command that starts `python -m bytewax.run` in another process hands
it the configuration it built: the file is named by ``FACEMOMENT_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List

from facemoment.core.config.sections import TABLES, Config

# How an unset (None) setting is written: the loader reads it back as None.
NONE_TEXT = "none"


def _value(value: Any) -> str:
    if value is None:
        return json.dumps(NONE_TEXT)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(obj: Any, path: str, lines: List[str]) -> None:
    nested = []
    lines.append(f"[{path}]")
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f.name, value))
        else:
            lines.append(f"{f.name} = {_value(value)}")
    lines.append("")
    for name, value in nested:
        _table(value, f"{path}.{name}", lines)


def to_toml(cfg: Config) -> str:
    """Every setting of `cfg`. Its presets are named too (the run's summary lists them);
    applied again when the file loads, they change nothing: every value follows them."""
    lines = [f"preset = {_value(list(cfg.preset))}", ""]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _table(value, f.name, lines)
        elif f.name in TABLES:
            for key, entry in value.items():
                _table(entry, f"{f.name}.{key}", lines)
    return "\n".join(lines)


def as_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def write_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write `to_toml(cfg)` to `path` (atomically) and return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(to_toml(cfg), encoding="utf-8")
    os.replace(tmp, target)
    return target
