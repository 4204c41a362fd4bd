"""ReplaySource: recordings as a Bytewax source (shares, resume, pacing, damage)."""

from __future__ import annotations

import logging
import time
import zlib
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
    # a healthy file: one summary, no damage
    assert [(r["record_type"], r["malformed"], r["frames_emitted"]) for r in records_of(items)] == [("source_summary", {}, len(IDS))]
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
        full = frames_of(drain(source.build_part("in", part_name, None)))
        part = source.build_part("in", part_name, None)
        head = drain(part, limit=3)
        state = part.snapshot()
        part.close()
        # Past the last emitted frame, not past the share's next one.
        assert head[-1].frame_id < state <= full[len(head)].frame_id
        rest = frames_of(drain(source.build_part("in", part_name, state)))
        assert [f.frame_id for f in head + rest] == [f.frame_id for f in full]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(head + rest, full))


def test_resume_states_inside_a_gap_and_past_the_end(rec: Path) -> None:
    source = ReplaySource(rec, "cam0")
    assert [f.frame_id for f in frames_of(drain(source.build_part("in", "cam0", 6)))] == [i for i in IDS if i >= 6]
    assert [f.frame_id for f in frames_of(drain(source.build_part("in", "cam0", 16)))] == [17, 18]
    assert frames_of(drain(source.build_part("in", "cam0", 19))) == []


def test_resume_works_without_an_index(rec: Path) -> None:
    index_path(rec).unlink()
    rest = frames_of(drain(ReplaySource(rec, "cam0").build_part("in", "cam0", 10)))
    assert [f.frame_id for f in rest] == [i for i in IDS if i >= 10]
    assert index_path(rec).exists()


def test_jpeg_replay_is_identical_every_time(tmp_path: Path) -> None:
    path = tmp_path / "j.fmrec"
    write(path, encoding="jpeg")
    first, second = frames_of(run_source(ReplaySource(path, "cam0"))), frames_of(run_source(ReplaySource(path, "cam0", shares=2)))
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


@pytest.mark.parametrize("shares", [1, 2])
def test_a_record_cut_short_ends_the_recording_with_the_damage_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shares: int
) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path)
    bad_offset = _cut(path, offsets, 9, 100)  # inside frame 11's record
    with caplog.at_level(logging.WARNING):
        items = run_source(ReplaySource(path, "cam0", shares=shares))
    frames = frames_of(items)
    assert sorted(f.frame_id for f in frames) == IDS[:9]
    assert all(np.array_equal(f.image, image_of(f.frame_id)) for f in frames)
    damage = [r for r in records_of(items) if r["record_type"] == "malformed_message"]
    assert [(r["kind"], r["count"], r["stream"]) for r in damage] == [("cut_short", 1, "cam0")]
    assert f"byte offset {bad_offset}" in damage[0]["detail"] and "no intact record after it" in damage[0]["detail"]
    summaries = [r for r in records_of(items) if r["record_type"] == "source_summary"]
    assert len(summaries) == shares and sum(r["frames_emitted"] for r in summaries) == 9
    assert [r["malformed"] for r in summaries] == [{"cut_short": 1}] + [{}] * (shares - 1)  # share 0 counts byte damage
    assert any(f"byte offset {bad_offset}" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
@pytest.mark.parametrize("shares", [1, 2])
def test_a_damaged_record_is_skipped_and_reading_goes_on(tmp_path: Path, encoding: str, shares: int) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path, encoding=encoding)
    _flip(path, offsets, 9, 10)  # inside frame 11's payload: its CRC no longer matches
    items = run_source(ReplaySource(path, "cam0", shares=shares))
    frames = sorted(frames_of(items), key=lambda f: f.frame_id)
    assert [f.frame_id for f in frames] == IDS[:9] + IDS[10:]
    if encoding == "raw":
        assert all(np.array_equal(f.image, image_of(f.frame_id)) for f in frames)
    (damage,) = [r for r in records_of(items) if r["record_type"] == "malformed_message"]
    assert (damage["kind"], damage["count"]) == ("crc", 1)
    assert f"byte offset {offsets[9]}" in damage["detail"] and f"goes on at byte offset {offsets[10]}" in damage["detail"]


