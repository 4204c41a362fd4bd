"""TRIG over ZMQ PUB and triggers.jsonl: content, de-duplication, resume."""

from __future__ import annotations

import errno
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
import zmq
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main
from zmq.utils.monitor import recv_monitor_message

from connectors import trig_pub
from connectors.trig_pub import TrigBindError, TrigPubSink
from facemoment.formats.wire import format_trigger
from connectors.triggers_jsonl import FILE_NAME, TriggersJsonlSink, drop_partial_last_line, read_keys
from facemoment.core.types import Trigger
from tests.conftest import busy_pub_address

RECV_TIMEOUT_S = 5.0
SEND_HWM_MULTIPLE = trig_pub.SEND_HWM  # more TRIGs than the queue holds


def make_trigger(
    event_s: float, reason: str = "expression_spike", stream: str = "cam0", score: float = 0.85
) -> Trigger:
    event_ns = int(event_s * 1e9)
    return Trigger(
        stream_id=stream,
        frame_id=int(event_s * 30) + 3,
        t_ns=event_ns + 100_000_000,
        event_t_ns=event_ns,
        reason=reason,
        score=score,
        pre_sec=2.0,
        post_sec=2.0,
        face_count=2,
    )


# ------------------------------------------------------------------ TRIG text


def test_trigger_message_is_the_visualbase_trig_line():
    t = make_trigger(5.0)
    assert format_trigger(t) == (
        "TRIG label=highlight t_start_ns=3000000000 t_end_ns=7000000000 faces=2 score=0.850 reason=expression_spike"
    )
    assert "score=0.912 " in format_trigger(make_trigger(12.345, reason="camera_gaze", score=0.91234))


# ------------------------------------------------------------------ TRIG PUB


class Subscriber:
    """A raw SUB socket connected to the sink's endpoint, synchronised without sleeps."""

    def __init__(self, endpoint: str, topic: bytes = b"msg"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        self.sock.connect(endpoint)
        deadline = time.monotonic() + RECV_TIMEOUT_S
        try:
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"SUB never connected to {endpoint}"
                if monitor.poll(int(remaining * 1000)):
                    if recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECTED:
                        break
        finally:
            self.sock.disable_monitor()
            monitor.close(linger=0)

    def recv(self, timeout_s: float = RECV_TIMEOUT_S):
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return self.sock.recv_multipart()

    def close(self):
        self.sock.close(linger=0)
        self.ctx.term()


def synchronise(part, sub: Subscriber) -> int:
    """Send probe triggers until one arrives: the subscription has reached the PUB."""
    deadline = time.monotonic() + RECV_TIMEOUT_S
    n = 0
    while time.monotonic() < deadline:
        n += 1
        part.write_batch([make_trigger(1000 + n, reason="probe")])
        msg = sub.recv(timeout_s=0.05)
        if msg is not None:
            # Drain probes still in flight, so the next message is the test's own.
            while (msg := sub.recv(timeout_s=0.05)) is not None:
                assert b"reason=probe" in msg[1]
            return n
    raise AssertionError("no probe message reached the subscriber")


@pytest.fixture
def pub_part():
    part = TrigPubSink("tcp://127.0.0.1:*", b"msg").build_part("trig", "trig_pub", None)
    yield part
    part.close()


def test_pub_sends_trig_text_a_raw_sub_receives(pub_part):
    sub = Subscriber(pub_part.endpoint)
    try:
        synchronise(pub_part, sub)
        triggers = [make_trigger(3.0), make_trigger(9.5, reason="head_turn", score=0.5)]
        pub_part.write_batch(triggers)
        got = [sub.recv(), sub.recv()]
        assert got == [[b"msg", format_trigger(t).encode()] for t in triggers]
        assert got[0][1].decode().startswith("TRIG label=highlight t_start_ns=1000000000 t_end_ns=5000000000 ")
    finally:
        sub.close()


def test_pub_does_not_send_a_trigger_twice(pub_part):
    sub = Subscriber(pub_part.endpoint)
    try:
        synchronise(pub_part, sub)
        first = make_trigger(3.0)
        pub_part.write_batch([first])
        assert sub.recv()[1] == format_trigger(first).encode()
        sentinel = make_trigger(30.0, reason="camera_gaze")
        pub_part.write_batch([first, sentinel])
        # PUB keeps order: had the duplicate gone out, it would arrive before the sentinel.
        assert sub.recv()[1] == format_trigger(sentinel).encode()
        assert pub_part.skipped_count == 1
    finally:
        sub.close()


def test_pub_first_trigger_reaches_a_subscriber_that_joins_after_the_bind():
    """No sync by the test: the sink itself waits for the first subscription."""
    sink = TrigPubSink("tcp://127.0.0.1:*", b"msg", subscriber_wait_s=RECV_TIMEOUT_S)
    part = sink.build_part("trig", "trig_pub", None)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"msg")
    try:
        sub.connect(part.endpoint)
        first = make_trigger(3.0)
        part.write_batch([first])
        assert sub.poll(int(RECV_TIMEOUT_S * 1000)), "the first TRIG was lost"
        assert sub.recv_multipart() == [b"msg", format_trigger(first).encode()]
        assert part.subscriptions >= 1
    finally:
        sub.close()
        ctx.term()
        part.close()


