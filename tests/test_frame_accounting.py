"""FrameAccounting with plain calls and a hand-moved clock: gaps, restarts, id jumps,
malformed throttling, backpressure records, resume state and the summary."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

import connectors.frame_accounting as accounting_module
from connectors.frame_accounting import JUMP_MIN_RATE, JUMP_SLACK_IDS, MALFORMED_INTERVAL_S, FrameAccounting
from facemoment.core.records import Record
from facemoment.core.types import Frame

U64_MAX = 2**64 - 1
FPS = 30
FRAME_NS = 1_000_000_000 // FPS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(share: Tuple[int, int] = (0, 1), state: Optional[Dict[str, Any]] = None) -> Tuple[FrameAccounting, Clock]:
    clock = Clock()
    return FrameAccounting("cam0", "tcp://127.0.0.1:5555", share, state, "skip_oldest", clock=clock), clock


def frame(frame_id: int) -> Frame:
    return Frame("cam0", frame_id, frame_id * FRAME_NS, np.zeros((2, 2, 3), np.uint8))


def live(acc: FrameAccounting, clock: Clock, ids: List[int], t0_id: Optional[int] = None) -> None:
    """Headers at the stream's pace: event time and the clock move one frame per id."""
    for frame_id in ids:
        clock.now = 100.0 + frame_id / FPS if t0_id is None else clock.now + 1 / FPS
        acc.seen(frame_id, frame_id * FRAME_NS)


def records(items: List[Any], record_type: str) -> List[Dict[str, Any]]:
    return [x.to_dict() for x in items if isinstance(x, Record) and x.TYPE == record_type]


def test_a_gap_is_reported_with_its_ids_and_counted_as_lost() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1, 2, 5, 6, 10])
    out = acc.batch([])
    drops = records(out, "frame_drop")
    assert [(d["frame_id"], d["dropped_frame_ids"], d["dropped_range"], d["where"]) for d in drops] == [
        (5, [3, 4], [3, 4], "wire"),
        (10, [7, 8, 9], [7, 9], "wire"),
    ]
    assert acc.stats.lost_on_wire == 5 and acc.stats.id_jumps == 0


def test_ids_going_back_are_a_publisher_restart_not_a_gap() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1, 2, 3, 4])
    acc.seen(0, 0)
    acc.seen(1, FRAME_NS)
    (restart,) = records(acc.batch([]), "publisher_restart")
    assert (restart["previous_frame_id"], restart["frame_id"]) == (4, 0) and "kind" not in restart
    assert (acc.stats.publisher_restarts, acc.stats.lost_on_wire, acc.stats.id_jumps) == (1, 0, 0)


def test_one_stray_id_near_2_64_is_one_jump_and_the_stream_goes_on() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1, 2])
    acc.seen(U64_MAX, 3 * FRAME_NS)
    live(acc, clock, [3, 4, 6])
    out = acc.batch([])
    (jump,) = records(out, "publisher_restart")
    assert (jump["kind"], jump["previous_frame_id"], jump["frame_id"]) == ("id_jump", 2, U64_MAX)
    # The stream after the stray id is the stream before it: gaps count from there.
    (gap,) = records(out, "frame_drop")
    assert gap["dropped_frame_ids"] == [5]
    assert (acc.stats.id_jumps, acc.stats.publisher_restarts, acc.stats.lost_on_wire) == (1, 0, 1)


def test_a_jump_to_a_new_numbering_is_counted_once_and_followed() -> None:
    acc, clock = make()
    live(acc, clock, list(range(10)))
    base = 10**12
    for i, frame_id in enumerate((base, base + 1, base + 3)):
        clock.now += 1 / FPS
        acc.seen(frame_id, (10 + i) * FRAME_NS)
    out = acc.batch([])
    assert [r["kind"] for r in records(out, "publisher_restart")] == ["id_jump"]
    (gap,) = records(out, "frame_drop")
    assert gap["dropped_frame_ids"] == [base + 2]
    assert (acc.stats.id_jumps, acc.stats.publisher_restarts, acc.stats.lost_on_wire) == (1, 0, 1)


def test_a_long_gap_is_lost_frames_when_the_time_that_passed_allows_it() -> None:
    acc, clock = make()
    live(acc, clock, list(range(3 * FPS)))  # three seconds: the rate is known
    last = 3 * FPS - 1
    stalled_s = 20
    resumed_id = last + 1 + stalled_s * FPS
    clock.now += stalled_s
    acc.seen(resumed_id, resumed_id * FRAME_NS)
    assert acc.stats.lost_on_wire == stalled_s * FPS and acc.stats.id_jumps == 0
    # The same leap with no time passed is more than the stream could have lost.
    acc.seen(resumed_id + 1 + stalled_s * FPS, (resumed_id + 1) * FRAME_NS)
    assert acc.stats.id_jumps == 1 and acc.stats.lost_on_wire == stalled_s * FPS


def test_before_the_rate_is_known_a_camera_s_top_rate_bounds_a_gap() -> None:
    acc, clock = make()
    acc.seen(0, 0)
    clock.now += 1.0  # one second later, by the clock and by event time
    allowed = int(JUMP_SLACK_IDS + accounting_module.JUMP_MARGIN * JUMP_MIN_RATE * 1.0)
    acc.seen(allowed + 1, 1_000_000_000)
    assert acc.stats.lost_on_wire == allowed and acc.stats.id_jumps == 0
    acc.seen(2 * allowed + 3, 1_000_000_000)
    assert acc.stats.id_jumps == 1


