"""Per-frame extraction with a deadline: the seed's ExtractorOrchestrator inside a
Bytewax step.

An `Orchestrator` runs every extractor on a lane (operators/extraction/lanes.py).
A frame is submitted to all lanes at once, so extractors run in parallel with each
other (MediaPipe and onnxruntime release the GIL) and with the next frames. A
result that misses the frame's deadline is not waited for: the frame is fused
without it and a `frame_drop` (reason `timeout`) record says so.

Frames are submitted by the stage's read-ahead (operators/extraction/read_ahead.py)
as soon as a source yields them; the `extract` step only takes the results up. The
workers of one process share one orchestrator per flow (`SharedOrchestrator`): one
model instance per extractor per process, since more instances than cores buy
nothing.

An extractor with a declared rate (`extract.every`, N > 1) gets only the frames
it is due on (`frame_id % N == K`); fusion carries its last result over the others.

With the cascade (`extract.cascade`), pose and hands wait for the frame's face result
and run only when it found a face; otherwise they yield an empty observation marked
as skipped (no trigger can fire without a face, docs/algorithms.md).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import CancelledError, Future, InvalidStateError, TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from facemoment.core.config import Config
from facemoment.core.config.cameras import stream_rates
from facemoment.core.config.floors import camera_budgets
from facemoment.core.config.rates import is_due
from facemoment.core.records import CameraRates, FrameDrop, FrameExtract, FrameSkip, Level, ModelsReady, Timing
from facemoment.core.streams import ItemsAndRecords, split_records
from facemoment.core.types import Extracted, Frame, FramePresence, Observation, TraceRecord
from facemoment.runtime import readiness
from operators.extraction.budget import Budget, someone_there
from operators.extraction.lanes import Job, Lane, LaneLoad

log = logging.getLogger(__name__)

Item = Union[Extracted, TraceRecord, ModelsReady]

# The extractors the cascade holds back until face has looked at the frame.
CASCADED = ("pose", "gesture")
# Signal on the empty observation of an extractor the cascade skipped.
SKIPPED_NO_FACE = "skipped_no_face"


def found_nobody(face: Optional[Observation]) -> bool:
    """The cascade's test: a face result that ran and found no face.

    A missing, skipped or failed result is not "nobody": the held extractors then run.
    """
    return face is not None and face.error is None and not face.faces


@dataclass
class Submitted:
    """One frame's jobs on the lanes."""

    frame: Frame
    start_ns: int  # perf_counter_ns at submission
    deadline_ns: Optional[int]  # perf_counter_ns; None waits for every result
    depths: Dict[str, int]  # each lane's queue when the frame joined it
    jobs: Dict[str, Job]

    def settled(self) -> bool:
        """Every result is in, or the deadline passed: collecting it will not wait."""
        if all(job.future.done() for job in self.jobs.values()):
            return True
        return self.deadline_ns is not None and time.perf_counter_ns() >= self.deadline_ns

    def cancel(self) -> None:
        for job in self.jobs.values():
            job.future.cancel()


