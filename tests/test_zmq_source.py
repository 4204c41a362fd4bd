"""ZmqFrameSource: malformed input, gaps, restarts, drop strategies, ends, resume."""

from __future__ import annotations

import random
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest
import zmq

from facemoment.core.config import SourceConfig
from connectors.frame_buffer import TIME_REBASE_FRAMES, TimeJumpGuard
from connectors.shares import frame_gap, ids_in_share
from connectors.zmq_source import MALFORMED_INTERVAL_S, FrameBuffer, ZmqFrameSource
from facemoment.core.records import PublisherRestart, Record
from facemoment.core.types import Frame

from conftest import run_source, wait_until




def image_for(frame_id: int) -> np.ndarray:
    return np.full((4, 6, 3), frame_id % 256, np.uint8)


def spec_parts(frame_id: int, image: Optional[np.ndarray] = None) -> List[bytes]:
    image = image_for(frame_id) if image is None else image
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    return [b"frame", struct.pack("!QQIIB", frame_id, frame_id * 1_000_000, w, h, c), image.tobytes()]


class TestPublisher:
    """An XPUB bound by the test, so it can see the source's subscription arrive."""

    __test__ = False

    def __init__(self, context: zmq.Context, address: str = "tcp://127.0.0.1:*") -> None:
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.socket.setsockopt(zmq.SNDHWM, 1000)
        deadline = time.monotonic() + 10
        while True:  # rebinding a just-closed port can take a moment
            try:
                self.socket.bind(address)
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.endpoint = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.poll(50) and self.socket.recv() == b"\x01frame":
                return
        raise AssertionError("the source never subscribed")

    def send(self, parts: List[bytes]) -> None:
        self.socket.send_multipart(parts)

    def close(self) -> None:
        self.socket.close(linger=0)


class FlowRun:
    """Runs a ZmqFrameSource dataflow on this thread and a publishing script on another."""

    def __init__(self, source: ZmqFrameSource) -> None:
        self.source = source
        self.out: List[Any] = []

    def records(self, record_type: str) -> List[Dict[str, Any]]:
        return [x.to_dict() for x in self.out if isinstance(x, Record) and x.TYPE == record_type]

    def frames(self) -> List[Frame]:
        return [x for x in self.out if isinstance(x, Frame)]

    def send_and_wait(self, publisher: TestPublisher, parts: List[bytes]) -> None:
        """Every message yields at least one item (a frame or a record): wait for it."""
        before = len(self.out)
        publisher.send(parts)
        assert wait_until(lambda: len(self.out) > before), "message never came out of the dataflow"

    def run(self, script: Callable[["FlowRun"], None]) -> None:
        def stop() -> None:
            if self.source.stop_event is not None:
                self.source.stop_event.set()

        run_source(self.source, lambda: script(self), self.out, on_error=stop)


@pytest.fixture()
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_each_malformed_kind_is_counted_and_valid_frames_survive(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    header = lambda w, h, c: struct.pack("!QQIIB", 99, 0, w, h, c)  # noqa: E731
    bad_messages = {
        "part_count": [[b"frame", header(2, 2, 1)], [b"frame", header(2, 2, 1), b"\0" * 4, b"extra"]],
        "topic": [[b"frameX", header(2, 2, 1), b"\0" * 4]],  # passes the b"frame" prefix filter
        "short_header": [[b"frame", header(2, 2, 1)[:20], b"\0" * 4]],
        "payload_size": [[b"frame", header(2, 2, 1), b"\0" * 3]],
        "dimensions": [
            [b"frame", header(0, 0, 1), b""],
            [b"frame", header(20000, 20000, 3), b""],
            [b"frame", header(2, 2, 2), b"\0" * 8],
        ],
    }
    stop = threading.Event()
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0), stop_event=stop))

    def script(r: FlowRun) -> None:
        pub.wait_subscribed()
        frame_id = 0
        r.send_and_wait(pub, spec_parts(frame_id))
        for messages in bad_messages.values():
            for message in messages:
                r.send_and_wait(pub, message)
                frame_id += 1
                r.send_and_wait(pub, spec_parts(frame_id))
        stop.set()

    run.run(script)
    pub.close()
    frames = run.frames()
    assert [f.frame_id for f in frames] == list(range(9))
    assert all(np.array_equal(f.image, image_for(f.frame_id)) for f in frames)
    malformed = run.records("malformed_message")
    expected = {kind: len(messages) for kind, messages in bad_messages.items()}
    assert len(malformed) == sum(expected.values())
    final_counts = {r["kind"]: r["count"] for r in malformed}
    assert final_counts == expected
    assert all(r["stream"] == "cam0" and r["detail"] for r in malformed)
    assert run.source.partitions["cam0"].stats.malformed == expected
    assert not run.records("frame_drop")
    (summary,) = run.records("source_summary")
    assert summary["end_reason"] == "stop_event" and summary["malformed"] == expected


