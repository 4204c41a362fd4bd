"""Command-line options as configuration settings: every command builds a `Config`.

The options become `settings` of :func:`facemoment.core.config.load_config`, the
highest precedence (above the environment and the configuration file). A command
that starts `python -m bytewax.run` in another process hands it that `Config` as a
TOML file named by ``FACEMOMENT_CONFIG`` (:func:`child_environment`), nothing else.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from facemoment.core.config import ENV_NAMES, Config, write_config


def _is_config_variable(name: str) -> bool:
    """A variable `load_config` reads (a child given the whole configuration must not
    read them again on top of it); FACEMOMENT_MODEL_DIR and the like stay."""
    return name.startswith("FACEMOMENT__") or name in ENV_NAMES or name in ("FACEMOMENT_PRESET", "FACEMOMENT_CONFIG")


def option_settings(args: argparse.Namespace, **settings: str) -> Dict[str, Any]:
    """`{"section.field": value}` for every `option="section.field"` the user gave.

    An option left out (None) or given empty sets nothing, so the environment and
    the configuration file keep their say.
    """
    given: Dict[str, Any] = {}
    for option, path in settings.items():
        value = getattr(args, option)
        if value is not None and value != "":
            given[path] = value
    return given


def preset_names(option: Optional[str]) -> Optional[List[str]]:
    """`--preset a,b` as names; None when the option was left out."""
    if option is None:
        return None
    return [name.strip() for name in option.split(",") if name.strip()]


def config_environment(presets: Optional[List[str]], environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment a command's configuration is loaded from: `--preset` replaces
    ``FACEMOMENT_PRESET`` instead of adding to it."""
    env = dict(os.environ if environ is None else environ)
    if presets is not None:
        env.pop("FACEMOMENT_PRESET", None)
    return env


def child_environment(cfg: Config, config_path: Path, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of a child `python -m bytewax.run` process: `cfg` written to
    `config_path` and named by ``FACEMOMENT_CONFIG``; no other configuration variable."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if not _is_config_variable(k)}
    env["FACEMOMENT_CONFIG"] = str(write_config(cfg, config_path))
    return env