class Orchestrator:
    """Runs the configured extractors on batches of frames with a per-frame deadline."""

    def __init__(
        self,
        cfg: Config,
        factory: Optional[Callable[[str, Config], object]] = None,
        budget: Optional[Budget] = None,
    ):
        if factory is None:
            from operators.extraction.registry import build_extractor

            factory = build_extractor
        self.cfg = cfg
        # Which extractors run on each frame beyond the declared rates (None: all due ones).
        self.budget = budget
        self._budget_records: List[CameraRates] = []
        self.deadline_ns = int(cfg.extract.deadline_ms * 1e6) if cfg.extract.deadline_ms > 0 else None
        self.trace = Level.parse(cfg.output.trace) >= Level.NORMAL
        # Declared rates per camera (its own `every`, or extract.every).
        self.rates = stream_rates(cfg)
        self.cascade = bool(cfg.extract.cascade)
        self.lanes: Dict[str, Lane] = {
            name: Lane(name, (lambda n=name: factory(n, cfg))) for name in cfg.extract.extractors
        }
        for lane in self.lanes.values():
            lane.ready.wait()
        self.load = LaneLoad(self.lanes)
        # Every model is loaded: tell a waiting parent (ready file) and the trace (first batch).
        ready = readiness.announce(cfg.output.ready_file, list(self.lanes))
        self._ready_record: Optional[ModelsReady] = ready if ready.wanted_at(Level.parse(cfg.output.trace)) else None
        self._prefetch_lock = threading.Lock()
        # By (stream, frame id), but a result belongs to the very Frame it was
        # computed on: a publisher may send two different frames with one id.
        self._prefetched: Dict[Tuple[str, int], List[Submitted]] = {}

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()

    def _submit(self, frame: Frame) -> Submitted:
        start = time.perf_counter_ns()
        deadline = start + self.deadline_ns if self.deadline_ns is not None else None
        depths = {name: lane.depth for name, lane in self.lanes.items()}
        names = [name for name in self.lanes if is_due(frame.frame_id, self.rates.get(frame.stream_id, name))]
        if self.budget is not None:
            behind = () if deadline is None else tuple(
                name for name in names if self.lanes[name].expected_wait_ns(start) > self.deadline_ns
            )
            skipped = [name for name in self.lanes if name not in names]
            costs = {name: lane.typical_ns / 1e9 for name, lane in self.lanes.items()}
            planned, records = self.budget.plan(
                frame, names, max(depths.values(), default=0), self.load.sample(), behind, skipped, costs
            )
            names = list(planned)
            if records:
                with self._prefetch_lock:
                    self._budget_records.extend(records)
        jobs = {name: Job(frame, deadline) for name in names}
        held = {name: job for name, job in jobs.items() if self.cascade and name in CASCADED and "face" in jobs}
        for name, job in jobs.items():
            if name not in held:
                self.lanes[name].submit(job)
        if held:
            jobs["face"].future.add_done_callback(functools.partial(self._after_face, held))
        if self.budget is not None and "face" in jobs:
            jobs["face"].future.add_done_callback(functools.partial(self._tell_budget, frame))
        return Submitted(frame, start, deadline, depths, jobs)

    def _tell_budget(self, frame: Frame, face: Future) -> None:
        obs = face.result() if not face.cancelled() and face.exception() is None else None
        if obs is not None and self.budget is not None:
            self.budget.saw_face(frame.stream_id, frame.t_src_ns, someone_there(obs.faces, self.cfg.fusion.gate))

    def _after_face(self, held: Dict[str, Job], face: Future) -> None:
        """The cascade: run the held extractors unless face found nobody on the frame."""
        obs = face.result() if not face.cancelled() and face.exception() is None else None
        nobody = found_nobody(obs)
        for name, job in held.items():
            if not nobody:
                self.lanes[name].submit(job)
                continue
            frame = job.frame
            skipped = Observation(name, frame.stream_id, frame.frame_id, frame.t_src_ns, signals={SKIPPED_NO_FACE: 1.0})
            try:
                job.future.set_result(skipped)
            except InvalidStateError:  # cancelled meanwhile: the source dropped the frame
                pass

    def prefetch(self, frame: Frame) -> Submitted:
        """Start extracting a frame the moment its source yields it.

        The extraction step then only collects the results: the lanes work on the
        next frames while the dataflow is busy with earlier ones, instead of idling
        between batches. Its deadline runs from here.
        """
        submitted = self._submit(frame)
        with self._prefetch_lock:
            self._prefetched.setdefault((frame.stream_id, frame.frame_id), []).append(submitted)
        return submitted

    def _take_prefetched(self, stream_id: str, frame_id: int, frame: Optional[Frame]) -> List[Submitted]:
        """The prefetched work for ``frame`` (every frame with that id when None)."""
        key = (stream_id, frame_id)
        with self._prefetch_lock:
            entries = self._prefetched.get(key, [])
            taken = [e for e in entries if frame is None or e.frame is frame]
            rest = [e for e in entries if not (frame is None or e.frame is frame)]
            if rest:
                self._prefetched[key] = rest
            else:
                self._prefetched.pop(key, None)
        return taken

    def discard(self, stream_id: str, frame_id: int, frame: Optional[Frame] = None) -> None:
        """A prefetched frame the source dropped: its jobs are cancelled, not run."""
        for submitted in self._take_prefetched(stream_id, frame_id, frame):
            submitted.cancel()

    def run(self, frames: Sequence[Frame]) -> List[Item]:
        out: List[Item] = []
        if self._ready_record is not None:
            out.append(self._ready_record)
            self._ready_record = None
        submitted = []
        for frame in frames:
            ready = self._take_prefetched(frame.stream_id, frame.frame_id, frame)
            submitted.append(ready[0] if ready else self._submit(frame))
        with self._prefetch_lock:  # the budget's schedule changes, up to these frames
            out.extend(self._budget_records)
            self._budget_records = []
        for work in submitted:
            frame, start, deadline, depths, jobs = work.frame, work.start_ns, work.deadline_ns, work.depths, work.jobs
            extract_wall_ns = time.time_ns()
            scheduled = tuple(jobs) if self.budget is not None else None
            out.append(FramePresence(frame.stream_id, frame.frame_id, frame.t_src_ns, extract_wall_ns, scheduled))
            missed: List[str] = []
            for name, job in jobs.items():
                obs = self._collect(name, job, deadline)
                if obs is None:
                    missed.append(name)
                    continue
                obs.extract_wall_ns = extract_wall_ns
                out.append(obs)
                if SKIPPED_NO_FACE in obs.signals:
                    if self.trace:
                        out.append(FrameSkip(frame.stream_id, frame.frame_id, name, "no_face"))
                    continue
                if self.trace:
                    out.append(self._timing(frame, name, obs.processing_ms, depths[name]))
                    out.append(_frame_extract(obs))
            elapsed_ms = (time.perf_counter_ns() - start) / 1e6
            if missed:
                if self.budget is not None:
                    self.budget.missed_deadline(frame.stream_id, frame.t_src_ns, missed)
                out.append(
                    FrameDrop(
                        frame_id=frame.frame_id,
                        stream=frame.stream_id,
                        dropped_frame_ids=[frame.frame_id],
                        reason="timeout",
                        extractors=missed,
                        queue_depth=max(depths[n] for n in missed),
                        threshold_ms=self.cfg.extract.deadline_ms,
                    )
                )
            if self.trace:
                out.append(self._timing(frame, "orchestrator", elapsed_ms, max((depths[n] for n in jobs), default=0)))
        if self.trace:
            out.extend(self._late_reports())
        return out

    def _collect(self, name: str, job: Job, deadline: Optional[int]) -> Optional[Observation]:
        timeout = None if deadline is None else max(0.0, (deadline - time.perf_counter_ns()) / 1e9)
        try:
            obs = job.future.result(timeout=timeout)
        except (FutureTimeout, CancelledError):
            job.timed_out = True
            return None
        except Exception as exc:
            # The future keeps the exception; its traceback would keep this frame
            # (and the image it holds) alive in a reference cycle.
            exc.__traceback__ = None
            frame = job.frame
            return Observation(name, frame.stream_id, frame.frame_id, frame.t_src_ns, error=f"{type(exc).__name__}: {exc}")
        if obs is None:  # skipped by the lane: it could not finish in time
            job.timed_out = True
            return None
        if not obs.processing_ms and job.started_ns:
            obs.processing_ms = (time.perf_counter_ns() - job.started_ns) / 1e6
        return obs

    def _timing(self, frame: Frame, component: str, processing_ms: float, depth: int) -> Timing:
        threshold = self.cfg.extract.deadline_ms if self.deadline_ns is not None else None
        return Timing(
            frame_id=frame.frame_id,
            stream=frame.stream_id,
            component=component,
            processing_ms=round(processing_ms, 3),
            queue_depth=depth,
            threshold_ms=threshold,
            is_slow=bool(threshold is not None and processing_ms > threshold),
        )

    def _late_reports(self) -> Iterable[Timing]:
        for name, lane in self.lanes.items():
            for job in lane.take_late():
                obs = job.future.result()
                record = self._timing(job.frame, name, obs.processing_ms, 0)
                record.late = True
                record.is_slow = True
                yield record