def test_frame_id_gaps_are_reported_as_lost_on_the_wire(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    stop = threading.Event()
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0), stop_event=stop))
    ids = [0, 1, 2, 5, 6, 10]

    def script(r: FlowRun) -> None:
        pub.wait_subscribed()
        for frame_id in ids:
            r.send_and_wait(pub, spec_parts(frame_id))
        stop.set()

    run.run(script)
    pub.close()
    assert [f.frame_id for f in run.frames()] == ids
    drops = run.records("frame_drop")
    assert [(d["frame_id"], d["dropped_frame_ids"], d["reason"], d["where"]) for d in drops] == [
        (5, [3, 4], "queue_full", "wire"),
        (10, [7, 8, 9], "queue_full", "wire"),
    ]
    assert run.source.partitions["cam0"].stats.lost_on_wire == 5


def test_a_restarted_publisher_is_rejoined(context: zmq.Context) -> None:
    first = TestPublisher(context)
    endpoint = first.endpoint
    stop = threading.Event()
    run = FlowRun(ZmqFrameSource(endpoint, "cam0", SourceConfig(buffer_frames=0), stop_event=stop))

    def script(r: FlowRun) -> None:
        first.wait_subscribed()
        for frame_id in range(5):
            r.send_and_wait(first, spec_parts(frame_id))
        first.close()
        second = TestPublisher(context, endpoint)  # same port: ZMQ reconnects the SUB
        try:
            second.wait_subscribed()
            for frame_id in range(3):
                r.send_and_wait(second, spec_parts(frame_id, np.full((2, 3), 200 + frame_id, np.uint8)))
        finally:
            second.close()
        stop.set()

    run.run(script)
    frames = run.frames()
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert all(np.array_equal(f.image, np.full((2, 3), 200 + f.frame_id, np.uint8)) for f in frames[5:])
    (restart,) = run.records("publisher_restart")
    assert (restart["previous_frame_id"], restart["frame_id"]) == (4, 0)
    assert not run.records("frame_drop")  # a restart is not a gap
    assert "kind" not in restart  # ids went back: not an id jump
    stats = run.source.partitions["cam0"].stats
    assert (stats.publisher_restarts, stats.id_jumps) == (1, 0)
    assert stats.malformed == {}  # a publisher gone is not a refused message
    # The restart record comes before the first frame of the new run.
    position = {id(x): i for i, x in enumerate(run.out)}
    (restart_item,) = [x for x in run.out if isinstance(x, PublisherRestart)]
    assert position[id(restart_item)] < position[id(frames[5])]


def test_idle_timeout_ends_the_dataflow_but_only_after_frames_started(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    idle = 0.2
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(idle_timeout_s=idle)))

    def script(r: FlowRun) -> None:
        pub.wait_subscribed()
        # Silence longer than the idle timeout before the first frame must not end the stream.
        threading.Event().wait(3 * idle)
        for frame_id in range(3):
            r.send_and_wait(pub, spec_parts(frame_id))

    run.run(script)  # returns only because the source ended by itself
    pub.close()
    assert [f.frame_id for f in run.frames()] == [0, 1, 2]
    (summary,) = run.records("source_summary")
    assert summary["end_reason"] == "idle_timeout"
    assert summary["frames_received"] == summary["frames_emitted"] == 3
    assert run.out[-1].to_dict() == summary


