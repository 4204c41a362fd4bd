"""Why frames did not fire: a compact, cumulative per-stream tally of the gate and decisions.

Counted on every fused frame whatever the trace level, and written as one small
`gate_tally` record now and then (minimal level), so a run's summary can say which
gate condition held the highlights back ("quality: brightness 25 < 50 on 100% of
frames"), how often the cooldown blocked, and how many candidates were seen but not
confirmed, without a verbose trace. Plain data only: it is part of the fusion
state's recovery snapshot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from facemoment.core.config import GateConfig, QualityConfig
from facemoment.core.records import GateTallyRecord
from facemoment.core.types import FrameObservations

# Quality signals with their limits, in the order a person checks them.
_QUALITY = ("brightness", "blur", "contrast")


class Outcome(NamedTuple):
    """What fusion decided on one frame and why: FusionState.outcome, in this order."""

    face_observed: bool
    passed: bool
    conditions: Mapping[str, Mapping[str, Any]]
    gate_open: bool
    decision: str
    candidates: Tuple[str, ...]


@dataclass
class ConditionTally:
    """Frames on which one condition failed, and the sum of the failing values (for the mean)."""

    failed: int = 0
    value_sum: float = 0.0
    valued: int = 0
    op: str = ""
    threshold: Any = None

    def fail(self, value: Optional[float], op: str, threshold: Any) -> None:
        self.failed += 1
        self.op, self.threshold = op, threshold
        if value is not None:
            self.value_sum += float(value)
            self.valued += 1

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"failed": self.failed, "op": self.op, "threshold": self.threshold}
        out["typical"] = round(self.value_sum / self.valued, 3) if self.valued else None
        return out


def _face_failures(conditions: Mapping[str, Mapping[str, Any]], gate: GateConfig) -> List[Tuple[str, Optional[float], str, Any]]:
    """(name, value, op, threshold) of each failing face condition of one frame."""
    limits = {
        "confidence": ("<", gate.min_confidence),
        "yaw": (">", gate.max_yaw),
        "pitch": (">", gate.max_pitch),
        "area_ratio": ("<", gate.min_area_ratio),
        "center_distance": (">", gate.max_center_distance),
    }
    out: List[Tuple[str, Optional[float], str, Any]] = []
    for name, c in conditions.items():
        if c.get("pass") or name == "quality":
            continue
        value = c.get("value")
        if name == "face_count":
            n = int(value or 0)
            out.append((name, n, "<", gate.min_faces) if n < gate.min_faces else (name, n, ">", gate.max_faces))
        elif name == "inside_frame":
            out.append((name, None, "is", "outside the frame"))
        elif name in limits:
            op, limit = limits[name]
            out.append((name, float(value), op, limit))
    return out


def _quality_failures(fo: FrameObservations, cfg: QualityConfig) -> List[Tuple[str, Optional[float], str, Any]]:
    """Which quality limits this frame's own quality observation missed (empty when none was observed)."""
    obs = fo.observations.get("quality")
    signals = obs.signals if obs is not None and obs.error is None else {}
    out: List[Tuple[str, Optional[float], str, Any]] = []
    for name in _QUALITY:
        value = signals.get(name)
        if not isinstance(value, (int, float)):
            continue
        if name == "brightness" and value > cfg.max_brightness:
            out.append(("quality.brightness", value, ">", cfg.max_brightness))
        elif name == "brightness" and value < cfg.min_brightness:
            out.append(("quality.brightness", value, "<", cfg.min_brightness))
        elif name == "blur" and value < cfg.min_blur:
            out.append(("quality.blur", value, "<", cfg.min_blur))
        elif name == "contrast" and value < cfg.min_contrast:
            out.append(("quality.contrast", value, "<", cfg.min_contrast))
    return out


@dataclass
class GateTally:
    """Cumulative counts for one stream."""

    frames: int = 0
    face_observed: int = 0
    gate_open_frames: int = 0
    # Every condition passed but not yet for gate.open_duration_sec.
    passed_while_closed: int = 0
    decisions: Dict[str, int] = field(default_factory=dict)
    # Frames on which a reason was a candidate but the gate or the cooldown blocked it.
    blocked_candidates: Dict[str, int] = field(default_factory=dict)
    conditions: Dict[str, ConditionTally] = field(default_factory=dict)

    def _fail(self, name: str, value: Optional[float], op: str, threshold: Any) -> None:
        self.conditions.setdefault(name, ConditionTally()).fail(value, op, threshold)

    def add(self, fo: FrameObservations, outcome: Outcome, gate: GateConfig, quality: QualityConfig) -> None:
        """Count one fused frame; `outcome` is FusionState.outcome after processing it."""
        outcome = Outcome(*outcome)
        self.frames += 1
        self.decisions[outcome.decision] = self.decisions.get(outcome.decision, 0) + 1
        if outcome.gate_open:
            self.gate_open_frames += 1
        if outcome.decision in ("blocked_gate", "blocked_cooldown"):
            for reason in outcome.candidates:
                self.blocked_candidates[reason] = self.blocked_candidates.get(reason, 0) + 1
        if not outcome.face_observed:
            self._fail("face_observation", None, "is", "missing")
            return
        self.face_observed += 1
        if outcome.passed and not outcome.gate_open:
            self.passed_while_closed += 1
        for failure in _face_failures(outcome.conditions, gate):
            self._fail(*failure)
        q = outcome.conditions.get("quality")
        if q is not None and not q.get("pass"):
            found = _quality_failures(fo, quality)
            for failure in found:
                self._fail(*failure)
            if not found:
                # Failed on an earlier frame's quality, or no quality observation yet.
                self._fail("quality.unobserved", None, "is", q.get("status", "unknown"))

    def record(self, fo: FrameObservations) -> GateTallyRecord:
        return GateTallyRecord(
            stream=fo.stream_id,
            frame_id=fo.frame_id,
            t_ns=fo.t_ns,
            frames=self.frames,
            face_observed=self.face_observed,
            gate_open_frames=self.gate_open_frames,
            passed_while_closed=self.passed_while_closed,
            decisions=dict(Counter(self.decisions).most_common()),
            blocked_candidates=dict(Counter(self.blocked_candidates).most_common()),
            conditions={
                name: tally.as_dict()
                for name, tally in sorted(self.conditions.items(), key=lambda kv: (-kv[1].failed, kv[0]))
            },
        )
