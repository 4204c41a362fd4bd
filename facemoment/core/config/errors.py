"""The one error every configuration problem raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value, file or preset that cannot be used."""
