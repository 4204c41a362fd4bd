"""Extractor lanes: one extractor on its own thread, jobs in submission order.

A lane's thread builds and owns its extractor's model (MediaPipe graphs are bound
to the thread that made them). A job that cannot finish before its deadline,
judged by the extractor's recent cost, is skipped rather than run late.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from facemoment.core.types import Frame

log = logging.getLogger(__name__)


@dataclass
class Job:
    frame: Frame
    deadline_ns: Optional[int]  # perf_counter_ns; None waits forever
    future: Future = field(default_factory=Future)
    started_ns: int = 0
    timed_out: bool = False


class Lane:
    """One extractor on its own thread, jobs in submission order."""

    def __init__(self, name: str, factory: Callable[[], object]):
        self.name = name
        self._factory = factory
        self._jobs: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._typical_ns = 0
        self._last_ns = 0  # the last run's cost
        self._running_since = 0  # perf_counter_ns the running job started; 0: none
        self._busy_ns = 0
        # Results that arrived after their deadline, reported on the next batch.
        self.late: List[Job] = []
        self._thread = threading.Thread(target=self._run, name=f"extract-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._lock:
            return self._pending

    @property
    def busy_ns(self) -> int:
        """Wall time spent extracting so far (finished jobs)."""
        with self._lock:
            return self._busy_ns

    @property
    def typical_ns(self) -> int:
        """The usual cost of one run (a moving average; 0 before the first run)."""
        return self._typical_ns

    def expected_wait_ns(self, now: int) -> int:
        """How long a job submitted at `now` (perf_counter_ns) would take to finish, by
        this lane's recent costs: what is left of the running job, the jobs queued
        before it, and the job itself.

        A cost is the larger of the usual one and the last: the first runs on a new
        scene (a rider arriving) cost more than the blank warm-up, and the usual cost
        follows them only slowly. A job running longer than that is running slow, and
        the jobs after it are judged as slow.
        """
        with self._lock:
            cost = max(self._typical_ns, self._last_ns)
            queued = self._pending
            since = self._running_since
        left = 0
        if since:
            queued -= 1
            elapsed = max(0, now - since)
            cost = max(cost, elapsed)
            left = cost - elapsed
        return left + max(queued, 0) * cost + cost

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._pending += 1
        self._jobs.put(job)
        return job

    def take_late(self) -> List[Job]:
        """The jobs that finished after their deadline since the last call."""
        with self._lock:
            late, self.late = self.late, []
        return late

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
                with self._lock:
                    self._running_since = job.started_ns
                if load_error is not None:
                    raise RuntimeError(load_error)
                job.future.set_result(extractor.extract(job.frame))  # type: ignore[union-attr]
                spent = time.perf_counter_ns() - job.started_ns
                self._typical_ns += (spent - self._typical_ns) // 8  # EWMA of the cost
                with self._lock:
                    self._busy_ns += spent
                    self._last_ns = spent
            except Exception as exc:  # a bad frame must not stop the lane
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._running_since = 0
                    if job.timed_out and job.future.done() and job.future.exception() is None \
                            and job.future.result() is not None:
                        self.late.append(job)
        close = getattr(extractor, "close", None)
        if close is not None:
            close()


class LaneLoad:
    """The busiest lane's share of the wall clock spent extracting, over `span_s`.

    A lane busy all the time is at its capacity: more jobs only queue. Several
    cameras submit frames at once, so queue depth alone would call that overload."""

    def __init__(self, lanes: "dict[str, Lane]", span_s: float = 0.5, clock: Callable[[], int] = time.perf_counter_ns):
        self._lanes = lanes
        self._span_ns = int(span_s * 1e9)
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._busy_at = {name: lane.busy_ns for name, lane in lanes.items()}
        self.busiest = 0.0

    def sample(self) -> float:
        with self._lock:
            now = self._clock()
            elapsed = now - self._since
            if elapsed >= self._span_ns:
                busy = {name: lane.busy_ns for name, lane in self._lanes.items()}
                self.busiest = max(((busy[n] - self._busy_at[n]) / elapsed for n in busy), default=0.0)
                self._since, self._busy_at = now, busy
            return self.busiest
