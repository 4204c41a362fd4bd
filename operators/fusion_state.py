"""The temporal state fusion keeps for one stream: what a recovery snapshot holds.

Plain data only (dicts, deques, dataclasses), so Bytewax pickles it and a restored copy
continues exactly where the original stopped; no settings, so a resumed run follows the
configuration it was started with (`FusionRules` carries that).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, FrozenSet, Optional, Tuple

from facemoment.core.config import FusionConfig


@dataclass
class ExpressionBaseline:
    """EWMA mean and variance of one face's expression intensity, as of event time `t_ns`."""

    ewma: float
    var: float
    t_ns: int = 0

    def z_then_update(self, x: float, t_ns: int, tau_sec: float, min_std: float) -> float:
        # The spike is measured against the history, so z uses the mean and variance
        # from before this sample; the sample joins the history afterwards.
        z = (x - self.ewma) / max(min_std, math.sqrt(self.var))
        alpha = ewma_weight(t_ns - self.t_ns, tau_sec)
        delta = x - self.ewma
        self.ewma += alpha * delta
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta)
        self.t_ns = t_ns
        return z


def ewma_weight(dt_ns: int, tau_sec: float) -> float:
    """The weight of a sample that comes `dt_ns` after the last one: 1 - exp(-dt / tau).

    Two samples 1/30 s apart move the mean as much as one sample 1/15 s apart, so the
    baseline follows the same time course at any analysis rate."""
    return -math.expm1(-max(0, dt_ns) / 1e9 / tau_sec)


@dataclass
class GateTracker:
    """Hysteresis: open after conditions held for a while, close after they failed for a while."""

    is_open: bool = False
    held_since_ns: Optional[int] = None
    failed_since_ns: Optional[int] = None

    def update(self, t_ns: int, passed: bool, open_ns: int, close_ns: int) -> Optional[Tuple[str, int]]:
        """Returns (reason, streak_ns) when the gate changes on this frame."""
        if passed:
            self.failed_since_ns = None
            if self.held_since_ns is None:
                self.held_since_ns = t_ns
            held = t_ns - self.held_since_ns
            if not self.is_open and held >= open_ns:
                self.is_open = True
                return ("conditions_held", held)
        else:
            self.held_since_ns = None
            if self.failed_since_ns is None:
                self.failed_since_ns = t_ns
            failed = t_ns - self.failed_since_ns
            if self.is_open and failed >= close_ns:
                self.is_open = False
                return ("conditions_failed", failed)
        return None


def lookback_horizon_ns(cfg: FusionConfig) -> int:
    """How far back (event time) the look-back history reaches."""
    return int(round(max(cfg.lookback_sec, cfg.lookback_default_sec) * 1e9))


@dataclass
class FusionState:
    """All temporal state of one stream, and nothing else (no settings)."""

    last_t_ns: Optional[int] = None
    last_fire_t_ns: Optional[int] = None
    gate: GateTracker = field(default_factory=GateTracker)
    # Last observed quality gate; None until a quality observation has arrived.
    quality_ok: Optional[bool] = None
    expression: Dict[int, ExpressionBaseline] = field(default_factory=dict)
    last_yaw: Dict[int, Tuple[int, float]] = field(default_factory=dict)
    # Recent (t_ns, x) of each tracked wrist, keyed (person_id, wrist).
    waves: Dict[Tuple[int, int], Deque[Tuple[int, float]]] = field(default_factory=dict)
    pending_reason: Optional[str] = None
    pending_count: int = 0
    pending_score: float = 0.0
    # Event time the pending reason counts as held from: the frame before its first win
    # (each frame stands for the time since the one before), or that win itself on a
    # stream's first frame.
    pending_since_ns: Optional[int] = None
    # Per frame within the look-back horizon: (t_ns, reasons whose signal was present,
    # reasons the frame could not see because their extractor's result was missing).
    lookback: Deque[Tuple[int, FrozenSet[str], FrozenSet[str]]] = field(default_factory=deque)
    frames: int = 0
    out_of_order: int = 0
    invalid_observations: int = 0
    # What the last fused frame decided and why (gate_tally.Outcome), for the gate tally.
    outcome: Optional[Tuple[Any, ...]] = None

    def reset_pending(self) -> None:
        self.pending_reason = None
        self.pending_count = 0
        self.pending_score = 0.0
        self.pending_since_ns = None