def _replace_payload(path: Path, offsets: List[int], record: int, payload: bytes) -> None:
    """Give one record a new payload of the same length with a correct CRC: damage only a decoder sees."""
    data = bytearray(path.read_bytes())
    start = offsets[record] + recording.RECORD_HEADER_SIZE
    body_len, _crc = recording.RECORD_PREFIX.unpack_from(data, offsets[record])
    end = offsets[record] + recording.RECORD_PREFIX.size + body_len
    data[start:end] = payload[: end - start].ljust(end - start, b"\0")
    body = bytes(data[offsets[record] + recording.RECORD_PREFIX.size : end])
    recording.RECORD_PREFIX.pack_into(data, offsets[record], body_len, zlib.crc32(body))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("shares", [1, 2])
def test_a_payload_that_does_not_decode_is_counted_by_the_share_that_owns_it(tmp_path: Path, shares: int) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path, encoding="jpeg")
    _replace_payload(path, offsets, 9, b"not a jpeg")  # frame 11, share 1 of 2
    items = run_source(ReplaySource(path, "cam0", shares=shares))
    assert sorted(f.frame_id for f in frames_of(items)) == IDS[:9] + IDS[10:]
    summaries = sorted((r for r in records_of(items) if r["record_type"] == "source_summary"), key=lambda r: r.get("share") or "")
    owner = IDS[9] % shares
    assert [r["malformed"] for r in summaries] == [{"undecodable": 1} if i == owner else {} for i in range(shares)]


def test_garbage_between_records_is_skipped_to_the_next_intact_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path)
    data = path.read_bytes()
    garbage = np.random.default_rng(7).integers(0, 256, 3 * 1024 * 1024, dtype=np.uint8).tobytes()  # several scan chunks
    path.write_bytes(data[: offsets[4]] + garbage + data[offsets[4] :])
    items = run_source(ReplaySource(path, "cam0"))
    assert [f.frame_id for f in frames_of(items)] == IDS
    (summary,) = [r for r in records_of(items) if r["record_type"] == "source_summary"]
    assert sum(summary["malformed"].values()) == 1


def test_resume_after_damage_emits_exactly_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.fmrec"
    offsets = write(path)
    _flip(path, offsets, 3, 10)  # frame 3
    everything = [f.frame_id for f in frames_of(run_source(ReplaySource(path, "cam0")))]
    assert everything == [i for i in IDS if i != 3]
    rest = frames_of(drain(ReplaySource(path, "cam0").build_part("in", "cam0", 9)))
    assert [f.frame_id for f in rest] == [i for i in everything if i >= 9]


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
    rest = frames_of(drain(part))
    assert [f.frame_id for f in rest] == IDS[5:]
    part.close()


def test_realtime_replay_in_a_dataflow_keeps_the_recorded_spacing(tmp_path: Path) -> None:
    path = tmp_path / "rt.fmrec"
    ids = list(range(5))
    write(path, ids, times=[T0 + i * 10_000_000 for i in ids])
    emitted: List[int] = []

    def stamp(_step: str, item: Any) -> None:
        if isinstance(item, Frame):
            emitted.append(time.monotonic_ns())

    flow = Dataflow("realtime_test")
    frames = op.input("in", flow, ReplaySource(path, "cam0", settings=SourceConfig(realtime=True)))
    op.inspect("stamp", frames, stamp)
    out: List[Any] = []
    op.output("out", frames, TestingSink(out))
    run_main(flow)
    assert [f.frame_id for f in frames_of(out)] == ids
    # Never faster than recorded: frame k leaves at least k * 10 ms after frame 0.
    assert all(t - emitted[0] >= k * 10_000_000 for k, t in enumerate(emitted))