def test_pub_without_subscribers_publishes_to_nobody_without_blocking():
    part = TrigPubSink("tcp://127.0.0.1:*", subscriber_wait_s=0.05).build_part("trig", "trig_pub", None)
    try:
        part.write_batch([make_trigger(s) for s in range(3 * SEND_HWM_MULTIPLE)])
        assert part.flush()
        assert part.sent_count == 3 * SEND_HWM_MULTIPLE and part.subscriptions == 0
    finally:
        part.close()


def test_pub_resume_state_skips_triggers_already_sent():
    sink = TrigPubSink("tcp://127.0.0.1:*", b"msg", subscriber_wait_s=0)
    part = sink.build_part("trig", "trig_pub", None)
    a, b = make_trigger(3.0), make_trigger(8.0)
    part.write_batch([a, b])
    assert part.flush()
    state = part.snapshot()
    part.close()
    assert state == {"keys": [a.key, b.key], "queued": []}
    resumed = sink.build_part("trig", "trig_pub", state)
    try:
        c = make_trigger(13.0)
        resumed.write_batch([b, c])
        assert resumed.flush()
        assert (resumed.sent_count, resumed.skipped_count) == (1, 1)
        assert resumed.snapshot()["keys"] == [a.key, b.key, c.key]
    finally:
        resumed.close()


def test_pub_remembers_a_bounded_number_of_keys(monkeypatch):
    monkeypatch.setattr(trig_pub, "RECENT_KEYS", 3)
    part = TrigPubSink("tcp://127.0.0.1:*", subscriber_wait_s=0).build_part("trig", "trig_pub", None)
    try:
        part.write_batch([make_trigger(s) for s in range(5)])
        assert part.snapshot()["keys"] == [make_trigger(s).key for s in (2, 3, 4)]
    finally:
        part.close()


def test_pub_bind_failure_names_the_address_and_the_setting():
    with busy_pub_address() as endpoint:
        with pytest.raises(TrigBindError) as info:
            TrigPubSink(endpoint).build_part("trig", "trig_pub", None)
        assert endpoint in str(info.value)
        assert "FACEMOMENT_TRIG_ADDRESS" in str(info.value)


def test_pub_in_a_dataflow_sends_every_trigger(tmp_path):
    """The sink in a real run, with a SUB that connects before the flow binds.

    ipc, not tcp: a SUB reconnecting to a not-yet-bound loopback port can connect to
    itself and take the port. The sink's own wait for the first subscription is
    the synchronisation.
    """
    endpoint = f"ipc://{tmp_path}/trig.sock"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RECONNECT_IVL, 10)
    sub.setsockopt(zmq.SUBSCRIBE, b"msg")
    sub.connect(endpoint)
    wanted = [make_trigger(s) for s in (3.0, 8.0, 13.0)]
    flow = Dataflow("trig_pub_test")
    items = op.input("in", flow, TestingSource([("cam0", t) for t in wanted], batch_size=1))
    op.output("out", items, TrigPubSink(endpoint, b"msg", subscriber_wait_s=RECV_TIMEOUT_S))
    received = []
    try:
        run_main(flow)
        while len(received) < len(wanted) and sub.poll(int(RECV_TIMEOUT_S * 1000)):
            received.append(sub.recv_multipart())
    finally:
        sub.close()
        ctx.term()
    assert received == [[b"msg", format_trigger(t).encode()] for t in wanted]


