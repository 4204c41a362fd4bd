"""OBS messages in: observations from extractor processes elsewhere (the remote B*).

One partition per stream, one SUB socket connected to every OBS publisher of that
stream (ZeroMQ fair-queues them), topic ``msg``, and, for each ``unix:///path``
input, a Unix datagram socket bound at the path that any number of extractors send
to (one OBS text per datagram, as visualbase's ``create_message_sender("uds", ...)``
sends). Each message is parsed with
facemoment.formats.obs; the result is an :class:`Observation` exactly like one an
in-process extractor produces, stamped with its arrival time (``extract_wall_ns``), so
alignment, lateness and fusion treat it the same.

Accounting, as the frame source does it:

- ``malformed_message`` (kind ``obs``): a message that is not OBS text; counted
  and skipped, at most one record per kind per second (connectors.malformed_tally);
  kind ``publishers``: a message naming a publisher beyond :data:`MAX_PUBLISHERS`.
- ``obs_drop``: observations or records shed because the fusion side fell behind
  (at most :data:`MAX_HELD` held for the merge, :data:`MAX_PENDING_RECORDS` records
  waiting): the oldest go, counted in ``dropped_obs`` / ``records_dropped``, one
  record per second.
- ``frame_drop`` (reason ``queue_full``, where ``obs``): a gap in the frame ids of
  one publisher's ``frame`` markers (publishers name themselves in ``pub=``):
  frames that publisher never received, or whose OBS were lost on the way. Ids
  that advance by a publisher's usual step (a proxy stream's, connectors.id_steps)
  are its rate, not gaps.
- ``source_summary`` at the end: messages by source, malformed, lost frames.

Event time across publishers: a publisher that runs ahead (it has less to do)
must not move alignment's watermark past frames a slower one has not delivered
yet, or the slower one's observations would all come late. So observations are
held here until every publisher still at work has reached their time (the merge
of ordered streams); a publisher silent for ``hold_s`` is not waited for (its
observations then come late and are accounted as such), nor is one that ended.
Publishers are told apart by ``pub=``; messages without it count as one publisher.

The stream ends once every publisher sent its ``OBS src=end`` (``publishers`` of
them, by default one per address), after ``idle_timeout_s`` without a message (once messages have
started), after ``connect_timeout_s`` without any, or when ``stop_event`` is set.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter, deque
from datetime import timedelta
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from facemoment.core.addresses import UNIX_SCHEME, parse_address
from connectors.id_steps import IdStep
from connectors.malformed_tally import MALFORMED_INTERVAL_S, MalformedTally
from connectors.receiver import DatagramReceiver, ReceivedBatches, SubReceiver
from facemoment.core.records import FrameDrop, ObsDrop, SourceSummary
from facemoment.core.types import Extracted, FramePresence, Observation, TraceRecord
from facemoment.formats.obs import parse_obs_from
from facemoment.formats.wire import MSG_TOPIC, WireError, split_text_parts

log = logging.getLogger(__name__)

END_SOURCE = "end"  # a publisher's last message (connectors.obs_pub)
RECEIVE_HWM = 100_000  # OBS are small: the fusion side keeps what it is sent
POLL_MS = 100
# Bounds on what waits here for the dataflow: a flood costs counted drops, not memory.
MAX_HELD = 50_000  # observations held for the merge of publishers
MAX_PENDING_RECORDS = 10_000  # trace records waiting for the next batch
# Publishers told apart (by pub=); a message naming one more is malformed (kind publishers).
MAX_PUBLISHERS = 256
IDLE_WAKE = timedelta(milliseconds=20)

ObsItem = Union[Extracted, TraceRecord]


class _ObsPartition(ReceivedBatches, StatefulSourcePartition[ObsItem, Dict[str, Any]]):
    IDLE_WAKE = IDLE_WAKE

    def __init__(self, source: "ObsSource", resume_state: Optional[Dict[str, Any]]) -> None:
        self._source = source
        self._stream_id = source.stream_id
        state = resume_state or {}
        self._last_marker: Dict[str, int] = dict(state.get("last_marker") or {})
        self._ended_publishers: set = set(state.get("ended") or ())
        self._counts: Counter = Counter(state.get("counts") or {})
        self._steps: Dict[str, IdStep] = {p: IdStep(d) for p, d in (state.get("steps") or {}).items()}
        self._lock = threading.Lock()
        self._items: Deque[ObsItem] = deque()  # records, ready to go
        self._held: List[Tuple[int, int, Extracted]] = []  # (t_ns, arrival order, obs), a heap
        self._order = itertools.count()
        malformed = state.get("malformed")
        if malformed is None and self._counts.get("malformed"):
            malformed = {"obs": self._counts["malformed"]}  # a snapshot from before kinds were kept
        self._malformed = MalformedTally(self._stream_id, dict(malformed or {}))
        self._shed_held = 0  # observations shed since the last obs_drop record
        self._shed_records = 0
        self._shed_reported = 0.0
        self._progress: Dict[str, int] = {}  # publisher -> newest t_ns it sent
        self._heard: Dict[str, float] = {}  # publisher -> monotonic time of its last message
        self._started = time.monotonic()
        self._last_receive: Optional[float] = None
        publishers: List[str] = []  # ZeroMQ publishers, connected to
        paths: List[str] = []  # unix:// inputs, bound here
        for address in source.addresses:
            parsed = parse_address(address, "OBS publisher", unix=True)
            if parsed.scheme == UNIX_SCHEME:
                paths.append(parsed.path)
            else:
                publishers.append(address)
        self._receiver: Optional[SubReceiver] = None
        self._datagrams: Optional[DatagramReceiver] = None
        if publishers:
            self._receiver = SubReceiver(
                publishers,
                source.topic,
                RECEIVE_HWM,
                self._handle,
                name=f"obs-in-{self._stream_id}",
                what="OBS publisher",
                poll_ms=POLL_MS,
            )
        if paths:
            try:
                # Bound here: any number of extractors send their datagrams to it.
                self._datagrams = DatagramReceiver(paths, self._handle_datagram, name=f"obs-dgram-{self._stream_id}", poll_ms=POLL_MS)
            except ValueError:
                if self._receiver is not None:
                    self._receiver.close()
                raise

    # ------------------------------------------------------------ receive threads

    def _handle_datagram(self, text: Optional[str], error: Optional[Exception]) -> None:
        self._handle_text(text, None if error is None else WireError("text", str(error)))

    def _handle(self, parts: List[bytes]) -> None:
        try:
            _topic, text = split_text_parts(parts)
        except WireError as exc:
            self._handle_text(None, exc)
            return
        self._handle_text(text)

    def _handle_text(self, text: Optional[str], error: Optional[WireError] = None) -> None:
        now_ns = time.time_ns()
        try:
            if error is not None:
                raise error
            obs, publisher = parse_obs_from(text or "", self._stream_id)
        except WireError as exc:
            with self._lock:
                self._last_receive = time.monotonic()
                self._counts["malformed"] += 1
                self._malformed.add("obs", exc.message)
            return
        obs.extract_wall_ns = now_ns  # extracted elsewhere: its arrival here is what alignment waits from
        with self._lock:
            self._last_receive = time.monotonic()
            if publisher not in self._heard and len(self._heard) >= MAX_PUBLISHERS:
                # Every publisher costs state here: garbage naming new ones must not grow it.
                self._counts["malformed"] += 1
                self._malformed.add("publishers", f"more than {MAX_PUBLISHERS} publishers; {publisher[:40]!r} ignored")
                return
            self._heard[publisher] = self._last_receive
            if obs.source == END_SOURCE:
                self._ended_publishers.add(publisher)
                return
            self._progress[publisher] = max(obs.t_ns, self._progress.get(publisher, obs.t_ns))
            self._counts[f"obs_{obs.source}"] += 1
            if isinstance(obs, FramePresence):
                self._check_gap(publisher, obs.frame_id)
            if len(self._held) >= MAX_HELD:
                # The oldest in event time goes: the merge would release it first anyway.
                heapq.heappop(self._held)
                self._counts["dropped_obs"] += 1
                self._shed_held += 1
            heapq.heappush(self._held, (obs.t_ns, next(self._order), obs))

    def _check_gap(self, publisher: str, frame_id: int) -> None:
        last = self._last_marker.get(publisher)
        self._last_marker[publisher] = frame_id if last is None else max(last, frame_id)
        # A publisher reading a proxy stream sees ids that advance by its step.
        steps = self._steps.setdefault(publisher, IdStep())
        gap = steps.gap(last, frame_id)
        if gap is None or last is None:
            return
        self._counts["lost_frames"] += gap.count
        self._record(
            FrameDrop(
                frame_id=frame_id,
                stream=self._stream_id,
                dropped_frame_ids=steps.listed(last, gap),
                dropped_count=gap.count,
                dropped_range=[gap.first, gap.last],
                reason="queue_full",
                where="obs",
                publisher=publisher,
                queue_depth=None,
            )
        )

    def _record(self, record: TraceRecord) -> None:
        """A record for the next batch; the oldest goes beyond the bound. Caller holds the lock."""
        if len(self._items) >= MAX_PENDING_RECORDS:
            self._items.popleft()
            self._counts["records_dropped"] += 1
            self._shed_records += 1
        self._items.append(record)

    def _flush_records(self, force: bool = False) -> None:
        """Malformed counts and shed observations as records, once a second. Caller holds the lock."""
        for record in self._malformed.due(force):
            self._record(record)
        now = time.monotonic()
        if (self._shed_held or self._shed_records) and (force or now - self._shed_reported >= MALFORMED_INTERVAL_S):
            self._shed_reported = now
            self._record(
                ObsDrop(
                    stream=self._stream_id,
                    dropped_obs=self._shed_held,
                    records_dropped=self._shed_records,
                    held=len(self._held),
                    reason="queue_full",
                )
            )
            self._shed_held = self._shed_records = 0

    # ------------------------------------------------------------ worker thread

    def _end_reason(self) -> Optional[str]:
        source = self._source
        if source.stop_event is not None and source.stop_event.is_set():
            return "stop_event"
        with self._lock:
            last = self._last_receive
            ended = len(self._ended_publishers)
        if ended >= source.publishers:
            return "publishers_ended"
        now = time.monotonic()
        if last is not None and source.idle_timeout_s is not None and now - last >= source.idle_timeout_s:
            return "idle_timeout"
        if last is None and source.connect_timeout_s is not None and now - self._started >= source.connect_timeout_s:
            return "connect_timeout"
        return None

    def _horizon(self) -> Optional[int]:
        """Observations up to this event time can go (None: all of them). Caller holds the lock."""
        now = time.monotonic()
        hold_s = self._source.hold_s
        waiting = [
            p for p in self._progress if p not in self._ended_publishers and now - self._heard.get(p, now) < hold_s
        ]
        if len(self._progress) < self._source.publishers and now - self._started < hold_s:
            return -1  # not every publisher has spoken yet: hold everything for now
        if not waiting:
            return None
        return min(self._progress[p] for p in waiting)

    def _take(self, everything: bool = False) -> List[ObsItem]:
        with self._lock:
            self._flush_records(force=everything)
            out: List[ObsItem] = list(self._items)
            self._items.clear()
            horizon = None if everything else self._horizon()
            while self._held and (horizon is None or self._held[0][0] <= horizon):
                out.append(heapq.heappop(self._held)[2])
        return out

    def _take_rest(self) -> List[ObsItem]:
        return self._take(everything=True)

    def _summary(self, reason: str) -> TraceRecord:
        with self._lock:
            counts = dict(self._counts)
        return SourceSummary(
            stream=self._stream_id,
            address=",".join(self._source.addresses),
            end_reason=reason,
            duration_s=round(time.monotonic() - self._started, 3),
            lost_on_wire=counts.get("lost_frames", 0),
            malformed_obs=counts.get("malformed", 0),
            dropped_obs=counts.get("dropped_obs", 0),
            records_dropped=counts.get("records_dropped", 0),
            obs_received={k[4:]: v for k, v in counts.items() if k.startswith("obs_")},
            publishers=sorted(self._last_marker),
            publishers_ended=sorted(self._ended_publishers),
        )

    @override
    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "last_marker": dict(self._last_marker),
                "counts": dict(self._counts),
                "malformed": dict(self._malformed.counts),
                "ended": sorted(self._ended_publishers),
                "steps": {p: steps.recent() for p, steps in self._steps.items()},
            }

    def _stop_receiver(self) -> None:
        for receiver in (self._receiver, self._datagrams):
            if receiver is not None:
                receiver.stop()

    @override
    def close(self) -> None:
        for receiver in (self._receiver, self._datagrams):
            if receiver is not None:
                receiver.close()


class ObsSource(FixedPartitionedSource[ObsItem, Dict[str, Any]]):
    """Observations of one stream from OBS publishers at `addresses`: ZeroMQ
    addresses (connected) or ``unix:///path`` (bound here; several may send to it).
    `publishers`: how many publishers' end messages end the stream (0: one per address).
    """

    def __init__(
        self,
        stream_id: str,
        addresses: List[str],
        idle_timeout_s: Optional[float] = None,
        connect_timeout_s: Optional[float] = None,
        stop_event: Optional[threading.Event] = None,
        topic: bytes = MSG_TOPIC,
        hold_s: float = 1.0,
        publishers: int = 0,
    ) -> None:
        if not addresses:
            raise ValueError(f"stream {stream_id!r}: no OBS publisher address")
        self.addresses = [parse_address(a, "OBS publisher", unix=True).text for a in addresses]
        self.publishers = publishers or len(self.addresses)
        self.stream_id = stream_id
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.stop_event = stop_event
        # How long a silent publisher is waited for before the others go on without it.
        self.hold_s = hold_s
        self.topic = topic

    def list_parts(self) -> List[str]:
        return [f"obs_{self.stream_id}"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Dict[str, Any]]) -> _ObsPartition:
        return _ObsPartition(self, resume_state)


__all__ = ["ObsSource", "ObsItem"]
