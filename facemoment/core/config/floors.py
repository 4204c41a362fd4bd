"""The CPU budget's floors (`budget.floor_fps`) and how long a result may stand in for
an extractor the budget wanted on a frame but did not get (deferred, or late)."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

from facemoment.core.config.cameras import cameras
from facemoment.core.config.sections import BudgetConfig, Config


def parse_floors(entries: Sequence[str]) -> Dict[str, float]:
    """`budget.floor_fps` entries (`NAME=FPS`) as {extractor: fps}."""
    floors: Dict[str, float] = {}
    for entry in entries:
        name, _sep, value = str(entry).partition("=")
        floors[name.strip()] = float(value)
    return floors


def carry_limit_ns(settings: BudgetConfig, floors: Mapping[str, float], name: str) -> float:
    """The oldest result that keeps `name` at its floor: one floor period, never more
    than `budget.max_carry_s`."""
    floor = floors.get(name)
    return min(1e9 / floor if floor else float("inf"), settings.max_carry_s * 1e9)


def camera_budgets(cfg: Config) -> Dict[str, BudgetConfig]:
    """The budget section of every `[cameras.NAME]` table that sets budget settings of its own."""
    if not cfg.cameras:
        return {}
    return {c.stream_id: c.budget for c in cameras(cfg) if c.budget is not None}


class CarryLimits:
    """`carry_limit_ns` per camera, with each camera's own budget settings."""

    def __init__(self, cfg: Config):
        self._default = self._limits(cfg.budget, cfg.extract.extractors)
        self._own = {sid: self._limits(own, cfg.extract.extractors) for sid, own in camera_budgets(cfg).items()}

    @staticmethod
    def _limits(settings: BudgetConfig, extractors: Sequence[str]) -> Dict[str, float]:
        floors = parse_floors(settings.floor_fps)
        return {name: carry_limit_ns(settings, floors, name) for name in extractors}

    def ns(self, stream_id: str, name: str) -> float:
        return self._own.get(stream_id, self._default).get(name, 0.0)
