"""How big each measurement is, the constants every measurement shares, and the progress log."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]

SAMPLE_FRAMES = 360  # the built-in sample: 12 s at 30 fps
LIVE_FPS = 30.0
STREAM_ID = "cam0"
INGEST_SIZE = (1920, 1080)
OVERLOAD_LARGE_SIZE = (1920, 1080)
RSS_PERIOD_S = 0.5
# Memory counts as flat when the RSS trend after the warm-up stays within this many MB
# per minute. With 1080p frames in flight RSS swings by about 90 MB (a dozen 6 MB
# frames), so the full run streams for 3 minutes: one minute of such swings fits a
# trend of 10-15 MB/min that a longer run shows to be noise.
MEMORY_SLOPE_LIMIT = 5.0
RSS_WARMUP_S = 10.0
# Other processes' load (cores) from which a figure is flagged as taken on a busy machine.
FOREIGN_LOAD_NOTE = 0.3
PROCESS_TIMEOUT_S = 600.0

Record = Dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How big each measurement is; --quick shrinks them to fit in about 3 minutes."""

    quick: bool
    frames: int
    latency_s: float
    overload_s: float
    ingest_frames: int
    # Longest wait, before each measurement, for other processes to leave the cores.
    quiet_wait_s: float
    # Alternating bare-pipelined / dataflow runs (medians are reported).
    repeats: int
    # Preset(s) of the live runs (5, 6): `realtime`, or `realtime,lean` for declared rates.
    live_preset: str = "realtime"

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(True, frames=120, latency_s=12.0, overload_s=15.0, ingest_frames=300, quiet_wait_s=10.0, repeats=1)
        return cls(False, frames=SAMPLE_FRAMES, latency_s=60.0, overload_s=180.0, ingest_frames=900, quiet_wait_s=60.0, repeats=3)


class Progress:
    """Progress lines on stdout, stamped with the seconds since the benchmark started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", flush=True)