# ------------------------------------------------------------------ triggers.jsonl


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_in_a_dataflow_writes_one_record_per_trigger(tmp_path):
    triggers = [make_trigger(3.0), make_trigger(8.25, reason="head_turn", stream="cam1", score=0.4)]
    flow = Dataflow("jsonl_test")
    items = op.input("in", flow, TestingSource([(t.stream_id, t) for t in triggers]))
    op.output("out", items, TriggersJsonlSink(tmp_path / "out"))
    run_main(flow)
    records = lines(tmp_path / "out" / FILE_NAME)
    assert len(records) == 2
    for rec, t in zip(records, triggers, strict=True):
        assert rec["label"] == t.label
        assert (rec["t_start_ns"], rec["t_end_ns"]) == (t.t_start_ns, t.t_end_ns)
        assert rec["faces"] == t.face_count and rec["score"] == t.score and rec["reason"] == t.reason
        assert rec["stream"] == t.stream_id and rec["event_t_ns"] == t.event_t_ns
        assert rec["frame_id"] == t.frame_id and rec["t_ns"] == t.t_ns
        assert rec["message"] == format_trigger(t)
        assert datetime.fromisoformat(rec["written_at"]).tzinfo is not None
    assert records[1]["t_start_ns"] == 6_250_000_000


def test_jsonl_flushes_every_batch(tmp_path):
    part = TriggersJsonlSink(tmp_path).build_part("jsonl", "triggers_jsonl", None)
    try:
        part.write_batch([make_trigger(3.0)])
        # Read through another handle while the partition is still open.
        assert len(lines(tmp_path / FILE_NAME)) == 1
        assert part.snapshot() == (tmp_path / FILE_NAME).stat().st_size
    finally:
        part.close()


def test_jsonl_resume_does_not_duplicate_triggers_written_after_the_snapshot(tmp_path):
    sink = TriggersJsonlSink(tmp_path)
    a, b, c, d = (make_trigger(s) for s in (3.0, 8.0, 13.0, 18.0))
    part = sink.build_part("jsonl", "triggers_jsonl", None)
    part.write_batch([a, b])
    state = part.snapshot()
    part.write_batch([c])  # written, but the crash comes before the next snapshot
    part.close()
    resumed = sink.build_part("jsonl", "triggers_jsonl", state)
    try:
        resumed.write_batch([c, d])  # Bytewax replays c after the snapshot
        assert resumed.skipped_count == 1
    finally:
        resumed.close()
    keys = [r["key"] for r in lines(tmp_path / FILE_NAME)]
    assert keys == [a.key, b.key, c.key, d.key]


def test_jsonl_drops_a_line_torn_by_a_crash(tmp_path):
    sink = TriggersJsonlSink(tmp_path)
    part = sink.build_part("jsonl", "triggers_jsonl", None)
    part.write_batch([make_trigger(3.0)])
    state = part.snapshot()
    part.close()
    with open(tmp_path / FILE_NAME, "ab") as f:
        f.write(b'{"label": "highlight", "t_sta')
    assert drop_partial_last_line(tmp_path / FILE_NAME) > 0
    with open(tmp_path / FILE_NAME, "ab") as f:
        f.write(b'{"label": "highlight", "t_sta')
    resumed = sink.build_part("jsonl", "triggers_jsonl", state)
    resumed.write_batch([make_trigger(8.0)])
    resumed.close()
    records = lines(tmp_path / FILE_NAME)  # every line parses again
    assert [r["event_t_ns"] for r in records] == [3_000_000_000, 8_000_000_000]
    assert read_keys(tmp_path / FILE_NAME) == {make_trigger(3.0).key, make_trigger(8.0).key}


