"""Every setting checked against its declaration (rules.py), then the few checks
that involve more than one setting or a grammar of its own."""

from __future__ import annotations

import dataclasses
from typing import Any, List, get_args, get_origin, get_type_hints

from facemoment.core.addresses import AddressError, parse_address
from facemoment.core.config.errors import ConfigError
from facemoment.core.config.rates import extractor_rates
from facemoment.core.config.rules import MAX_ITEMS, Rule, rule_of
from facemoment.core.config.cameras import cameras, stream_rates
from facemoment.core.config.sections import TABLES, Config, check_table_key, obs_input


def check_value(where: str, value: Any, hint: Any, rule: Rule) -> None:
    """One value against its field's type annotation and rule; ConfigError names `where`."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = get_origin(hint), get_args(hint)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r} is not a list")
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"{where} holds {len(value)} entries; at most {MAX_ITEMS} are allowed")
        for i, item in enumerate(value):
            check_value(f"{where}[{i}]", item, args[0], rule)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} is not true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r} is not a whole number")
        rule.check_number(where, value)
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} is not a number")
        rule.check_number(where, float(value))
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} is not text")
        rule.check_text(where, value)


def check_fields(section: Any, path: str) -> None:
    """Every field of a section (and of its nested sections) against its declaration."""
    hints = get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        where = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, where)
        elif path:  # Config's own `preset` list records what was applied; presets.py checks names
            check_value(where, value, hints[f.name], rule_of(f))


def validate(cfg: Config) -> Config:
    """The configuration, checked; raises ConfigError with one line naming the setting."""
    check_fields(cfg, "")
    for table in TABLES:
        for key, entry in getattr(cfg, table).items():
            check_table_key(table, key)
            check_fields(entry, f"{table}.{key}")
    ext = cfg.extract
    if ext.pose_backend == "yolo" and not ext.pose_model:
        raise ConfigError("pose backend yolo needs extract.pose_model (FACEMOMENT__EXTRACT__POSE_MODEL=/path/yolov8n-pose.onnx)")
    extractor_rates(ext)  # raises on a malformed entry
    if cfg.cameras:
        cameras(cfg)  # ids unique and well formed, every camera with a source
        stream_rates(cfg)  # each camera's own rates
    _check_addresses(cfg)
    return cfg


def _check_addresses(cfg: Config) -> None:
    try:
        if cfg.output.trig_address:
            parse_address(cfg.output.trig_address, "TRIG", unix=True)
        if cfg.output.obs_address:
            parse_address(cfg.output.obs_address, "OBS", unix=True)
        for entry in cfg.source.obs_inputs:
            parse_address(obs_input(entry, cfg.source.stream_id)[1], "OBS publisher", unix=True)
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc
