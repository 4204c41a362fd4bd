"""One typed configuration for the whole dataflow.

The modules import one way, each only from those above it:

- ``errors``: :class:`ConfigError`;
- ``rules``: how a setting declares its range, choices or grammar;
- ``sections``: every setting with its default and rule, once;
- ``rates``: the declared extractor rates (``extract.every``);
- ``cameras``: the run's cameras (a ``[cameras.NAME]`` table, or ``source.source`` and
  ``source.extra``) and their rates per stream;
- ``validation``: a configuration checked against the declarations;
- ``aliases``: the frame-counted fusion settings of the previous release, in seconds;
- ``assign``: setting fields by path from text or TOML values;
- ``presets``: named partial configurations;
- ``loading``: defaults, presets, TOML file, environment and overrides in order;
- ``writing``: a configuration as a TOML file for another process.
"""

from facemoment.core.config.errors import ConfigError
from facemoment.core.config.rules import Rule, rule_of, setting
from facemoment.core.config.sections import (
    DROP_STRATEGIES,
    KNOWN_EXTRACTORS,
    KNOWN_REASONS,
    TRIG_TIMINGS,
    AlignConfig,
    BudgetConfig,
    CameraConfig,
    Config,
    ExtractConfig,
    FusionConfig,
    GateConfig,
    OutputConfig,
    QualityConfig,
    SourceConfig,
    obs_input,
)
from facemoment.core.config.rates import Rate, extractor_rates, is_due
from facemoment.core.config.cameras import Camera, StreamRates, cameras, stream_rates
from facemoment.core.config.validation import validate
from facemoment.core.config.assign import apply_mapping
from facemoment.core.config.presets import PRESETS, apply_preset
from facemoment.core.config.loading import ENV_NAMES, apply_settings, load_config, read_file
from facemoment.core.config.writing import as_dict, to_toml, write_config


__all__ = [
    "ConfigError", "Rule", "rule_of", "setting",
    "DROP_STRATEGIES", "KNOWN_EXTRACTORS", "KNOWN_REASONS", "TRIG_TIMINGS",
    "AlignConfig", "BudgetConfig", "CameraConfig", "Camera", "StreamRates", "cameras", "stream_rates", "Config", "ExtractConfig", "FusionConfig", "GateConfig", "OutputConfig",
    "QualityConfig", "SourceConfig", "obs_input",
    "Rate", "extractor_rates", "is_due", "validate", "apply_mapping", "PRESETS", "apply_preset",
    "ENV_NAMES", "apply_settings", "load_config", "read_file", "to_toml", "write_config", "as_dict",
]
