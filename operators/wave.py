"""Hand wave detection from the horizontal oscillation of one wrist (moments.md "Hand wave").

A detector holds the wrist x positions of one wrist of one person from the last
`window_sec` of event time (so a wrist analysed at any rate keeps the same stretch of
motion); it is a plain dataclass with a deque so fusion state that contains it pickles.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Iterable, Tuple

from facemoment.core.config import FusionConfig

# Amplitude (max - min, normalized) at which the amplitude factor of the score saturates.
FULL_SCORE_AMPLITUDE = 0.15
# A score above this makes the oscillation a wave.
WAVING_SCORE = 0.5
# Velocities smaller than this count as standing still, so float noise at a turning
# point is not read as an extra change of direction.
STILL_VELOCITY = 1e-6


@dataclass(frozen=True)
class WaveResult:
    waving: bool
    score: float
    frequency_hz: float
    amplitude: float
    count: int  # samples in the window


@dataclass
class WaveDetector:
    window_sec: float = 0.4833
    min_samples: int = 5
    min_span_sec: float = 0.2
    min_amplitude: float = 0.05
    min_hz: float = 1.5
    max_hz: float = 5.0
    full_score_amplitude: float = FULL_SCORE_AMPLITUDE
    samples: Deque[Tuple[int, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_sec) and self.window_sec > 0):
            raise ValueError("wave_window_sec must be a positive duration")
        if self.max_hz <= self.min_hz:
            raise ValueError("wave_max_hz must be above wave_min_hz")
        self.samples = deque(self.samples)

    @classmethod
    def from_config(cls, cfg: FusionConfig, samples: Iterable[Tuple[int, float]] = ()) -> "WaveDetector":
        """A detector with the configured settings, continuing from `samples` if given."""
        return cls(
            window_sec=cfg.wave_window_sec,
            min_samples=cfg.wave_min_samples,
            min_span_sec=cfg.wave_min_span_sec,
            min_amplitude=cfg.wave_min_amplitude,
            min_hz=cfg.wave_min_hz,
            max_hz=cfg.wave_max_hz,
            samples=deque(samples),
        )

    def update(self, t_ns: int, x: float) -> WaveResult:
        """Add one wrist position; samples not newer than the last one, or not finite, are ignored."""
        x = float(x)
        newer = not self.samples or t_ns > self.samples[-1][0]
        if newer and math.isfinite(x):
            self.samples.append((int(t_ns), x))
            oldest = int(t_ns) - int(round(self.window_sec * 1e9))
            while self.samples[0][0] < oldest:
                self.samples.popleft()
        return self.evaluate()

    def evaluate(self) -> WaveResult:
        count = len(self.samples)
        if count < 2:
            return WaveResult(False, 0.0, 0.0, 0.0, count)
        xs = [x for _, x in self.samples]
        span_s = (self.samples[-1][0] - self.samples[0][0]) / 1e9
        amplitude = max(xs) - min(xs)
        frequency = direction_changes(xs) / 2.0 / span_s if span_s > 0 else 0.0
        if count < self.min_samples or span_s < self.min_span_sec or amplitude < self.min_amplitude:
            return WaveResult(False, 0.0, frequency, amplitude, count)
        if not self.min_hz <= frequency <= self.max_hz:
            return WaveResult(False, 0.0, frequency, amplitude, count)
        # The band's centre scores best and its edges score zero (3.25 Hz and 1.75 Hz by default).
        centre = (self.min_hz + self.max_hz) / 2.0
        half_width = (self.max_hz - self.min_hz) / 2.0
        score = min(1.0, amplitude / self.full_score_amplitude) * (1.0 - abs(frequency - centre) / half_width)
        return WaveResult(score > WAVING_SCORE, score, frequency, amplitude, count)


def direction_changes(xs: list[float]) -> int:
    """Sign changes of the velocity, skipping still steps."""
    changes = 0
    last_sign = 0
    for a, b in zip(xs, xs[1:]):
        v = b - a
        if abs(v) < STILL_VELOCITY:
            continue
        sign = 1 if v > 0 else -1
        if last_sign and sign != last_sign:
            changes += 1
        last_sign = sign
    return changes