def test_stop_event_ends_the_dataflow(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    stop = threading.Event()
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", stop_event=stop))

    def script(r: FlowRun) -> None:
        pub.wait_subscribed()
        r.send_and_wait(pub, spec_parts(0))
        stop.set()

    run.run(script)
    pub.close()
    assert [f.frame_id for f in run.frames()] == [0]
    assert run.records("source_summary")[0]["end_reason"] == "stop_event"


def test_connect_timeout_ends_a_source_that_never_gets_a_frame(context: zmq.Context) -> None:
    pub = TestPublisher(context)  # bound, but never sends
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", connect_timeout_s=0.2))
    run.run(lambda r: None)
    pub.close()
    assert run.frames() == []
    assert run.records("source_summary")[0]["end_reason"] == "connect_timeout"


# ------------------------------------------------- partition level (no dataflow)


def take_until(part: Any, condition: Callable[[List[Any]], bool], timeout: float = 10.0) -> List[Any]:
    items: List[Any] = []
    assert wait_until(lambda: items.extend(part.next_batch()) or condition(items), timeout), items
    return items


def test_backpressure_drops_are_reported_and_the_buffer_stays_bounded(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    source = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=3, drop_strategy="skip_oldest"))
    part = source.build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        for frame_id in range(10):
            pub.send(spec_parts(frame_id))
            # Nobody calls next_batch, so the buffer must hold the newest 3 and drop the rest.
            assert wait_until(lambda: part.stats.frames_received == frame_id + 1)
        items = part.next_batch()
        frames = [x for x in items if isinstance(x, Frame)]
        (drop,) = [x.to_dict() for x in items if isinstance(x, Record)]
        assert [f.frame_id for f in frames] == [7, 8, 9]
        assert drop["record_type"] == "frame_drop" and drop["reason"] == "backpressure"
        assert drop["dropped_frame_ids"] == list(range(7)) and drop["frame_id"] == 9
        assert drop["queue_depth"] <= 3
        assert part.stats.dropped_backpressure == 7 and part.stats.frames_emitted == 3
    finally:
        part.close()
        pub.close()


def test_resume_reports_frames_missed_while_down(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    source = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0))
    part = source.build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        for frame_id in range(5):
            pub.send(spec_parts(frame_id))
        items = take_until(part, lambda got: sum(isinstance(x, Frame) for x in got) == 5)
        assert [x.frame_id for x in items] == [0, 1, 2, 3, 4]
        state = part.snapshot()
        assert state["last_frame_id"] == 4 and state["counts"]["frames_received"] == 5
    finally:
        part.close()

    resumed = source.build_part("in", "cam0", state)
    try:
        pub.wait_subscribed()
        for frame_id in (8, 9):
            pub.send(spec_parts(frame_id))
        items = take_until(resumed, lambda got: sum(isinstance(x, Frame) for x in got) == 2)
        (gap,) = [x.to_dict() for x in items if isinstance(x, Record)]
        assert gap["reason"] == "queue_full" and gap["where"] == "while_down"
        assert gap["dropped_frame_ids"] == [5, 6, 7]
        assert resumed.stats.frames_received == 7  # counts continue from the snapshot
        assert resumed.snapshot()["last_frame_id"] == 9
    finally:
        resumed.close()
        pub.close()