def test_jsonl_recovers_through_a_real_abort_and_resume(tmp_path):
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    triggers = [make_trigger(s) for s in (3.0, 8.0, 13.0, 18.0)]
    inp = [(t.stream_id, t) for t in triggers[:2]] + [TestingSource.ABORT()] + [(t.stream_id, t) for t in triggers[2:]]

    def build():
        flow = Dataflow("jsonl_recovery")
        items = op.input("in", flow, TestingSource(inp, batch_size=1))
        op.output("out", items, TriggersJsonlSink(tmp_path / "out"))
        return flow

    cfg = RecoveryConfig(db)
    run_main(build(), epoch_interval=timedelta(0), recovery_config=cfg)  # stops at the ABORT
    assert [r["key"] for r in lines(tmp_path / "out" / FILE_NAME)] == [t.key for t in triggers[:2]]
    run_main(build(), epoch_interval=timedelta(0), recovery_config=cfg)
    keys = [r["key"] for r in lines(tmp_path / "out" / FILE_NAME)]
    assert keys == [t.key for t in triggers]


def test_pub_waiting_for_a_first_subscriber_does_not_block_the_dataflow():
    part = TrigPubSink("tcp://127.0.0.1:*", subscriber_wait_s=2.0).build_part("trig", "trig_pub", None)
    try:
        part.write_batch([make_trigger(3.0)])
        # write_batch returned while the sender thread is still waiting for a subscriber.
        assert part.sent_count == 0
        assert part.flush(timeout_s=10)
        assert part.sent_count == 1 and part.subscriptions == 0
    finally:
        part.close()


# ------------------------------------------------------------------ a full disk


class FillingFile:
    """A real file that fails with ENOSPC while `full` is set, after storing `torn` bytes."""

    def __init__(self, real, torn: int = 7) -> None:
        self.real = real
        self.full = False
        self.torn = torn
        self.name = real.name

    def write(self, data) -> int:
        if self.full:
            self.real.write(bytes(data[: self.torn]))  # a partial write, then no space
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_trace_sink_survives_a_full_disk_and_says_what_it_lost(tmp_path):
    from connectors.trace_sink import TraceSink

    path = tmp_path / "trace.jsonl"
    part = TraceSink(path, "minimal").build_part("trace", "trace.jsonl", None)
    part._file = disk = FillingFile(part._file)
    record = lambda i: {"record_type": "trigger_fire", "frame_id": i}  # noqa: E731
    part.write_batch([record(0), {"record_type": "timing", "frame_id": 0}])  # timing: below minimal
    disk.full = True
    part.write_batch([record(1), record(2)])
    part.write_batch([record(3)])
    disk.full = False
    part.write_batch([record(4)])
    part.close()
    rows = lines(path)  # every line whole: the torn bytes were cut back
    assert [r["record_type"] for r in rows] == ["trigger_fire", "trace_degraded", "trigger_fire"]
    assert [r.get("frame_id") for r in rows if r["record_type"] == "trigger_fire"] == [0, 4]
    degraded = rows[1]
    assert degraded["lost_records"] == 3 and degraded["lost_total"] == 3
    assert "No space left" in degraded["error"]


def test_triggers_held_back_by_a_full_disk_are_written_when_space_returns(tmp_path):
    part = TriggersJsonlSink(tmp_path).build_part("jsonl", "triggers_jsonl", None)
    part._f = disk = FillingFile(part._f)
    part.write_batch([make_trigger(3.0)])
    disk.full = True
    part.write_batch([make_trigger(6.0)])  # does not raise: the run goes on
    part.write_batch([make_trigger(9.0)])
    assert [r["event_t_ns"] for r in lines(tmp_path / FILE_NAME)] == [3_000_000_000]
    disk.full = False
    part.write_batch([make_trigger(12.0)])
    part.close()
    assert [r["event_t_ns"] // 10**9 for r in lines(tmp_path / FILE_NAME)] == [3, 6, 9, 12]


def test_a_run_whose_trace_cannot_be_written_keeps_its_triggers(tmp_path, monkeypatch):
    import connectors.trace_sink as trace_sink
    from test_scenarios import SCENARIOS, run, script

    def no_space(_file, _data, sync=False):
        return OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trace_sink, "append_whole", no_space)
    triggers = run(script(**SCENARIOS["expression_spike"]), tmp_path)
    assert [t["reason"] for t in triggers] == ["expression_spike"]
    assert not (tmp_path / "trace.jsonl").read_text()
