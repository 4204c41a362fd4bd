"""One CPU budget for all the cameras of a process: which extractors run on each frame.

The extract stage asks the budget, for every frame it submits, which extractors to
run. The budget knows every camera of the process:

- **occupancy**: a camera is occupied while face found someone within
  `budget.occupied_hold_s` of event time: a face confident and large enough to pass
  the trigger gate (`fusion.gate.min_confidence`, `min_area_ratio`). Every reason
  fires only with the gate open, so a smaller or doubtful detection (a shape in an
  empty scene) does not start pose and hands. An occupied camera gets the declared
  rates (`extract.every`; every frame by default).
- **empty cameras only look for someone**: face and quality run, at
  `budget.idle_fps` while a cheap motion check (the mean difference of a 32x18
  grey thumbnail) saw motion within `budget.motion_hold_s`, at `budget.still_fps`
  otherwise; pose and hands wait until face finds someone.
- **load**: when the lanes fall behind (an extractor's lane busy `budget.busy_high`
  of the wall clock, its queue `budget.high_water` jobs per camera deep, or a frame's
  extractor missed the extraction deadline) the budget lowers the rates of occupied
  cameras one level at a time (each level adds one frame interval to every
  extractor's period) down to each extractor's floor (`budget.floor_fps`); once every
  lane stays at most `budget.busy_low` busy for `budget.relax_s` it raises them a
  level again. Busy time, not queue depth, because several cameras submit frames at
  once: four frames queued in the face lane are no overload while the lane keeps up. Load is judged on the wall clock,
  so it acts on live sources only; files keep their rates.
- **a lane behind defers**: the level moves every half second at most, a frame's
  deadline is shorter. An occupied camera's due extractor whose lane could not finish
  a job before the deadline (`Lane.expected_wait_ns`) is left off the frame, and
  fusion carries its last result, down to its floor and within `budget.max_carry_s`;
  that counts as overload, and as `deferred` in the camera_rates records.

- **each camera's allowance**: with `budget.camera_cores` set, an occupied camera's
  extraction is held to that many cores (seconds of extractor work per second of its
  stream). The budget predicts a schedule's cost from each lane's recent cost per run
  and the declared rates, and runs the camera at the lowest level (the same levels
  as load's) whose cost fits, down to the floors (an extractor that has not run yet
  counts as free until its first run). Predicted, not measured afterwards:
  a rider's first frames already run at the rates the box can give her, so two riders
  arriving at once do not overload the lanes first. A box's capacity in cameras is
  then known in advance; the free CPU stays with the other cameras and the process.
  Like load, it acts on live sources only.

A camera of a `[cameras.NAME]` table can set its own idle and still rates, motion
and occupancy settings, floors and allowance; the load level is one for the whole process.

Periods are in event time (the frames' own timestamps), so a camera analysed at
30, 15 or 10 fps gets the same schedule in seconds. A frame's presence names the
extractors scheduled on it, so alignment expects exactly those and fusion carries
the others: frames go without an extractor only as scheduled, and every change of
a camera's schedule is a `camera_rates` record (with its cumulative counts).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from facemoment.core.config import BudgetConfig, GateConfig
from facemoment.core.config.floors import carry_limit_ns, parse_floors
from facemoment.core.records import CameraRates
from facemoment.core.types import Face, Frame

# Extractors an empty camera still runs: they decide whether someone is there and
# whether the picture is good enough once they are.
LOOKOUT = ("face", "quality")
THUMB = (32, 18)
# Cumulative counts go into a camera_rates record at least this often (event time).
REPORT_EVERY_NS = 5_000_000_000
# A rate that moved by more than this share of the reported one is a change of schedule.
RATE_CHANGE = 0.1
# Before a camera's frame interval is measured, assume 30 fps.
DEFAULT_INTERVAL_NS = 33_333_333
# A camera held back by its allowance steps down a level only once the level below
# costs at most this share of it: the lanes' costs per run wander from frame to frame.
ALLOWANCE_SLACK = 0.85


def someone_there(faces: Sequence[Face], gate: GateConfig) -> bool:
    """Whether face found someone who could open the trigger gate."""
    return any(f.confidence >= gate.min_confidence and f.area_ratio >= gate.min_area_ratio for f in faces)


@dataclass
class _Camera:
    last_t_ns: Optional[int] = None
    interval_ns: float = DEFAULT_INTERVAL_NS
    occupied_until_ns: Optional[int] = None
    was_occupied: bool = False  # on the frame before
    own_level: int = 0  # the level its allowance (`camera_cores`) asks for
    # Lookout runs of an empty camera that missed the deadline: run again on its next
    # frame (once; `redone_ns` is the frame time of each redo).
    redo: Set[str] = field(default_factory=set)
    redone_ns: Dict[str, int] = field(default_factory=dict)
    motion_until_ns: Optional[int] = None
    thumb: Optional[np.ndarray] = None
    last_run_ns: Dict[str, int] = field(default_factory=dict)
    # What the last camera_rates record said, to report changes only.
    reported: Optional[Tuple[bool, bool, int, Tuple[Tuple[str, float], ...]]] = None
    reported_at_ns: int = 0
    frames: int = 0
    occupied_frames: int = 0
    runs: Dict[str, int] = field(default_factory=dict)
    deferred: Dict[str, int] = field(default_factory=dict)


class Budget:
    """The schedule of every camera of one process (thread-safe)."""

    def __init__(
        self,
        settings: BudgetConfig,
        extractors: Sequence[str],
        live: bool,
        clock: Callable[[], float] = time.monotonic,
        per_camera: Optional[Mapping[str, BudgetConfig]] = None,
        declared: Optional[Callable[[str, str], int]] = None,
    ):
        self.settings = settings
        self.extractors = tuple(extractors)
        self.floors = parse_floors(settings.floor_fps)
        # stream id -> (its settings, its floors), for cameras with settings of their own
        self._own = {sid: (own, parse_floors(own.floor_fps)) for sid, own in (per_camera or {}).items()}
        self.load_control = live
        # A camera's declared rate of an extractor: it runs on one frame in this many.
        self._declared = declared or (lambda stream_id, name: 1)
        self._clock = clock
        self._lock = threading.Lock()
        self._cameras: Dict[str, _Camera] = {}
        self.level = 0
        self._level_changed = float("-inf")  # the first overload is answered at once
        self._short_since: Optional[float] = None
        # A deadline missed since the last plan: the lanes are behind whatever their depth.
        self._missed = False

    # ------------------------------------------------------------------ schedule
    def plan(
        self, frame: Frame, candidates: Sequence[str], depth: int, busy: float = 0.0,
        behind: Collection[str] = (), skipped: Sequence[str] = (),
        costs: Mapping[str, float] = {},
    ) -> Tuple[Tuple[str, ...], List[CameraRates]]:
        """The extractors to run on `frame` among `candidates` (those due by their
        declared rate), given the deepest lane queue (jobs), the busiest lane's share
        of the wall clock, the lanes `behind` (a job submitted now would miss the
        frame's deadline) and each lane's recent cost per run (seconds); and the
        records of any change. On a camera's first occupied frame, an extractor its
        declared rate skips (`skipped`) runs too if fusion would have nothing to
        carry for it."""
        with self._lock:
            cam = self._cameras.setdefault(frame.stream_id, _Camera())
            self._adjust_level(depth, busy)
            settings, floors = self._own.get(frame.stream_id, (self.settings, self.floors))
            t = frame.t_src_ns
            self._note_interval(cam, t)
            self._note_motion(cam, frame, t, settings)
            occupied = cam.occupied_until_ns is not None and t <= cam.occupied_until_ns
            if occupied:
                cam.own_level = self._allowance_level(cam, frame.stream_id, settings, floors, costs)
            periods = self._periods(cam, occupied, t, settings, floors)
            due = [name for name in candidates if name in periods and self._due(cam, name, periods[name], t)]
            if occupied and not cam.was_occupied:
                due += [name for name in skipped if name in periods
                        and self._due(cam, name, carry_limit_ns(settings, floors, name), t)]
            if not occupied:
                for name in sorted(cam.redo - set(due)):
                    if name in periods:
                        due.append(name)
                        cam.redone_ns[name] = t
            cam.redo.clear()
            cam.was_occupied = occupied
            chosen = tuple(
                name for name in due
                if not (occupied and name in behind and self._defer(cam, name, t, settings, floors))
            )
            for name in chosen:
                cam.last_run_ns[name] = t
                cam.runs[name] = cam.runs.get(name, 0) + 1
            cam.frames += 1
            cam.occupied_frames += int(occupied)
            return chosen, self._report(frame, cam, occupied, periods, costs)

    def _defer(self, cam: _Camera, name: str, t: int, s: BudgetConfig, floors: Mapping[str, float]) -> bool:
        """Whether to leave a due extractor whose lane is behind off this frame of an
        occupied camera: its job would miss the deadline, and fusion carries its last
        result instead, so the frame stays complete. Not when that would take the
        extractor below its floor or its last result past `max_carry_s`. A lane behind
        is overload, as a missed deadline."""
        if not self.load_control:
            return False
        if self._due(cam, name, carry_limit_ns(s, floors, name), t):  # due even at its floor or the carry's limit
            return False
        cam.deferred[name] = cam.deferred.get(name, 0) + 1
        self._missed = True
        return True

    def missed_deadline(self, stream_id: Optional[str] = None, t_ns: int = 0, names: Collection[str] = ()) -> None:
        """Extractors' results (`names`) on a camera's frame at `t_ns` missed the
        frame's deadline: overload, as a deep queue. On an empty camera a missed lookout
        run is done again on the next frame (not again if that one misses too): at the
        still rate the next run would be half a second away, and fusion has nothing
        to carry meanwhile."""
        with self._lock:
            self._missed = True
            cam = self._cameras.get(stream_id) if stream_id is not None else None
            if cam is None or cam.was_occupied:
                return
            cam.redo.update(name for name in names if name in LOOKOUT and cam.redone_ns.get(name) != t_ns)

    def saw_face(self, stream_id: str, t_ns: int, found: bool) -> None:
        """Face's result on a frame: someone there keeps the camera occupied."""
        if not found:
            return
        with self._lock:
            cam = self._cameras.setdefault(stream_id, _Camera())
            settings = self._own.get(stream_id, (self.settings,))[0]
            until = t_ns + int(settings.occupied_hold_s * 1e9)
            if cam.occupied_until_ns is None or until > cam.occupied_until_ns:
                cam.occupied_until_ns = until

    def _periods(
        self, cam: _Camera, occupied: bool, t: int, s: BudgetConfig, floors: Mapping[str, float]
    ) -> Dict[str, float]:
        """Each extractor's period on this camera now, in event-time ns (absent: not run)."""
        if not occupied:
            moving = cam.motion_until_ns is not None and t <= cam.motion_until_ns
            # Not lowered under load: a rider coming in is found within one idle period,
            # and her first moments start from that frame.
            fps = s.idle_fps if moving else s.still_fps
            return {name: 1e9 / fps for name in LOOKOUT if name in self.extractors}
        level = max(self.level, cam.own_level)
        return {name: self._period(cam, level, name, floors) for name in self.extractors}

    @staticmethod
    def _period(cam: _Camera, level: int, name: str, floors: Mapping[str, float]) -> float:
        # Level 0: every frame; each level one frame interval more (1: 15 fps at 30).
        period = (level + 1) * cam.interval_ns
        floor = floors.get(name)
        return min(period, 1e9 / floor) if floor else period

    def _allowance_level(
        self, cam: _Camera, stream_id: str, s: BudgetConfig, floors: Mapping[str, float], costs: Mapping[str, float]
    ) -> int:
        """The lowest level whose predicted cost fits the camera's allowance, moving
        down only with slack; 0 without an allowance, a cost known, or live input."""
        if not s.camera_cores or not self.load_control or not any(costs.values()):
            return 0
        level = cam.own_level
        cost = self._cost(cam, stream_id, level, floors, costs)
        while level < s.max_level and cost > s.camera_cores:
            lower = self._cost(cam, stream_id, level + 1, floors, costs)
            if lower >= cost:  # every extractor at its floor: nothing more to take
                break
            level, cost = level + 1, lower
        while level > 0 and self._cost(cam, stream_id, level - 1, floors, costs) <= s.camera_cores * ALLOWANCE_SLACK:
            level -= 1
        return level

    def _cost(self, cam: _Camera, stream_id: str, level: int, floors: Mapping[str, float],
              costs: Mapping[str, float]) -> float:
        """Cores a level's schedule takes on this camera."""
        periods = {name: self._period(cam, level, name, floors) for name in self.extractors}
        return self._periods_cost(cam, stream_id, periods, costs, declared=True)

    def _schedule_cost(self, cam: _Camera, stream_id: str, occupied: bool, periods: Mapping[str, float],
                       costs: Mapping[str, float]) -> Optional[float]:
        """Cores the camera's schedule now takes (None before any lane has run)."""
        if not any(costs.values()):
            return None
        return round(self._periods_cost(cam, stream_id, periods, costs, declared=occupied), 3)

    def _periods_cost(self, cam: _Camera, stream_id: str, periods: Mapping[str, float],
                      costs: Mapping[str, float], declared: bool) -> float:
        """Each extractor's cost per run times its runs per second: due half a frame
        early, on the frames its declared rate allows (an empty camera's lookouts
        are not rated)."""
        total = 0.0
        for name, period in periods.items():
            cost = costs.get(name)
            if not cost:
                continue
            every = max(1, self._declared(stream_id, name)) if declared else 1
            frames = period / cam.interval_ns
            gap = max(every, math.ceil((frames - 0.5) / every) * every)
            total += cost * 1e9 / (gap * cam.interval_ns)
        return total

    @staticmethod
    def _due(cam: _Camera, name: str, period_ns: float, t: int) -> bool:
        last = cam.last_run_ns.get(name)
        # Half a frame of slack: frame times jitter around the nominal interval.
        return last is None or t < last or t - last >= period_ns - cam.interval_ns / 2

    def _note_interval(self, cam: _Camera, t: int) -> None:
        if cam.last_t_ns is not None and t > cam.last_t_ns:
            cam.interval_ns += (min(t - cam.last_t_ns, 1_000_000_000) - cam.interval_ns) / 8
        cam.last_t_ns = t

    @staticmethod
    def _note_motion(cam: _Camera, frame: Frame, t: int, s: BudgetConfig) -> None:
        image = frame.image
        # Every frame of every camera pays for this: average a strided view (still four
        # source pixels per thumbnail pixel each way) rather than every pixel.
        step = max(1, min(image.shape[0] // (THUMB[1] * 4), image.shape[1] // (THUMB[0] * 4)))
        small = cv2.resize(image[::step, ::step], THUMB, interpolation=cv2.INTER_AREA)
        thumb = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        if cam.thumb is not None and float(cv2.absdiff(thumb, cam.thumb).mean()) >= s.motion_threshold:
            cam.motion_until_ns = t + int(s.motion_hold_s * 1e9)
        cam.thumb = thumb

    # ---------------------------------------------------------------------- load
    def _adjust_level(self, depth: int, busy: float) -> None:
        if not self.load_control:
            return
        now = self._clock()
        s = self.settings
        missed, self._missed = self._missed, False
        if missed or busy >= s.busy_high or depth >= s.high_water * len(self._cameras):
            self._short_since = None
            if self.level < s.max_level and now - self._level_changed >= s.step_s:
                self.level += 1
                self._level_changed = now
            return
        if busy <= s.busy_low and depth <= len(self._cameras):
            if self._short_since is None:
                self._short_since = now
            if self.level > 0 and now - self._short_since >= s.relax_s and now - self._level_changed >= s.relax_s:
                self.level -= 1
                self._level_changed = now
                self._short_since = now
        else:
            self._short_since = None

    # ------------------------------------------------------------------- records
    def _report(
        self, frame: Frame, cam: _Camera, occupied: bool, periods: Mapping[str, float], costs: Mapping[str, float]
    ) -> List[CameraRates]:
        t = frame.t_src_ns
        moving = cam.motion_until_ns is not None and t <= cam.motion_until_ns
        rates = tuple(sorted((name, _fps(periods.get(name), cam.interval_ns)) for name in self.extractors))
        level = max(self.level, cam.own_level) if occupied else self.level
        state = (occupied, moving, level, rates)
        if _same_schedule(state, cam.reported) and t - cam.reported_at_ns < REPORT_EVERY_NS:
            return []
        if occupied and level:
            reason = "load" if self.level >= cam.own_level else "allowance"
        else:
            reason = "occupied" if occupied else ("motion" if moving else "empty")
        cam.reported, cam.reported_at_ns = state, t
        return [
            CameraRates(
                stream=frame.stream_id,
                frame_id=frame.frame_id,
                t_ns=t,
                occupied=occupied,
                motion=moving,
                level=level,
                reason=reason,
                rates_fps=dict(rates),
                frames=cam.frames,
                occupied_frames=cam.occupied_frames,
                runs=dict(cam.runs),
                deferred=dict(cam.deferred),
                cores=self._schedule_cost(cam, frame.stream_id, occupied, periods, costs),
            )
        ]


def _same_schedule(state: Tuple, reported: Optional[Tuple]) -> bool:
    """Whether `state` says what the last record said: the same occupancy, motion and
    level, and every rate within RATE_CHANGE of the reported one. A frame interval
    that settles after a gap moves the effective rates a little on every frame; that
    is no change of schedule worth a record each."""
    if reported is None or state[:3] != reported[:3]:
        return False
    new, old = dict(state[3]), dict(reported[3])
    return new.keys() == old.keys() and all(
        (new[name] == 0) == (old[name] == 0) and abs(new[name] - old[name]) <= RATE_CHANGE * old[name]
        for name in new
    )


def _fps(period_ns: Optional[float], interval_ns: float) -> float:
    """An extractor's effective rate: 0 when it does not run."""
    if period_ns is None:
        return 0.0
    return round(1e9 / max(period_ns, interval_ns), 2)