def _frame_extract(obs: Observation) -> FrameExtract:
    return FrameExtract(
        frame_id=obs.frame_id,
        stream=obs.stream_id,
        source=obs.source,
        face_count=len(obs.faces),
        pose_count=len(obs.poses),
        gesture_detected=any(h.gesture not in ("none", "") for h in obs.hands),
        signals={k: round(float(v), 4) for k, v in obs.signals.items()},
        processing_ms=round(obs.processing_ms, 3),
        error=obs.error,
    )


def process_budget(cfg: Config, live: bool) -> Optional[Budget]:
    """The budget `budget.mode` asks for: `auto` budgets live sources only."""
    mode = cfg.budget.mode
    if mode == "off" or (mode == "auto" and not live):
        return None
    rates = stream_rates(cfg)

    def declared(stream_id: str, name: str) -> int:
        rate = rates.get(stream_id, name)
        return rate.every if rate is not None else 1

    return Budget(cfg.budget, cfg.extract.extractors, live, per_camera=camera_budgets(cfg), declared=declared)


class SharedOrchestrator:
    """The one orchestrator of a flow in this process, shared by its workers.

    Built (models loaded) when the first of the flow's read-ahead partitions starts,
    so a live stream's first frames are not lost while models load; closed when the
    last one closes. Belongs to the flow that made it: nothing process-wide links a
    source to the extract step.
    """

    def __init__(self, cfg: Config, factory: Optional[Callable[[str, Config], object]] = None, live: bool = False):
        self.cfg = cfg
        self._factory = factory
        self.live = live
        self._lock = threading.Lock()
        self._users = 0
        self._current: Optional[Orchestrator] = None

    def acquire(self) -> Orchestrator:
        with self._lock:
            self._users += 1
            return self._started()

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._current is not None:
                self._current.close()  # lanes finish what they were given first
                self._current = None

    def _started(self) -> Orchestrator:
        if self._current is None:
            self._current = Orchestrator(self.cfg, self._factory, process_budget(self.cfg, self.live))
        return self._current

    def run(self, frames: List[Frame]) -> List[Item]:
        """The results of this worker's batch of frames (read ahead, so mostly ready)."""
        with self._lock:
            orchestrator = self._started()
        return orchestrator.run(frames)


@operator
def extract(step_id: str, frames: Stream[Frame], orchestrator: SharedOrchestrator) -> ItemsAndRecords[Extracted]:
    """Stateless per-frame extraction, extractors in parallel, with a deadline: each
    frame's presence and observations, and timing/drop records."""
    return split_records("split", op.flat_map_batch("extract", frames, orchestrator.run))
