"""Building a configuration: defaults, presets, a TOML file, the environment, overrides.

Precedence, lowest first:

1. the defaults (sections.py, the seed design's numbers),
2. the presets named in ``FACEMOMENT_PRESET`` (comma separated, applied in order),
   then those passed in ``presets``,
3. a TOML file named by ``FACEMOMENT_CONFIG`` or ``path`` (its own ``preset = ...``
   key counts as 2),
4. environment variables: the public names in ``ENV_NAMES`` and, for every other
   field, ``FACEMOMENT__<SECTION>__<FIELD>`` (e.g. ``FACEMOMENT__FUSION__COOLDOWN_SEC=3``),
5. ``settings``: a mapping such as ``{"fusion.cooldown_sec": 3}`` (the command line's
   options and the Python API's overrides).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from facemoment.core.config.assign import apply_mapping, nest, set_value
from facemoment.core.config.errors import ConfigError
from facemoment.core.config.presets import apply_preset
from facemoment.core.config.sections import Config
from facemoment.core.config.validation import validate

# The public environment names scripts rely on.
ENV_NAMES: Dict[str, Tuple[str, str]] = {
    "FACEMOMENT_SOURCE": ("source", "source"),
    "FACEMOMENT_STREAM_ID": ("source", "stream_id"),
    "FACEMOMENT_IDLE_TIMEOUT_S": ("source", "idle_timeout_s"),
    "FACEMOMENT_TRIG_ADDRESS": ("output", "trig_address"),
    "FACEMOMENT_OBS_ADDRESS": ("output", "obs_address"),
    "FACEMOMENT_OBS_INPUTS": ("source", "obs_inputs"),
    "FACEMOMENT_TRIG_TIMING": ("output", "trig_timing"),
    "FACEMOMENT_OUTPUT_DIR": ("output", "output_dir"),
    "FACEMOMENT_TRACE": ("output", "trace"),
    "FACEMOMENT_READY_FILE": ("output", "ready_file"),
}
# A configuration file larger than this is not one a person wrote.
MAX_FILE_BYTES = 1024 * 1024


def read_file(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """A TOML configuration file's contents; every problem is one ConfigError line."""
    where = f"configuration file {path}"
    file = Path(path)
    try:
        if file.is_dir():
            raise ConfigError(f"{where} is a directory, not a TOML file")
        if not file.exists():
            raise ConfigError(f"{where} does not exist")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{where} is larger than {MAX_FILE_BYTES // 1024} KiB; not a configuration file")
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (a binary file?)") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc


def apply_settings(cfg: Config, settings: Mapping[str, Any], where: str = "settings") -> Config:
    """Apply `{"fusion": {"cooldown_sec": 3}}` or `{"fusion.cooldown_sec": 3}` and validate."""
    apply_mapping(cfg, nest(settings, where), where)
    return validate(cfg)


def load_config(
    env: Optional[Mapping[str, str]] = None,
    path: Optional[str | os.PathLike[str]] = None,
    presets: Optional[List[str]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Build the configuration from defaults, presets, a TOML file, the environment and `settings`."""
    env = os.environ if env is None else env
    cfg = Config()
    file_data: Dict[str, Any] = {}
    path = path if path is not None else env.get("FACEMOMENT_CONFIG") or None
    if path:
        file_data = read_file(path)

    names: List[str] = []
    file_preset = file_data.get("preset")
    if file_preset:
        if not isinstance(file_preset, (str, list)):
            raise ConfigError(f"configuration file {path}: preset must be a name or a list of names")
        # A string is comma separated, as FACEMOMENT_PRESET.
        names += file_preset.split(",") if isinstance(file_preset, str) else [str(p) for p in file_preset]
    if env.get("FACEMOMENT_PRESET"):
        names += env["FACEMOMENT_PRESET"].split(",")
    names += presets or []
    for name in names:
        if name.strip():
            apply_preset(cfg, name)

    apply_mapping(cfg, file_data, f"configuration file {path}")

    for var, (section, name) in ENV_NAMES.items():
        if var in env:
            set_value(cfg, section, name, env[var], var)
    for var, value in env.items():
        if var.startswith("FACEMOMENT__"):
            parts = var[len("FACEMOMENT__"):].lower().split("__")
            if len(parts) < 2:
                raise ConfigError(f"{var}: expected FACEMOMENT__SECTION__FIELD")
            set_value(cfg, ".".join(parts[:-1]), parts[-1], value, var)
    if settings:
        apply_mapping(cfg, nest(settings, "settings"), "settings")
    return validate(cfg)
