"""The frame-counted fusion settings of the previous release, still accepted for one release.

The rules now count event time (docs/algorithms.md, "Rules in seconds"), so a camera
analysed at 10 fps fires what it fires at 30 fps. A configuration that still names
an old setting (TOML, environment, preset) gets the seconds setting with the same
meaning at 30 fps. Durations that count N frames or samples sit half a frame below
the N-th (`(N - 0.5) / 30`), so timestamp jitter never changes the count at 30 fps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

from facemoment.core.config.errors import ConfigError

# The frame rate the frame-counted defaults were tuned at.
ALIAS_FPS = 30.0


def _frames(n: float) -> float:
    """N frames (or samples) at 30 fps as a duration, half a frame short of the N-th."""
    return round((n - 0.5) / ALIAS_FPS, 4)


def _confirm(n: float) -> float:
    # One frame: any frame confirms.
    if n < 1:
        raise ValueError(n)
    return 0.0 if n <= 1 else _frames(n)


def _tau(alpha: float) -> float:
    # alpha per 30 fps frame = 1 - exp(-dt / tau)
    if not 0.0 < alpha < 1.0:
        raise ValueError(alpha)
    return round(-1.0 / (ALIAS_FPS * math.log(1.0 - alpha)), 4)


def _back(n: float) -> float:
    # N frames back: a time span, not a frame to find, so exactly N frame periods.
    return max(0.0, round(n / ALIAS_FPS, 4))


# (section, old name) -> (new name, conversion, what the old value counts)
FRAME_ALIASES: Dict[Tuple[str, str], Tuple[str, Callable[[float], float], str]] = {
    ("fusion", "consecutive_frames"): ("confirm_sec", _confirm, "frames"),
    ("fusion", "ewma_alpha"): ("ewma_tau_sec", _tau, "a weight per frame in (0, 1)"),
    ("fusion", "lookback_observations"): ("lookback_sec", _frames, "frames"),
    ("fusion", "lookback_default"): ("lookback_default_sec", _back, "frames"),
    ("fusion", "wave_window_frames"): ("wave_window_sec", _frames, "samples"),
}


def from_frames(section: str, name: str, value: Any, where: str) -> Tuple[str, str, float]:
    """(section, new name, seconds) for an old frame-counted setting, converted at 30 fps."""
    new, convert, unit = FRAME_ALIASES[(section, name)]
    try:
        number = float(value)
        if not math.isfinite(number) or (unit != "a weight per frame in (0, 1)" and number != int(number)):
            raise ValueError(value)
        return section, new, convert(number)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {section}.{name} = {value!r} is not {unit}; it is replaced by {section}.{new} (seconds)"
        ) from exc
