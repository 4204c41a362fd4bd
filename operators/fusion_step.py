"""The fusion step as Bytewax sees it: a stateful mapper keyed by stream."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream

from facemoment.core.config import Config
from facemoment.core.config.cameras import stream_rates
from facemoment.core.config.floors import CarryLimits
from facemoment.core.records import FpsSummary, FrameCarry, Timing
from facemoment.core.streams import ItemsAndRecords, split_keyed_records
from facemoment.core.types import FrameObservations, Observation, TraceRecord, Trigger
from operators.fusion_rules import FusionRules
from operators.fusion_state import FusionState
from operators.gate_tally import GateTally

# Called with each fused frame, the stream's fusion state after it and its trigger.
FusedFrameHook = Callable[[FrameObservations, FusionState, Optional[Trigger]], None]

FPS_SUMMARY_EVERY_NS = 5_000_000_000
# The gate tally is cumulative and small: written often, so a run's last second counts too.
GATE_TALLY_EVERY_NS = 1_000_000_000


@dataclass
class StreamState:
    """Everything fusion keeps for one stream; snapshotted for recovery.

    Temporal state only: the settings come from the step's configuration each time
    the dataflow starts, so a resumed run follows the configuration it was started with.
    """

    fusion: FusionState = field(default_factory=FusionState)
    frames: int = 0
    triggers: int = 0
    first_t_ns: Optional[int] = None
    last_summary_ns: int = 0
    tally: GateTally = field(default_factory=GateTally)
    last_tally_ns: Optional[int] = None
    # The last result of each extractor with a declared rate, carried over the
    # frames it does not run on.
    last_fresh: Dict[str, Observation] = field(default_factory=dict)


class Fuser:
    """`stateful_flat_map` mapper: one StreamState per stream key."""

    def __init__(self, cfg: Config, on_fused: Optional[FusedFrameHook] = None):
        self.cfg = cfg
        self.on_fused = on_fused
        self.rules = FusionRules(cfg.fusion, cfg.output.trace)
        self.timing = self.rules.level >= Timing.LEVEL
        # Declared rates per camera (its own `every`, or extract.every).
        self.rates = stream_rates(cfg)
        # With a budget, any extractor may skip a frame: its last result is kept for carrying.
        self.budgeted = cfg.budget.mode != "off"
        self.max_carry_ns = int(cfg.budget.max_carry_s * 1e9)
        # ...and one whose result missed the deadline, within its floor period.
        self.carry_limits = CarryLimits(cfg) if self.budgeted else None

    def __call__(
        self, state: Optional[StreamState], fo: FrameObservations
    ) -> Tuple[StreamState, List[Union[Trigger, TraceRecord]]]:
        if state is None:
            state = StreamState()
        if state.first_t_ns is None:
            state.first_t_ns = state.last_summary_ns = fo.t_ns
        carried: List[FrameCarry] = self._carry(state, fo) if (self.rates or self.budgeted) else []
        start = time.perf_counter_ns()
        fused_before = state.fusion.frames
        trigger, records = self.rules.process(state.fusion, fo)
        out: List[Union[Trigger, TraceRecord]] = list(records)
        if state.fusion.frames > fused_before:  # not an out-of-order frame
            out.extend(self._tally(state, fo))
        if self.timing:
            out.extend(carried)
            out.append(
                Timing(
                    frame_id=fo.frame_id,
                    stream=fo.stream_id,
                    component="fusion_process",
                    processing_ms=round((time.perf_counter_ns() - start) / 1e6, 4),
                    queue_depth=None,
                    threshold_ms=None,
                    is_slow=False,
                )
            )
        state.frames += 1
        if self.on_fused is not None:
            self.on_fused(fo, state.fusion, trigger)
        if trigger is not None:
            state.triggers += 1
            out.append(trigger)
        if fo.t_ns - state.last_summary_ns >= FPS_SUMMARY_EVERY_NS:
            out.append(self._fps_summary(state, fo))
            state.last_summary_ns = fo.t_ns
        return state, out

    def _tally(self, state: StreamState, fo: FrameObservations) -> List[TraceRecord]:
        state.tally.add(fo, state.fusion.outcome, self.cfg.fusion.gate, self.cfg.quality)
        if state.last_tally_ns is None:
            state.last_tally_ns = fo.t_ns
        if fo.t_ns - state.last_tally_ns < GATE_TALLY_EVERY_NS:
            return []
        state.last_tally_ns = fo.t_ns
        return [state.tally.record(fo)]

    def _carry(self, state: StreamState, fo: FrameObservations) -> List[FrameCarry]:
        """Fill in the extractors not due on this frame from their last result.

        Frames reach fusion in event-time order per stream, so the carried result is
        the same whichever worker extracted which frame. A result older than the
        extractor's rate (its frame was dropped or missed) is not carried: the
        extractor counts as missing on this frame.
        """
        rates = self.rates.of(fo.stream_id)
        for name, obs in fo.observations.items():
            if name in rates or self.budgeted:
                state.last_fresh[name] = obs
        records: List[FrameCarry] = []
        missing = self._carry_missed(state, fo, records)
        for name in fo.not_due:
            rate = rates.get(name)
            last = state.last_fresh.get(name)
            # Not due by its declared rate: a result from within the rate.
            skipped_by_rate = rate is not None and not rate.due(fo.frame_id)
            fresh = skipped_by_rate and last is not None and 0 < fo.frame_id - last.frame_id < rate.every
            every = rate.every if fresh or (skipped_by_rate and not self.budgeted) else 0
            if every == 0:
                # The budget did not run it, or under load also skipped the frame the
                # declared rate was due on: a result from within budget.max_carry_s.
                fresh = last is not None and 0 < fo.t_ns - last.t_ns <= self.max_carry_ns
            if fresh:
                fo.observations[name] = dataclasses.replace(last, frame_id=fo.frame_id, t_ns=fo.t_ns)
                records.append(FrameCarry(fo.stream_id, fo.frame_id, name, last.frame_id, every))
            else:
                missing.append(name)
                records.append(FrameCarry(fo.stream_id, fo.frame_id, name, None, every))
        fo.missing = tuple(missing)
        return records

    def _carry_missed(self, state: StreamState, fo: FrameObservations, records: List[FrameCarry]) -> List[str]:
        """Under the budget, an extractor scheduled on this frame whose result missed
        the deadline is filled in as if the budget had deferred it: from its last
        result, if that keeps it at its floor (`budget.floor_fps`, at most
        `budget.max_carry_s`). The rules then see pose or hands a frame or two old,
        not gone for a frame. The extractors it cannot fill in stay missing."""
        if self.carry_limits is None:
            return list(fo.missing)
        missing = []
        for name in fo.missing:
            last = state.last_fresh.get(name)
            if last is not None and 0 < fo.t_ns - last.t_ns <= self.carry_limits.ns(fo.stream_id, name):
                fo.observations[name] = dataclasses.replace(last, frame_id=fo.frame_id, t_ns=fo.t_ns)
                records.append(FrameCarry(fo.stream_id, fo.frame_id, name, last.frame_id, 0, missed=True))
            else:
                missing.append(name)  # its frame_drop record says so
        return missing

    @staticmethod
    def _fps_summary(state: StreamState, fo: FrameObservations) -> FpsSummary:
        first = fo.t_ns if state.first_t_ns is None else state.first_t_ns
        span_s = (fo.t_ns - first) / 1e9
        return FpsSummary(
            stream=fo.stream_id,
            frame_id=fo.frame_id,
            t_ns=fo.t_ns,
            frames_fused=state.frames,
            event_fps=round(state.frames / span_s, 2) if span_s > 0 else None,
            triggers=state.triggers,
        )


@operator
def fuse(
    step_id: str, aligned: KeyedStream[FrameObservations], cfg: Config, on_fused: Optional[FusedFrameHook] = None
) -> ItemsAndRecords[Tuple[str, Trigger]]:
    """Fusion with temporal state keyed per stream: triggers (keyed) and fusion records.

    `on_fused` sees every fused frame (what `facemoment debug` draws)."""
    return split_keyed_records("split", op.stateful_flat_map("fuse", aligned, Fuser(cfg, on_fused)))
