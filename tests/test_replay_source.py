"""ReplaySource: recordings as a Bytewax source (shares, resume, pacing, damage)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

import facemoment.formats.recording as recording
from facemoment.formats.recording import RecordingWriter, index_path
from connectors.replay_source import ReplaySource
from connectors.shares import share_parts
from facemoment.core.records import Record, SourceError
from facemoment.core.config import SourceConfig
from facemoment.core.types import Frame

from conftest import drain, run_source

W, H = 32, 24
IDS = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 17, 18]  # gaps at 6-7 and 15-16
T0 = 5_000_000_000


def image_of(frame_id: int) -> np.ndarray:
    rng = np.random.default_rng(frame_id)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def t_of(frame_id: int) -> int:
    return T0 + frame_id * 40_000_000


def write(path: Path, ids: List[int] = IDS, encoding: str = "raw", times: Optional[List[int]] = None) -> List[int]:
    times = times or [t_of(i) for i in ids]
    with RecordingWriter(path, {"stream": "test"}) as writer:
        return [writer.append_image(i, t, image_of(i), encoding) for i, t in zip(ids, times)]


@pytest.fixture()
def rec(tmp_path: Path) -> Path:
    path = tmp_path / "cam.fmrec"
    write(path)
    return path






def frames_of(items: List[Any]) -> List[Frame]:
    return [x for x in items if isinstance(x, Frame)]


def records_of(items: List[Any]) -> List[dict]:
    """The trace records among the items, as trace.jsonl gets them."""
    return [x.to_dict() for x in items if isinstance(x, Record)]


# ------------------------------------------------------------------ replay


def test_replay_emits_every_recorded_frame_exactly(rec: Path) -> None:
    items = run_source(ReplaySource(rec, stream_id="camA", batch_size=3))
    frames = frames_of(items)
    assert len(frames) == len(items)  # no records on a healthy file
    assert [f.frame_id for f in frames] == IDS
    assert [f.t_src_ns for f in frames] == [t_of(i) for i in IDS]
    assert all(f.stream_id == "camA" for f in frames)
    assert all(np.array_equal(f.image, image_of(f.frame_id)) for f in frames)


def test_shares_split_by_frame_id_and_cover_the_recording(rec: Path) -> None:
    source = ReplaySource(rec, "cam0", shares=3)
    assert source.list_parts() == share_parts("cam0", 3)
    seen = []
    for index, part_name in enumerate(source.list_parts()):
        frames = frames_of(drain(source.build_part("in", part_name, None)))
        assert [f.frame_id for f in frames] == [i for i in IDS if i % 3 == index]
        seen += frames
    assert sorted(f.frame_id for f in seen) == IDS
    assert sorted(f.frame_id for f in frames_of(run_source(ReplaySource(rec, "cam0", shares=2)))) == IDS


@pytest.mark.parametrize("shares", [1, 2])
def test_resume_emits_exactly_the_rest_of_each_share(rec: Path, shares: int) -> None:
    source = ReplaySource(rec, "cam0", shares=shares, batch_size=2)
    for part_name in source.list_parts():
        full = drain(source.build_part("in", part_name, None))
        part = source.build_part("in", part_name, None)
        head = drain(part, limit=3)
        state = part.snapshot()
        part.close()
        # Past the last emitted frame, not past the share's next one.
        assert head[-1].frame_id < state <= full[len(head)].frame_id
        rest = drain(source.build_part("in", part_name, state))
        assert [f.frame_id for f in head + rest] == [f.frame_id for f in full]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(head + rest, full))


def test_resume_states_inside_a_gap_and_past_the_end(rec: Path) -> None:
    source = ReplaySource(rec, "cam0")
    assert [f.frame_id for f in drain(source.build_part("in", "cam0", 6))] == [i for i in IDS if i >= 6]
    assert [f.frame_id for f in drain(source.build_part("in", "cam0", 16))] == [17, 18]
    assert drain(source.build_part("in", "cam0", 19)) == []


def test_resume_works_without_an_index(rec: Path) -> None:
    index_path(rec).unlink()
    rest = drain(ReplaySource(rec, "cam0").build_part("in", "cam0", 10))
    assert [f.frame_id for f in rest] == [i for i in IDS if i >= 10]
    assert index_path(rec).exists()


def test_jpeg_replay_is_identical_every_time(tmp_path: Path) -> None:
    path = tmp_path / "j.fmrec"
    write(path, encoding="jpeg")
    first, second = run_source(ReplaySource(path, "cam0")), run_source(ReplaySource(path, "cam0", shares=2))
    second = sorted(second, key=lambda f: f.frame_id)
    assert [f.frame_id for f in first] == [f.frame_id for f in second] == IDS
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second))


# ------------------------------------------------------------------ damage


def _cut(path: Path, offsets: List[int], record: int, extra: int) -> int:
    data = path.read_bytes()
    path.write_bytes(data[: offsets[record] + extra])
    return offsets[record]


def _flip(path: Path, offsets: List[int], record: int, extra: int) -> int:
    data = bytearray(path.read_bytes())
    data[offsets[record] + recording.RECORD_HEADER_SIZE + extra] ^= 0xFF
    path.write_bytes(bytes(data))
    return offsets[record]


@pytest.mark.parametrize("damage", [_cut, _flip], ids=["truncated", "flipped_byte"])
@pytest.mark.parametrize("shares", [1, 2])
def test_damaged_recording_ends_the_stream_without_failing_the_dataflow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, shares: int
) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path)
    bad_offset = damage(path, offsets, 9, 100)  # inside frame 11's record
    with caplog.at_level(logging.ERROR):
        items = run_source(ReplaySource(path, "cam0", shares=shares))
    frames = frames_of(items)
    assert sorted(f.frame_id for f in frames) == IDS[:9]
    assert all(np.array_equal(f.image, image_of(f.frame_id)) for f in frames)
    errors = records_of(items)
    assert len(errors) == 1
    error = errors[0]
    assert list(error)[0] == "record_type" and error["record_type"] == "source_error"
    assert (error["stream"], error["path"], error["offset"]) == ("cam0", str(path), bad_offset)
    assert f"byte offset {bad_offset}" in error["error"]
    assert any(f"byte offset {bad_offset}" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_a_file_that_is_not_a_recording_reports_offset_zero(tmp_path: Path) -> None:
    path = tmp_path / "junk.fmrec"
    path.write_bytes(b"definitely not a recording")
    items = run_source(ReplaySource(path, "cam0"))
    assert len(items) == 1 and isinstance(items[0], SourceError)
    assert items[0].offset == 0 and "not a FaceMoment recording" in items[0].error
    with pytest.raises(FileNotFoundError, match="missing.fmrec"):
        ReplaySource(tmp_path / "missing.fmrec", "cam0")


# ------------------------------------------------------------------ pacing


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def test_realtime_paces_with_next_awake_instead_of_sleeping(
    rec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sleep(_seconds: float) -> None:
        raise AssertionError("the source must not sleep")

    monkeypatch.setattr(time, "sleep", no_sleep)
    clock = FakeClock()
    part = ReplaySource(rec, "cam0", settings=SourceConfig(realtime=True), batch_size=4, clock=clock).build_part("in", "cam0", None)
    assert part.next_awake() is None  # asked before the first batch: call right away
    assert [f.frame_id for f in part.next_batch()] == [0]  # due at once; frame 1 is 40 ms later
    before = datetime.now(timezone.utc)
    awake = part.next_awake()
    assert awake is not None and awake.tzinfo is not None
    assert 0.035 < (awake - before).total_seconds() < 1.0  # frame 1's due time, not "now"
    assert part.next_batch() == []  # not due yet: nothing, and no sleeping
    clock.now += 40_000_000
    assert [f.frame_id for f in part.next_batch()] == [1]
    clock.now += 3 * 40_000_000 + 1  # frames 2-4 are due; frame 5 is not
    assert [f.frame_id for f in part.next_batch()] == [2, 3, 4]
    assert part.next_awake() is not None
    clock.now += 10**12  # far behind: the rest comes in batches as fast as asked
    rest = drain(part)
    assert [f.frame_id for f in rest] == IDS[5:]
    part.close()


def test_realtime_replay_in_a_dataflow_keeps_the_recorded_spacing(tmp_path: Path) -> None:
    path = tmp_path / "rt.fmrec"
    ids = list(range(5))
    write(path, ids, times=[T0 + i * 10_000_000 for i in ids])
    emitted: List[int] = []

    def stamp(_step: str, frame: Frame) -> None:
        emitted.append(time.monotonic_ns())

    flow = Dataflow("realtime_test")
    frames = op.input("in", flow, ReplaySource(path, "cam0", settings=SourceConfig(realtime=True)))
    op.inspect("stamp", frames, stamp)
    out: List[Any] = []
    op.output("out", frames, TestingSink(out))
    run_main(flow)
    assert [f.frame_id for f in out] == ids
    # Never faster than recorded: frame k leaves at least k * 10 ms after frame 0.
    assert all(t - emitted[0] >= k * 10_000_000 for k, t in enumerate(emitted))