def test_close_releases_the_socket_and_thread(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    part = ZmqFrameSource(pub.endpoint, "cam0").build_part("in", "cam0", None)
    pub.wait_subscribed()
    part.close()
    assert not part.receiving
    # The SUB is gone: the publisher sees it unsubscribe.
    assert pub.socket.poll(10_000) and pub.socket.recv() == b"\x00frame"
    part.close()  # idempotent
    pub.close()


def test_bad_addresses_and_settings_are_refused_where_they_are_declared() -> None:
    from facemoment.core.config import ConfigError, load_config

    with pytest.raises(ValueError):
        ZmqFrameSource("localhost:5555", "cam0")
    # The settings are checked once, by the configuration, not again by the source.
    for name, value in (("drop_strategy", "newest"), ("keyframe_interval", "0"), ("idle_timeout_s", "0")):
        with pytest.raises(ConfigError, match=f"source.{name}"):
            load_config(env={f"FACEMOMENT__SOURCE__{name.upper()}": value})


# --------------------------------------------------------- the buffer, directly


class Item:
    def __init__(self, frame_id: int, nbytes: int = 0) -> None:
        self.frame_id = frame_id
        self.image = np.zeros(nbytes, np.uint8)


def _ids(items) -> List[int]:
    return [x.frame_id for x in items]


@pytest.mark.parametrize("strategy", ["skip_oldest", "skip_intermediate", "keyframe_only"])
@pytest.mark.parametrize("capacity", [1, 2, 3, 8, 0])
def test_every_offered_frame_is_emitted_or_reported(strategy: str, capacity: int) -> None:
    rng = random.Random(f"{strategy}-{capacity}")
    buffer = FrameBuffer(capacity, strategy, keyframe_interval=3)
    emitted: List[int] = []
    dropped: List[int] = []
    for frame_id in range(400):
        dropped += _ids(buffer.offer(Item(frame_id)))
        if capacity > 0:
            assert len(buffer) <= capacity
        if rng.random() < 0.2:
            emitted += [x.frame_id for x in buffer.drain()]
    emitted += [x.frame_id for x in buffer.drain()]
    assert sorted(emitted + dropped) == list(range(400))
    assert not set(emitted) & set(dropped)
    assert emitted == sorted(emitted)  # order is kept
    if strategy == "keyframe_only":
        assert all(i % 3 == 0 for i in emitted)
    if capacity == 0 and strategy != "keyframe_only":
        assert dropped == []


def test_skip_oldest_keeps_the_newest() -> None:
    buffer = FrameBuffer(3, "skip_oldest")
    drops = [_ids(buffer.offer(Item(i))) for i in range(5)]
    assert drops == [[], [], [], [0], [1]]
    assert [x.frame_id for x in buffer.drain()] == [2, 3, 4]


def test_skip_intermediate_keeps_the_oldest_and_the_newest() -> None:
    buffer = FrameBuffer(4, "skip_intermediate")
    drops = [_ids(buffer.offer(Item(i))) for i in range(6)]
    assert drops == [[], [], [], [], [1, 2, 3], []]
    assert [x.frame_id for x in buffer.drain()] == [0, 4, 5]


def test_keyframe_only_keeps_every_nth_id() -> None:
    buffer = FrameBuffer(0, "keyframe_only", keyframe_interval=4)
    drops = [i for f in range(10) for i in _ids(buffer.offer(Item(f)))]
    assert drops == [1, 2, 3, 5, 6, 7, 9]
    assert [x.frame_id for x in buffer.drain()] == [0, 4, 8]


def test_buffer_is_bounded_in_bytes_whatever_its_frame_count() -> None:
    buffer = FrameBuffer(0, "skip_oldest", max_bytes=1000)  # unbounded in count
    drops = [_ids(buffer.offer(Item(i, 300))) for i in range(6)]
    assert drops == [[], [], [], [0], [1], [2]]
    assert buffer.bytes == 900
    assert _ids(buffer.offer(Item(6, 2000))) == [6]  # could never fit: refused, nothing evicted
    assert _ids(buffer.drain()) == [3, 4, 5] and buffer.bytes == 0


# --------------------------------------------------------- hostile input

U64_MAX = 2**64 - 1


def frame_parts(frame_id: int, t_ns: int, image: Optional[np.ndarray] = None) -> List[bytes]:
    image = image_for(frame_id) if image is None else image
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    return [b"frame", struct.pack("!QQIIB", frame_id, t_ns, w, h, c), image.tobytes()]


def test_gap_arithmetic_matches_enumeration() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        first, last = sorted(rng.randrange(0, 60) for _ in range(2))
        count = rng.choice([1, 2, 3, 5])
        index = rng.randrange(count)
        expected = [i for i in range(first, last + 1) if i % count == index or count == 1]
        assert ids_in_share(first, last, index, count) == len(expected)
        gap = frame_gap(first - 1, last + 1, index, count) if first > 0 else None
        if gap is not None:
            assert (gap.first, gap.last, gap.count) == (first, last, len(expected))
            assert gap.listed(index, count, limit=100) == expected
    assert frame_gap(None, 5) is None and frame_gap(5, 6) is None and frame_gap(5, 3) is None


def test_a_frame_id_near_2_64_is_one_id_jump_not_lost_frames(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    part = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0)).build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        for frame_id in (0, U64_MAX, 1):
            pub.send(frame_parts(frame_id, 1_000_000))
        items = take_until(part, lambda got: sum(isinstance(x, Frame) for x in got) == 3)
        assert not [x for x in items if isinstance(x, Record) and x.TYPE == "frame_drop"]
        (jump,) = [x.to_dict() for x in items if isinstance(x, Record) and x.TYPE == "publisher_restart"]
        assert (jump["kind"], jump["previous_frame_id"], jump["frame_id"]) == ("id_jump", 0, U64_MAX)
        # The id after the stray one continues the stream: no restart, nothing lost.
        assert (part.stats.id_jumps, part.stats.publisher_restarts, part.stats.lost_on_wire) == (1, 0, 0)
    finally:
        part.close()
        pub.close()


