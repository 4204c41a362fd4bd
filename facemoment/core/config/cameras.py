"""The cameras of a run, resolved from the configuration, and their declared rates.

A `[cameras.NAME]` table names every camera with its own settings; a camera's unset
settings follow the `extract` section. For compatibility `source.source` (as
`source.stream_id`) is the camera when the table is empty, and every `source.extra`
"STREAM_ID=SOURCE" entry adds one more.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from facemoment.core.config.errors import ConfigError
from facemoment.core.config.rates import Rate, every_rates, extractor_rates
from facemoment.core.config.rules import STREAM_ID, STREAM_ID_GRAMMAR, STREAM_ID_MAX
from facemoment.core.config.sections import BUDGET_PER_CAMERA, BudgetConfig, CameraConfig, Config


@dataclass(frozen=True)
class Camera:
    stream_id: str
    # Where its full frames come from.
    source: str
    # The low-resolution stream analysed instead, when the camera publishes one.
    detect: Optional[str] = None
    detect_width: int = 0
    every: Tuple[str, ...] = ()
    # The budget section with this camera's own settings in place (None: the section as it is).
    budget: Optional[BudgetConfig] = field(default=None, compare=False, hash=False)

    @property
    def analysed(self) -> str:
        """The address or file whose frames are analysed."""
        return self.detect or self.source

    @property
    def record(self) -> Optional[str]:
        """The full stream feeding the clips, when it is not the one analysed."""
        return self.source if self.detect else None


def check_stream_id(stream_id: str, where: str) -> None:
    # Stream ids name Bytewax steps and partitions (rules.py, STREAM_ID).
    if not stream_id or len(stream_id) > STREAM_ID_MAX or not re.fullmatch(STREAM_ID, stream_id):
        raise ConfigError(f"{where} = {stream_id[:80]!r} must be {STREAM_ID_GRAMMAR} (at most {STREAM_ID_MAX})")


def camera_budget(section: BudgetConfig, cam: CameraConfig) -> Optional[BudgetConfig]:
    """The budget section with the camera's own settings in place; None when it sets none."""
    own = {name: getattr(cam, name) for name in BUDGET_PER_CAMERA if getattr(cam, name) is not None}
    return dataclasses.replace(section, **own) if own else None


def cameras(cfg: Config) -> List[Camera]:
    """Every camera of the run, in the order configured; ConfigError on a bad or repeated id."""
    ext = cfg.extract
    out: List[Camera] = []
    for name, cam in cfg.cameras.items():
        check_stream_id(name, "camera name")
        where = f"cameras.{name}"
        if not cam.source.strip():
            raise ConfigError(f"{where}.source is not set: name the camera's address or file")
        if cam.detect is not None and not cam.detect.strip():
            raise ConfigError(f"{where}.detect is empty: name the detect stream's address or leave it out")
        out.append(
            Camera(
                stream_id=cam.stream_id or name,
                source=cam.source.strip(),
                detect=cam.detect.strip() if cam.detect else None,
                detect_width=ext.detect_width if cam.detect_width is None else cam.detect_width,
                every=tuple(ext.every if cam.every is None else cam.every),
                budget=camera_budget(cfg.budget, cam),
            )
        )
    if not out:
        out.append(Camera(cfg.source.stream_id, cfg.source.source, None, ext.detect_width, tuple(ext.every)))
    for entry in cfg.source.extra:
        stream_id, sep, source = entry.partition("=")
        if not sep or not stream_id.strip() or not source.strip():
            raise ConfigError(f"extra source {entry!r}: expected STREAM_ID=SOURCE")
        out.append(Camera(stream_id.strip(), source.strip(), None, ext.detect_width, tuple(ext.every)))
    ids = [c.stream_id for c in out]
    for stream_id in ids:
        check_stream_id(stream_id, "stream id")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"stream ids must be unique, got {ids}")
    return out


@dataclass(frozen=True)
class StreamRates:
    """Declared extractor rates per stream: a camera's own `every`, or the extract section's."""

    default: Mapping[str, Rate] = field(default_factory=dict)
    by_stream: Mapping[str, Mapping[str, Rate]] = field(default_factory=dict)

    def of(self, stream_id: str) -> Mapping[str, Rate]:
        return self.by_stream.get(stream_id, self.default)

    def get(self, stream_id: str, name: str) -> Optional[Rate]:
        return self.of(stream_id).get(name)

    def __bool__(self) -> bool:
        """Whether any stream has an extractor with a declared rate."""
        return bool(self.default) or any(bool(r) for r in self.by_stream.values())


def stream_rates(cfg: Config) -> StreamRates:
    """The declared rates of every camera; streams not configured (observations fed
    in directly) follow `extract.every`."""
    default = extractor_rates(cfg.extract)
    by_stream: Dict[str, Dict[str, Rate]] = {}
    if cfg.cameras:
        for camera in cameras(cfg):
            by_stream[camera.stream_id] = every_rates(camera.every, f"cameras.{camera.stream_id}.every")
    return StreamRates(default, by_stream)