def test_a_resume_reports_the_first_gap_as_while_down_and_keeps_the_counts() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1, 2, 3, 4])
    acc.received([], 0)
    acc.batch([frame(i) for i in range(5)])
    state = acc.snapshot()
    assert state["last_frame_id"] == 4 and state["counts"]["frames_emitted"] == 5

    resumed, clock = make(state=state)
    resumed.seen(10**9, 0)  # how long it was down is unknown: a gap, however long
    resumed.seen(10**9 + 2, FRAME_NS * 2)
    drops = records(resumed.batch([]), "frame_drop")
    assert [(d["where"], d["dropped_count"]) for d in drops] == [("while_down", 10**9 - 5), ("wire", 1)]
    assert resumed.stats.frames_emitted == 5 and resumed.stats.id_jumps == 0


def test_the_snapshot_only_moves_past_ids_that_went_out() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1])
    acc.batch([frame(0), frame(1)])
    acc.seen(2, 2 * FRAME_NS)  # received, still in the buffer
    assert acc.snapshot()["last_frame_id"] == 1
    acc.batch([frame(2)])
    assert acc.snapshot()["last_frame_id"] == 2


def test_a_frame_passed_over_for_its_time_is_not_a_gap() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1])
    acc.malformed("time_jump", "t_src_ns far ahead")
    acc.passed_over(2)
    live(acc, clock, [3])
    out = acc.batch([])
    assert records(out, "frame_drop") == [] and acc.stats.lost_on_wire == 0
    assert [r["kind"] for r in records(out, "malformed_message")] == ["time_jump"]


def test_malformed_messages_make_one_record_per_kind_per_interval() -> None:
    acc, clock = make()
    for _ in range(5):
        acc.malformed("topic", "bad topic")
    acc.malformed("short_header", "short")
    first = records(acc.batch([]), "malformed_message")
    assert sorted((r["kind"], r["count"], r["messages"]) for r in first) == [("short_header", 1, 1), ("topic", 5, 5)]
    for _ in range(3):
        acc.malformed("topic", "bad topic")
    clock.now += MALFORMED_INTERVAL_S / 2
    assert records(acc.batch([]), "malformed_message") == []  # within the interval: held
    clock.now += MALFORMED_INTERVAL_S / 2
    (later,) = records(acc.batch([]), "malformed_message")
    assert (later["kind"], later["count"], later["messages"]) == ("topic", 8, 3)
    acc.malformed("topic", "bad topic")
    (forced,) = records(acc.batch([], force_malformed=True), "malformed_message")  # the stream's end
    assert (forced["count"], forced["messages"]) == (9, 1)
    assert acc.stats.malformed == {"topic": 9, "short_header": 1}


def test_only_share_0_counts_stream_wide_events() -> None:
    zero, clock0 = make((0, 2))
    one, clock1 = make((1, 2))
    for acc, clock in ((zero, clock0), (one, clock1)):
        live(acc, clock, [0, 1, 2, 3, 7, 8])
        acc.seen(U64_MAX, 8 * FRAME_NS)
        acc.seen(0, 9 * FRAME_NS)
        acc.malformed("topic", "bad topic")
    zero_out, one_out = zero.batch([]), one.batch([])
    # Each share reports its own lost ids: 4 and 6 are share 0's, 5 share 1's.
    assert [d["dropped_frame_ids"] for d in records(zero_out, "frame_drop")] == [[4, 6]]
    assert [d["dropped_frame_ids"] for d in records(one_out, "frame_drop")] == [[5]]
    assert [r.get("kind") for r in records(zero_out, "publisher_restart")] == ["id_jump", None]
    assert records(one_out, "publisher_restart") == [] and records(one_out, "malformed_message") == []
    assert zero.stats.malformed == {"topic": 1} and one.stats.malformed == {}


def test_backpressure_drops_go_out_in_one_record_before_the_frames() -> None:
    acc, clock = make()
    live(acc, clock, [0, 1, 2, 3])
    acc.received([], 1)
    acc.received([frame(0), frame(1)], 3)
    acc.received([frame(2)], 2)
    out = acc.batch([frame(3)])
    assert [type(x).__name__ for x in out] == ["FrameDrop", "Frame"]
    (drop,) = records(out, "frame_drop")
    assert drop["dropped_frame_ids"] == [0, 1, 2] and drop["dropped_count"] == 3
    assert (drop["reason"], drop["strategy"], drop["queue_depth"], drop["frame_id"]) == ("backpressure", "skip_oldest", 3, 3)
    assert (acc.stats.frames_received, acc.stats.dropped_backpressure, acc.stats.frames_emitted) == (3, 3, 1)
    assert records(acc.batch([]), "frame_drop") == []  # reported once


def test_pending_records_are_bounded_and_the_lost_ones_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting_module, "MAX_PENDING_RECORDS", 3)
    acc, clock = make()
    live(acc, clock, [0, 2, 4, 6, 8, 10])  # five gaps, room for three records
    assert [d["frame_id"] for d in records(acc.batch([]), "frame_drop")] == [6, 8, 10]
    assert acc.stats.records_dropped == 2 and acc.stats.lost_on_wire == 5


def test_the_summary_carries_every_counter() -> None:
    acc, clock = make((1, 2))
    live(acc, clock, [1, 3])
    acc.reconnected()
    clock.now += 2.5
    summary = acc.summary("idle_timeout", error=None).to_dict()
    assert summary["share"] == "1of2" and summary["end_reason"] == "idle_timeout"
    assert (summary["reconnects"], summary["id_jumps"], summary["lost_on_wire"]) == (1, 0, 0)
    assert summary["duration_s"] == pytest.approx(clock.now - 100.0)
    assert "error" not in summary