def test_a_reader_waits_on_the_partitions_arrival_signal(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    part = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0)).build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        assert not part.wait_for_items(0.05)  # nothing arrived: the wait times out
        pub.send(frame_parts(0, 1_000_000))
        assert part.wait_for_items(10.0)  # woken by the frame, which the next batch holds
        assert [x.frame_id for x in part.next_batch() if isinstance(x, Frame)] == [0]
        assert not part.wait_for_items(0.05)  # the signal was taken with it
    finally:
        part.close()
        pub.close()


def test_every_share_validates_the_headers_it_reads(context: zmq.Context) -> None:
    """Malformed headers carrying ids of the other share cost that share nothing."""
    pub = TestPublisher(context)
    source = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0), shares=2)
    parts = {name: source.build_part("in", name, None) for name in source.list_parts()}
    even_huge = U64_MAX - 1  # share 0's id: share 1 used to read it unvalidated
    bad = [
        [b"frame", struct.pack("!QQIIB", even_huge, 0, 0, 0, 3), b""],  # dimensions
        [b"frame", struct.pack("!QQIIB", even_huge, 0, 6, 4, 3), b"\0" * 5],  # payload_size
        [b"frame", struct.pack("!QQIIB", even_huge, 0, 6, 4, 3), b"\0" * 72, b"x"],  # part_count
    ]
    try:
        pub.wait_subscribed()
        pub.wait_subscribed()
        for frame_id in range(6):
            pub.send(spec_parts(frame_id))
            if frame_id == 2:
                for message in bad:
                    pub.send(message)
        got = {name: take_until(p, lambda items: sum(isinstance(x, Frame) for x in items) == 3) for name, p in parts.items()}
        zero, one = (parts[name] for name in sorted(parts))
        assert [x.frame_id for x in got[sorted(parts)[0]] if isinstance(x, Frame)] == [0, 2, 4]
        assert [x.frame_id for x in got[sorted(parts)[1]] if isinstance(x, Frame)] == [1, 3, 5]
        assert zero.stats.lost_on_wire == one.stats.lost_on_wire == 0
        assert zero.stats.publisher_restarts == one.stats.publisher_restarts == 0
        assert wait_until(lambda: zero.stats.malformed == {"dimensions": 1, "payload_size": 1, "part_count": 1})
        assert one.stats.malformed == {}  # share 0 alone reports
    finally:
        for p in parts.values():
            p.close()
        pub.close()


def test_an_absurd_timestamp_is_rejected_and_counted_and_later_frames_flow(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    part = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0, max_time_jump_s=60)).build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        for frame_id in range(6):
            t_ns = U64_MAX if frame_id == 3 else frame_id * 33_000_000
            pub.send(frame_parts(frame_id, t_ns))
        items = take_until(
            part, lambda got: sum(isinstance(x, Frame) for x in got) == 5 and any(isinstance(x, Record) for x in got)
        )
        assert [x.frame_id for x in items if isinstance(x, Frame)] == [0, 1, 2, 4, 5]
        (record,) = [x.to_dict() for x in items if isinstance(x, Record) and x.TYPE == "malformed_message"]
        assert record["kind"] == "time_jump" and record["count"] == 1 and record["messages"] == 1
        assert part.stats.malformed == {"time_jump": 1}
        assert part.stats.lost_on_wire == 0  # a rejected frame is accounted for, not lost
    finally:
        part.close()
        pub.close()


