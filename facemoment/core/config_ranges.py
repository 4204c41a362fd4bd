"""The allowed range of every numeric setting, checked when a configuration loads.

A value outside its range stops the start-up with the setting's name and range,
instead of odd behaviour later (a negative cooldown, TRIG times past 2^64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Tuple

if TYPE_CHECKING:
    from facemoment.core.config import Config


_INF = float("inf")
# (section, field, lowest, highest, lowest allowed itself); None fields are skipped.
RANGES: List[Tuple[str, str, float, float, bool]] = [
    ("source", "shares", 0, 1024, True),
    ("source", "fps", 0, 1000, False),
    ("source", "idle_timeout_s", 0, _INF, False),
    ("source", "buffer_frames", 0, 100_000, True),
    ("source", "keyframe_interval", 1, 100_000, True),
    ("source", "max_frame_mb", 0, 4096, False),
    ("source", "buffer_max_mb", 0, 65536, False),
    ("source", "max_time_jump_s", 0, 86_400 * 365, True),
    ("extract", "max_faces", 1, 100, True),
    ("extract", "min_detection_confidence", 0, 1, True),
    ("extract", "deadline_ms", 0, 60_000, True),
    ("align", "window_ms", 0, 60_000, False),
    ("align", "allowed_lateness_ms", 0, 3_600_000, True),
    ("align", "idle_flush_ms", 0, 3_600_000, False),
    ("fusion", "cooldown_sec", 0, 86_400, True),
    ("fusion", "confirm_sec", 0, 60, True),
    ("fusion", "pre_sec", 0, 3600, True),
    ("fusion", "post_sec", 0, 3600, True),
    ("fusion", "ewma_tau_sec", 0, 3600, False),
    ("fusion", "spike_z", 0, 100, True),
    ("fusion", "lookback_sec", 0, 600, False),
    ("fusion", "lookback_default_sec", 0, 600, True),
    ("fusion", "wave_window_sec", 0, 60, False),
    ("fusion.gate", "open_duration_sec", 0, 3600, True),
    ("fusion.gate", "close_duration_sec", 0, 3600, True),
    ("fusion.gate", "min_faces", 0, 100, True),
    ("fusion.gate", "max_faces", 1, 100, True),
    ("output", "ring_buffer_sec", 0, 86_400, False),
    ("output", "ring_buffer_max_mb", 0, 1_048_576, False),
    ("output", "jpeg_quality", 1, 100, True),
    ("output", "metrics_port", 1, 65535, True),
]


def check_ranges(cfg: "Config") -> None:
    """Every numeric setting in its range (NaN and infinities are outside every one)."""
    from facemoment.core.config import ConfigError, _section  # config imports this module

    for section, name, low, high, low_ok in RANGES:
        value = getattr(_section(cfg, section), name)
        if value is None:
            continue
        above = value >= low if low_ok else value > low
        if not (above and value <= high and value == value):
            bounds = f"{'[' if low_ok else '('}{low:g}, {high:g}]"
            raise ConfigError(f"{section}.{name} = {value!r} is out of range {bounds}")
