"""Per-frame extraction with a deadline: the seed's ExtractorOrchestrator inside a
Bytewax step.

Each Bytewax worker owns one `Orchestrator`; it runs every extractor on a lane (a
thread that owns that extractor's model, since MediaPipe graphs are bound to one
thread). A batch of frames is submitted to all lanes at once, so extractors run in
parallel with each other (MediaPipe and onnxruntime release the GIL) and with the
next frames. A result that misses the frame's deadline is not waited for: the frame
is fused without it and a `frame_drop` (reason `timeout`) record says so. A lane
skips jobs that are already past their deadline when it reaches them, so one slow
frame does not make every following frame late.

An extractor with a declared rate (`extract.every`, N > 1) gets only the frames
it is due on (`frame_id % N == K`); fusion carries its last result over the others.

With the cascade (`extract.cascade`), pose and hands wait for the frame's face result
and run only when it found a face; otherwise they yield an empty observation marked
as skipped (no trigger can fire without a face, docs/algorithms.md).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from concurrent.futures import CancelledError, Future, InvalidStateError, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from facemoment.core.config import Config
from facemoment.core.config.rates import extractor_rates, is_due
from facemoment.core.records import FrameDrop, FrameExtract, FrameSkip, Level, ModelsReady, Timing
from facemoment.core.streams import ItemsAndRecords, split_records
from facemoment.runtime import readiness
from facemoment.core.types import Frame, Observation, TraceRecord
from operators.align import FRAME_MARKER

log = logging.getLogger(__name__)

Item = Union[Observation, TraceRecord, ModelsReady]

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
class _Job:
    frame: Frame
    deadline_ns: Optional[int]  # perf_counter_ns; None waits forever
    future: Future = field(default_factory=Future)
    started_ns: int = 0
    timed_out: bool = False


# (frame, submitted at perf_counter_ns, deadline, lane depths, jobs by extractor)
_Submitted = Tuple[Frame, int, Optional[int], Dict[str, int], Dict[str, "_Job"]]


class Lane:
    """One extractor on its own thread, jobs in submission order."""

    def __init__(self, name: str, factory: Callable[[], object]):
        self.name = name
        self._factory = factory
        self._jobs: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._typical_ns = 0
        # Results that arrived after their deadline, reported on the next batch.
        self.late: List[_Job] = []
        self._thread = threading.Thread(target=self._run, name=f"extract-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, job: _Job) -> _Job:
        with self._lock:
            self._pending += 1
        self._jobs.put(job)
        return job

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        extractor = None
        try:
            extractor = self._factory()
            # Build the model graphs now: the first frame's deadline is for the
            # frame, not for loading models.
            load = getattr(extractor, "load", None)
            if load is not None:
                load()
        except Exception as exc:  # reported per job below, the stream goes on
            load_error = f"{type(exc).__name__}: {exc}"
            log.error("%s extractor could not start: %s", self.name, load_error)
        else:
            load_error = None
        self.ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            if not job.future.set_running_or_notify_cancel():
                with self._lock:
                    self._pending -= 1
                continue  # the source dropped the frame before it was extracted
            try:
                # Skip a job that cannot finish before its deadline, judged by this
                # extractor's recent cost: its result would come too late to use,
                # and the time is better spent on the next frame.
                if job.deadline_ns is not None and time.perf_counter_ns() + self._typical_ns > job.deadline_ns:
                    job.future.set_result(None)  # None: skipped, not run
                    # The estimate only learns from runs: let it fade while skipping,
                    # so one slow spell cannot switch the extractor off for good.
                    self._typical_ns -= self._typical_ns // 8
                    continue
                job.started_ns = time.perf_counter_ns()
                if load_error is not None:
                    raise RuntimeError(load_error)
                job.future.set_result(extractor.extract(job.frame))  # type: ignore[union-attr]
                spent = time.perf_counter_ns() - job.started_ns
                self._typical_ns += (spent - self._typical_ns) // 8  # EWMA of the cost
            except Exception as exc:  # a bad frame must not stop the lane
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                    if job.timed_out and job.future.done() and job.future.exception() is None \
                            and job.future.result() is not None:
                        self.late.append(job)
        close = getattr(extractor, "close", None)
        if close is not None:
            close()


class Orchestrator:
    """Runs the configured extractors on batches of frames with a per-frame deadline."""

    def __init__(self, cfg: Config, factory: Optional[Callable[[str, Config], object]] = None):
        if factory is None:
            from operators.extraction.registry import build_extractor

            factory = build_extractor
        self.cfg = cfg
        self.deadline_ns = int(cfg.extract.deadline_ms * 1e6) if cfg.extract.deadline_ms > 0 else None
        self.trace = Level.parse(cfg.output.trace) >= Level.NORMAL
        self.rates = extractor_rates(cfg.extract)
        self.cascade = bool(cfg.extract.cascade)
        self.lanes: Dict[str, Lane] = {
            name: Lane(name, (lambda n=name: factory(n, cfg))) for name in cfg.extract.extractors
        }
        for lane in self.lanes.values():
            lane.ready.wait()
        # Every model is loaded: tell a waiting parent (ready file) and the trace (first batch).
        ready = readiness.announce(cfg.output.ready_file, list(self.lanes))
        self._ready_record: Optional[ModelsReady] = ready if ready.wanted_at(Level.parse(cfg.output.trace)) else None
        self._prefetch_lock = threading.Lock()
        # By (stream, frame id), but a result belongs to the very Frame it was
        # computed on: a publisher may send two different frames with one id.
        self._prefetched: Dict[Tuple[str, int], List[_Submitted]] = {}

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()

    def _submit(self, frame: Frame) -> "_Submitted":
        start = time.perf_counter_ns()
        deadline = start + self.deadline_ns if self.deadline_ns is not None else None
        depths = {name: lane.depth for name, lane in self.lanes.items()}
        jobs = {name: _Job(frame, deadline) for name in self.lanes if is_due(frame.frame_id, self.rates.get(name))}
        held = {name: job for name, job in jobs.items() if self.cascade and name in CASCADED and "face" in jobs}
        for name, job in jobs.items():
            if name not in held:
                self.lanes[name].submit(job)
        if held:
            jobs["face"].future.add_done_callback(functools.partial(self._after_face, held))
        return (frame, start, deadline, depths, jobs)

    def _after_face(self, held: Dict[str, _Job], face: Future) -> None:
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

    def prefetch(self, frame: Frame) -> None:
        """Start extracting a frame the moment a live source accepts it.

        The extraction step then only collects the results: the lanes work on the
        next frames while the dataflow is busy with earlier ones, instead of idling
        between batches. Its deadline runs from here.
        """
        submitted = self._submit(frame)
        with self._prefetch_lock:
            self._prefetched.setdefault((frame.stream_id, frame.frame_id), []).append(submitted)

    def _take_prefetched(self, stream_id: str, frame_id: int, frame: Optional[Frame]) -> List["_Submitted"]:
        """The prefetched work for ``frame`` (every frame with that id when None)."""
        key = (stream_id, frame_id)
        with self._prefetch_lock:
            entries = self._prefetched.get(key, [])
            taken = [e for e in entries if frame is None or e[0] is frame]
            rest = [e for e in entries if not (frame is None or e[0] is frame)]
            if rest:
                self._prefetched[key] = rest
            else:
                self._prefetched.pop(key, None)
        return taken

    def discard(self, stream_id: str, frame_id: int, frame: Optional[Frame] = None) -> None:
        """A prefetched frame the source dropped: its jobs are cancelled, not run."""
        for submitted in self._take_prefetched(stream_id, frame_id, frame):
            for job in submitted[4].values():
                job.future.cancel()

    def run(self, frames: Sequence[Frame]) -> List[Item]:
        out: List[Item] = []
        if self._ready_record is not None:
            out.append(self._ready_record)
            self._ready_record = None
        submitted = []
        for frame in frames:
            ready = self._take_prefetched(frame.stream_id, frame.frame_id, frame)
            submitted.append(ready[0] if ready else self._submit(frame))
        for frame, start, deadline, depths, jobs in submitted:
            extract_wall_ns = time.time_ns()
            out.append(Observation(FRAME_MARKER, frame.stream_id, frame.frame_id, frame.t_src_ns, extract_wall_ns=extract_wall_ns))
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

    def _collect(self, name: str, job: _Job, deadline: Optional[int]) -> Optional[Observation]:
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
            with lane._lock:
                late, lane.late = lane.late, []
            for job in late:
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


_shared_lock = threading.Lock()
_shared: Optional[Orchestrator] = None


def worker_orchestrator(cfg: Config) -> Orchestrator:
    """The process's orchestrator, built (models loaded) on first use.

    Worker threads of one process share it: one model instance per extractor per
    process. More instances than cores buys nothing, and MediaPipe's inference
    threads of surplus graphs spend their time waiting for cores in the kernel.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.cfg is not cfg:
            if _shared is not None:
                _shared.close()
            _shared = Orchestrator(cfg)
        return _shared


def extract_batch(cfg: Config, frames: List[Frame]) -> List[Item]:
    """The process's orchestrator on this worker's batch of frames."""
    return worker_orchestrator(cfg).run(frames)


@operator
def extract(step_id: str, frames: Stream[Frame], cfg: Config) -> ItemsAndRecords[Observation]:
    """Stateless per-frame extraction, extractors in parallel, with a deadline:
    observations (a frame marker included) and timing/drop records."""
    return split_records("split", op.flat_map_batch("extract", frames, functools.partial(extract_batch, cfg)))