def test_a_clock_that_really_stepped_becomes_the_new_time_base() -> None:
    now = [0]
    guard = TimeJumpGuard(60, clock=lambda: now[0])
    second = 1_000_000_000
    assert guard.plausible(10 * second)
    assert guard.plausible(9 * second)  # backward: a restart or a late frame, not a leap
    assert not guard.plausible(U64_MAX)
    now[0] = 120 * second  # two minutes later: 70 s ahead of the 10 s base is fine now
    assert guard.plausible(80 * second)
    stepped = 10_000 * second
    for i in range(10 * TIME_REBASE_FRAMES):  # many frames, no time: not yet
        assert not guard.plausible(stepped + i * 1000)
    now[0] += 2 * second
    assert guard.plausible(stepped + 2 * second)  # they agreed on it for over a second
    assert guard.plausible(stepped + 2 * second + 33_000_000)
    # A stray jumped frame among plausible ones never becomes the base.
    base_t, base_wall = stepped + 2 * second + 33_000_000, now[0]
    for _ in range(10):
        now[0] += second
        assert not guard.plausible(U64_MAX)
        assert guard.plausible(base_t + now[0] - base_wall)


def test_oversized_frames_are_refused_before_they_are_held(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    part = ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0, max_frame_mb=1000 / (1024 * 1024))).build_part("in", "cam0", None)
    try:
        pub.wait_subscribed()
        pub.send(spec_parts(0))
        # A header claiming a legal 16384x16384 frame, with a small payload: refused on the header.
        pub.send([b"frame", struct.pack("!QQIIB", 1, 0, 16384, 16384, 3), b"\0" * 72])
        items = take_until(part, lambda got: any(isinstance(x, Record) for x in got))
        assert part.stats.malformed == {"too_large": 1}
        # A real 2000-byte frame over the 1000-byte limit: ZeroMQ refuses it unread and
        # reconnects; frames after it flow again.
        pub.send(frame_parts(1, 1_000_000, np.zeros((20, 100), np.uint8)))
        pub.wait_subscribed()  # the reconnected socket subscribes anew
        pub.send(spec_parts(2))
        items += take_until(part, lambda got: any(isinstance(x, Frame) and x.frame_id == 2 for x in got))
        assert [x.frame_id for x in items if isinstance(x, Frame)] == [0, 2]
        assert part.stats.frames_received == 2 and part.stats.reconnects >= 1
        # Refused by ZeroMQ unread, it still counts as too_large.
        assert part.stats.malformed == {"too_large": 2}
    finally:
        part.close()
        pub.close()


def test_a_malformed_flood_makes_one_record_per_kind_per_second(context: zmq.Context) -> None:
    pub = TestPublisher(context)
    pub.socket.setsockopt(zmq.XPUB_NODROP, 1)  # a send waits for the subscriber: every message counts
    stop = threading.Event()
    run = FlowRun(ZmqFrameSource(pub.endpoint, "cam0", SourceConfig(buffer_frames=0), stop_event=stop))
    sent = {"topic": 0, "short_header": 0}
    started = []

    def script(r: FlowRun) -> None:
        pub.wait_subscribed()
        started.append(time.monotonic())
        for i in range(3000):
            if i % 2:
                pub.send([b"frameX", b"\0" * 25, b""])
                sent["topic"] += 1
            else:
                pub.send([b"frame", b"\0" * 7, b""])
                sent["short_header"] += 1
        r.send_and_wait(pub, spec_parts(0))
        assert wait_until(lambda: r.source.partitions["cam0"].stats.malformed == sent)
        started.append(time.monotonic())
        stop.set()

    run.run(script)
    pub.close()
    records = run.records("malformed_message")
    assert {k: sum(r["messages"] for r in records if r["kind"] == k) for k in sent} == sent
    assert {k: max(r["count"] for r in records if r["kind"] == k) for k in sent} == sent
    seconds = started[1] - started[0]
    assert len(records) <= len(sent) * (int(seconds / MALFORMED_INTERVAL_S) + 2)
    (summary,) = run.records("source_summary")
    assert summary["malformed"] == sent
