"""Recordings: the recorder against a live publisher, the file format, its index, damage, the CLI."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import bytewax.operators as op
import cv2
import numpy as np
import pytest
import zmq
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

import facemoment.tools.daemon as daemon_module
import facemoment.formats.recording as recording
import facemoment.formats.recording.writer as recording_writer
from facemoment.tools.daemon import run_daemon
from facemoment.formats.frames import open_frames
from facemoment.formats.recording import (
    RecordingError,
    RecordingFrameReader,
    RecordingReader,
    RecordingWriteError,
    RecordingWriter,
    index_path,
    is_recording,
)
from connectors.replay_source import ReplaySource
from facemoment.core.types import Frame
from facemoment.tools.record import Recorder, RecordSummary, add_record_args, parse_size, record_main
from facemoment.formats.wire import pack_frame

from conftest import wait_until

W, H = 64, 48
# Frame ids the publisher sends: 5 and 6 are lost "on the wire".
SENT_IDS = [0, 1, 2, 3, 4, 7, 8, 9]
T0 = 1_700_000_000_000_000_000
WAIT_S = 10.0


def make_image(i: int, channels: int = 3) -> np.ndarray:
    """A camera-like picture (gradients, a soft disc, text), different for every i."""
    y, x = np.mgrid[0:H, 0:W]
    base = (30 + x * 2 + y + i * 3).astype(np.uint8)
    image = np.dstack([base, base // 2 + 40, 220 - base // 2]).astype(np.uint8)
    cv2.circle(image, (10 + 3 * (i % 12), 24), 8, (120, 150, 90), -1, cv2.LINE_AA)
    cv2.putText(image, str(i), (40, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200), 1, cv2.LINE_AA)
    return image if channels == 3 else image[:, :, 0].copy()


def t_of(frame_id: int) -> int:
    return T0 + frame_id * 33_333_333 + (frame_id % 3)  # irregular on purpose


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)




class Publisher:
    """A plain XPUB the test drives; it sees the recorder's subscription, so no frame is sent too early."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)  # the test's sends never drop
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    def wait_subscribed(self) -> None:
        assert self.socket.poll(int(WAIT_S * 1000)), "the recorder never subscribed"
        assert self.socket.recv() == b"\x01frame"

    def send(self, frame_id: int, image: np.ndarray, t_ns: Optional[int] = None) -> None:
        self.socket.send_multipart(pack_frame(frame_id, t_of(frame_id) if t_ns is None else t_ns, image))

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture()
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


class InThread:
    """Runs ``target`` on a thread and keeps its result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._target = target
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "did not end"
        if self.error is not None:
            raise self.error
        return self.result


def record_frames(publisher: Publisher, path: Path, ids: List[int], **options: Any) -> Tuple[RecordSummary, List[str]]:
    lines: List[str] = []
    recorder = Recorder(publisher.endpoint, path, progress=lines.append, **options)
    stop = threading.Event()
    runner = InThread(lambda: recorder.run(stop))
    publisher.wait_subscribed()
    for n, frame_id in enumerate(ids):
        publisher.send(frame_id, make_image(frame_id))
        if n == 2:
            publisher.socket.send_multipart([b"frame", b"too short", b""])  # counted, not recorded
    assert wait_until(lambda: recorder.frames_written == len(ids))
    stop.set()
    return runner.join(), lines


def write_recording(path: Path, ids: List[int], encoding: str = "raw", channels: int = 3, **kw: Any) -> List[int]:
    """A recording made directly by the writer; returns the record offsets."""
    with RecordingWriter(path, {"stream": "test"}, **kw) as writer:
        return [writer.append_image(i, t_of(i), make_image(i, channels), encoding) for i in ids]


def replay(path: Path, **kwargs: Any) -> List[Any]:
    """The frames a replay emits (its trace records aside)."""
    out: List[Any] = []
    flow = Dataflow("replay_test")
    op.output("out", op.input("in", flow, ReplaySource(path, "cam0", **kwargs)), TestingSink(out))
    run_main(flow)
    return [x for x in out if isinstance(x, Frame)]


# ------------------------------------------------------------------ recorder


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_lossless_recording_keeps_ids_times_and_pixels(publisher: Publisher, tmp_path: Path, encoding: str) -> None:
    path = tmp_path / f"cam.{encoding}.fmrec"
    summary, lines = record_frames(publisher, path, SENT_IDS, encoding=encoding)
    assert summary.frames == len(SENT_IDS) and summary.end_reason == "stopped" and summary.error is None
    assert (summary.lost_frames, summary.gaps) == (2, 1)
    assert summary.malformed == {"short_header": 1}
    assert "2 frame(s) lost on the wire in 1 gap(s)" in summary.line()
    with RecordingReader(path) as reader:
        records = list(reader.records())
        assert reader.metadata["stream"] == publisher.endpoint
        assert reader.metadata["encoding"] == encoding
        assert isinstance(reader.metadata["start_wall_ns"], int)
    assert [r.frame_id for r in records] == SENT_IDS
    assert [r.t_src_ns for r in records] == [t_of(i) for i in SENT_IDS]
    assert all(np.array_equal(r.image(), make_image(r.frame_id)) for r in records)
    frames = replay(path)
    assert [f.frame_id for f in frames] == SENT_IDS
    assert all(np.array_equal(f.image, make_image(f.frame_id)) for f in frames)


def test_jpeg_recording_replays_deterministically_and_close_to_the_input(publisher: Publisher, tmp_path: Path) -> None:
    path = tmp_path / "cam.fmrec"
    summary, lines = record_frames(publisher, path, SENT_IDS)  # jpeg at 95 by default
    assert summary.frames == len(SENT_IDS)
    assert any("jpeg quality 95" in line for line in lines)
    with RecordingReader(path) as reader:
        assert (reader.metadata["encoding"], reader.metadata["jpeg_quality"]) == ("jpeg", 95)
    first, second = replay(path), replay(path)
    assert [f.frame_id for f in first] == SENT_IDS
    assert [f.t_src_ns for f in first] == [t_of(i) for i in SENT_IDS]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second))
    assert all(psnr(f.image, make_image(f.frame_id)) > 35 for f in first)
    assert not all(np.array_equal(f.image, make_image(f.frame_id)) for f in first)  # it is lossy


def test_grey_frames_round_trip(publisher: Publisher, tmp_path: Path) -> None:
    path = tmp_path / "grey.fmrec"
    lines: List[str] = []
    recorder = Recorder(publisher.endpoint, path, encoding="png", progress=lines.append)
    stop = threading.Event()
    runner = InThread(lambda: recorder.run(stop))
    publisher.wait_subscribed()
    for i in range(3):
        publisher.send(i, make_image(i, channels=1))
    assert wait_until(lambda: recorder.frames_written == 3)
    stop.set()
    runner.join()
    frames = replay(path)
    assert all(f.image.ndim == 2 and np.array_equal(f.image, make_image(f.frame_id, 1)) for f in frames)


def test_publisher_restart_ends_the_recording(publisher: Publisher, tmp_path: Path) -> None:
    path = tmp_path / "restart.fmrec"
    lines: List[str] = []
    recorder = Recorder(publisher.endpoint, path, encoding="raw", progress=lines.append)
    runner = InThread(recorder.run)  # no stop event: the restart alone ends it
    publisher.wait_subscribed()
    for i in (0, 1, 2, 0):
        publisher.send(i, make_image(i))
    summary = runner.join()
    assert summary.end_reason == "publisher_restart" and summary.frames == 3
    assert any("restarted" in line for line in lines)
    with RecordingReader(path) as reader:
        assert [r.frame_id for r in reader.records()] == [0, 1, 2]


def test_duration_ends_the_recording(publisher: Publisher, tmp_path: Path) -> None:
    recorder = Recorder(publisher.endpoint, tmp_path / "d.fmrec", duration_s=0.2, progress=lambda _l: None)
    summary = InThread(recorder.run).join()
    assert summary.end_reason == "duration" and summary.frames == 0


# ------------------------------------------------------------------ CLI


def parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="facemoment")
    add_record_args(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_arguments_and_defaults() -> None:
    args = parse(["record", "tcp://127.0.0.1:5555", "-o", "x.fmrec"])
    assert args.func is record_main
    assert (args.duration, args.max_bytes, args.encoding, args.jpeg_quality) == (None, 2 * 1024**3, "jpeg", 95)
    args = parse(
        ["record", "tcp://h:1", "-o", "y", "--duration", "5", "--max-bytes", "500M", "--encoding", "png", "--jpeg-quality", "80"]
    )
    assert (args.duration, args.max_bytes, args.encoding, args.jpeg_quality) == (5.0, 500 * 1024**2, "png", 80)
    assert parse_size("2G") == parse_size("2GiB") == 2 * 1024**3 and parse_size("1024") == 1024
    for bad in (["--jpeg-quality", "0"], ["--max-bytes", "lots"], ["--encoding", "gif"]):
        with pytest.raises(SystemExit):
            parse(["record", "tcp://h:1", "-o", "z", *bad])


def test_cli_refuses_to_overwrite_and_rejects_bad_addresses(tmp_path: Path) -> None:
    existing = tmp_path / "old.fmrec"
    existing.write_bytes(b"keep me")
    lines: List[str] = []
    assert record_main(parse(["record", "tcp://127.0.0.1:1", "-o", str(existing)]), progress=lines.append) == 2
    assert existing.read_bytes() == b"keep me" and "--overwrite" in lines[-1]
    lines.clear()
    assert record_main(parse(["record", "127.0.0.1:5555", "-o", str(tmp_path / "n.fmrec")]), progress=lines.append) == 2
    assert "tcp://" in lines[-1] and not (tmp_path / "n.fmrec").exists()


def test_max_bytes_stops_cleanly_with_a_valid_file(publisher: Publisher, tmp_path: Path) -> None:
    path = tmp_path / "bounded.fmrec"
    record_bytes = RecordingWriter.record_size(W * H * 3) + recording.INDEX_ENTRY.itemsize
    limit = 4096 + 3 * record_bytes  # header and index header fit in 4096; three frames, not four
    lines: List[str] = []
    args = parse(["record", publisher.endpoint, "-o", str(path), "--encoding", "raw", "--max-bytes", str(limit)])
    runner = InThread(lambda: record_main(args, progress=lines.append))
    publisher.wait_subscribed()
    for i in range(6):
        publisher.send(i, make_image(i))
    assert runner.join() == 0  # ends by itself
    assert any("stopped" in line and "limit" in line for line in lines)
    assert "ended: max_bytes" in lines[-1]
    assert path.stat().st_size + index_path(path).stat().st_size <= limit
    with RecordingReader(path) as reader:
        assert [r.frame_id for r in reader.records()] == [0, 1, 2]
        assert len(reader.index()) == 3


def test_disk_full_names_the_path_and_keeps_the_complete_records(
    publisher: Publisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "full.fmrec"
    real_write = recording_writer._write_all
    record_writes = []

    def filling_disk(file: Any, data: bytes) -> None:
        if file.name == str(path) and len(data) > 1000:
            record_writes.append(len(data))
            if len(record_writes) == 4:  # the 4th record finds the disk full half way
                real_write(file, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(file, data)

    monkeypatch.setattr(recording_writer, "_write_all", filling_disk)
    lines: List[str] = []
    args = parse(["record", publisher.endpoint, "-o", str(path), "--encoding", "raw"])
    runner = InThread(lambda: record_main(args, progress=lines.append))
    publisher.wait_subscribed()
    for i in range(6):
        publisher.send(i, make_image(i))
    assert runner.join() == 1
    assert "disk full" in lines[-1] and str(path) in lines[-1] and "3 complete frame(s)" in lines[-1]
    with RecordingReader(path) as reader:
        records = list(reader.records())  # no error: the half record was cut away
        assert path.stat().st_size == records[-1].end
    assert [r.frame_id for r in records] == [0, 1, 2]


def test_disk_full_in_the_writer_raises_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.fmrec"
    writer = RecordingWriter(path)
    writer.append_image(0, 1, make_image(0), "raw")

    def full(file: Any, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recording_writer, "_write_all", full)
    with pytest.raises(RecordingWriteError, match="disk full while writing .*w.fmrec") as caught:
        writer.append_image(1, 2, make_image(1), "raw")
    assert caught.value.disk_full and caught.value.path == str(path)
    writer.close()
    monkeypatch.undo()
    with RecordingReader(path) as reader:
        assert [r.frame_id for r in reader.records()] == [0]


def test_ctrl_c_closes_the_recording_cleanly(publisher: Publisher, tmp_path: Path) -> None:
    path = tmp_path / "interrupted.fmrec"
    three_records = 3 * RecordingWriter.record_size(W * H * 3)
    before = signal.getsignal(signal.SIGINT)

    def drive() -> None:
        publisher.wait_subscribed()
        for i in range(3):
            publisher.send(i, make_image(i))
        assert wait_until(lambda: path.exists() and path.stat().st_size > three_records)
        os.kill(os.getpid(), signal.SIGINT)

    driver = InThread(drive)
    lines: List[str] = []
    args = parse(["record", publisher.endpoint, "-o", str(path), "--encoding", "raw"])
    assert record_main(args, progress=lines.append) == 0  # on the main thread, as the CLI runs
    driver.join()
    assert "ended: stopped" in lines[-1] and "3 frames" in lines[-1]
    assert signal.getsignal(signal.SIGINT) is before
    with RecordingReader(path) as reader:
        assert [r.frame_id for r in reader.records()] == [0, 1, 2]


def test_progress_reports_frames_megabytes_and_rate(publisher: Publisher, tmp_path: Path) -> None:
    lines: List[str] = []
    recorder = Recorder(publisher.endpoint, tmp_path / "p.fmrec", progress=lines.append, progress_interval_s=0.0)
    stop = threading.Event()
    runner = InThread(lambda: recorder.run(stop))
    publisher.wait_subscribed()
    for i in SENT_IDS:
        publisher.send(i, make_image(i))
    final = f"record: {len(SENT_IDS)} frames, "
    assert wait_until(lambda: any(line.startswith(final) for line in list(lines)))
    stop.set()
    runner.join()
    progress = [line for line in lines if re.fullmatch(r"record: \d+ frames, [\d.]+ MB, [\d.]+ fps.*", line)]
    counts = [int(line.split()[1]) for line in progress]
    assert counts == sorted(counts) and counts[-1] == len(SENT_IDS)
    assert progress[-1].endswith("2 lost on the wire")


# ------------------------------------------------------------------ format and index


def test_byte_layout_is_the_documented_one(tmp_path: Path) -> None:
    """The tables in docs/recording.md, read back with plain struct calls."""
    path = tmp_path / "layout.fmrec"
    image = make_image(1)
    with RecordingWriter(path, {"stream": "tcp://x:1"}) as writer:
        writer.append_image(41, 123456789, image, "raw")
        writer.append_image(43, 223456789, make_image(2, channels=1), "png")
    data = path.read_bytes()
    assert data[:8] == bytes.fromhex("464D5245430D0A1A")
    version, meta_len = struct.unpack_from("!HI", data, 8)
    assert version == 1
    meta = data[14 : 14 + meta_len]
    assert json.loads(meta)["stream"] == "tcp://x:1"
    assert struct.unpack_from("!I", data, 14 + meta_len)[0] == zlib.crc32(data[: 14 + meta_len])
    at = 18 + meta_len
    body_len, crc = struct.unpack_from("!II", data, at)
    body = data[at + 8 : at + 8 + body_len]
    assert zlib.crc32(body) == crc and body_len == 26 + W * H * 3
    assert struct.unpack_from("!QQIIBB", body) == (41, 123456789, W, H, 3, 0)
    assert body[26:] == image.tobytes()
    at += 8 + body_len
    body_len, crc = struct.unpack_from("!II", data, at)
    assert struct.unpack_from("!QQIIBB", data, at + 8) == (43, 223456789, W, H, 1, 2)
    assert data[at + 8 + 26 : at + 8 + 26 + 4] == b"\x89PNG"
    assert at + 8 + body_len == len(data)
    idx = index_path(path).read_bytes()
    assert idx[:8] == bytes.fromhex("464D4944580D0A1A")
    assert struct.unpack_from("!HHI", idx, 8) == (1, 24, zlib.crc32(data[: 14 + meta_len]))
    assert struct.unpack_from("!QQQ", idx, 16) == (41, 123456789, 18 + meta_len)
    assert struct.unpack_from("!QQQ", idx, 40) == (43, 223456789, at)
    assert len(idx) == 64


def test_writer_rejects_ids_that_do_not_increase(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "ids.fmrec") as writer:
        writer.append_image(5, 1, make_image(0), "raw")
        with pytest.raises(ValueError, match="frame id 5 does not follow frame id 5"):
            writer.append_image(5, 2, make_image(0), "raw")
        with pytest.raises(ValueError, match="encoding"):
            writer.append(6, 2, W, H, 3, "gif", b"x")
        with pytest.raises(ValueError, match="does not fit"):
            writer.append(6, 2, W, H, 3, "raw", b"short")


def test_index_seeks_by_frame_id_and_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "seek.fmrec"
    ids = [0, 1, 2, 5, 6, 10, 11]
    offsets = write_recording(path, ids)
    idx = index_path(path)
    original = idx.read_bytes()
    assert len(original) == recording.INDEX_HEADER.size + len(ids) * recording.INDEX_ENTRY.itemsize

    def check() -> None:
        with RecordingReader(path) as reader:
            index = reader.index()
            assert list(index.frame_ids) == ids and list(index.offsets) == offsets
            assert list(index.t_ns) == [t_of(i) for i in ids] and index.complete
            for wanted, expect in ((0, 0), (2, 2), (3, 5), (5, 5), (7, 10), (11, 11)):
                assert next(reader.records(reader.offset_for(wanted))).frame_id == expect
            assert list(reader.records(reader.offset_for(12))) == []

    check()
    idx.unlink()  # missing
    check()
    assert idx.read_bytes() == original
    idx.write_bytes(original[: -2 * recording.INDEX_ENTRY.itemsize - 5])  # shorter than the data, last entry cut
    check()
    assert idx.read_bytes() == original
    idx.write_bytes(original[:16] + bytes(reversed(original[16:])))  # nonsense entries
    check()
    assert idx.read_bytes() == original
    other = tmp_path / "other.fmrec"
    write_recording(other, ids)
    os.replace(index_path(other), idx)  # another recording's index
    check()
    assert idx.read_bytes() == original


def test_index_is_flushed_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "flush.fmrec"
    entry = recording.INDEX_ENTRY.itemsize
    with RecordingWriter(path, index_flush_records=4, index_flush_seconds=3600) as writer:
        for i in range(3):
            writer.append_image(i, t_of(i), make_image(i), "raw")
        assert index_path(path).stat().st_size == recording.INDEX_HEADER.size
        writer.append_image(3, t_of(3), make_image(3), "raw")
        assert index_path(path).stat().st_size == recording.INDEX_HEADER.size + 4 * entry
        writer.append_image(4, t_of(4), make_image(4), "raw")
    assert index_path(path).stat().st_size == recording.INDEX_HEADER.size + 5 * entry


def test_truncated_file_raises_naming_the_offset_after_the_good_records(tmp_path: Path) -> None:
    path = tmp_path / "cut.fmrec"
    offsets = write_recording(path, [0, 1, 2, 3, 4], encoding="jpeg")
    data = path.read_bytes()
    path.write_bytes(data[: offsets[3] + 50])  # in the middle of frame 3's record
    index_path(path).unlink()
    seen = []
    with RecordingReader(path) as reader:
        with pytest.raises(RecordingError) as caught:
            for record in reader.records():
                seen.append(record.frame_id)
        assert len(reader.index()) == 3 and not reader.index().complete
    assert seen == [0, 1, 2]
    assert caught.value.offset == offsets[3]
    assert f"byte offset {offsets[3]}" in str(caught.value) and "cut short" in str(caught.value)
    path.write_bytes(data[: offsets[3] + 5])  # inside the length/CRC prefix
    with RecordingReader(path) as reader, pytest.raises(RecordingError, match=f"cut short.*offset {offsets[3]}"):
        list(reader.records())


def test_flipped_payload_byte_is_a_crc_error_at_its_record(tmp_path: Path) -> None:
    path = tmp_path / "flip.fmrec"
    offsets = write_recording(path, [0, 1, 2, 3], encoding="png")
    data = bytearray(path.read_bytes())
    data[offsets[2] + recording.RECORD_HEADER_SIZE + 10] ^= 0x40
    path.write_bytes(bytes(data))
    seen = []
    with RecordingReader(path) as reader, pytest.raises(RecordingError, match=f"CRC mismatch.*offset {offsets[2]}"):
        for record in reader.records():
            seen.append(record.image())
    assert len(seen) == 2 and np.array_equal(seen[1], make_image(1))


def test_impossible_header_fields_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "fields.fmrec"
    offsets = write_recording(path, [0, 1, 2])
    data = bytearray(path.read_bytes())
    data[offsets[1] + recording.RECORD_PREFIX.size + 24] = 7  # channels
    path.write_bytes(bytes(data))
    with RecordingReader(path) as reader, pytest.raises(RecordingError, match=f"channels=7 at byte offset {offsets[1]}"):
        list(reader.records())
    data[offsets[1] + recording.RECORD_PREFIX.size + 24] = 3
    data[offsets[1] : offsets[1] + 4] = struct.pack("!I", 0xFFFFFFF0)  # length
    path.write_bytes(bytes(data))
    with RecordingReader(path) as reader, pytest.raises(RecordingError, match=f"length .* offset {offsets[1]}"):
        list(reader.records())


def test_files_that_are_not_recordings(tmp_path: Path) -> None:
    other = tmp_path / "clip.mp4"
    other.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    assert not is_recording(other) and not is_recording(tmp_path / "missing.fmrec") and not is_recording(tmp_path)
    assert not is_recording("sample") and not is_recording("tcp://127.0.0.1:5555") and not is_recording("0")
    with pytest.raises(RecordingError, match="not a FaceMoment recording.*offset 0"):
        RecordingReader(other)
    good = tmp_path / "good.fmrec"
    write_recording(good, [0])
    assert is_recording(good) and is_recording(str(good))
    data = bytearray(good.read_bytes())
    data[20] ^= 1  # inside the metadata
    good.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="header CRC mismatch"):
        RecordingReader(good)


# ------------------------------------------------------------------ FrameReader interface


def test_recording_frame_reader_has_the_frame_reader_interface(tmp_path: Path) -> None:
    path = tmp_path / "fr.fmrec"
    ids = [3, 4, 5, 8, 9]
    write_recording(path, ids)
    with RecordingFrameReader(str(path)) as reader:
        assert (reader.width, reader.height, reader.frame_count, reader.is_live) == (W, H, len(ids), False)
        assert reader.fps == pytest.approx((9 - 3) * 1e9 / (t_of(9) - t_of(3)))
        assert reader.source_fps == reader.fps and reader.target_fps is None
        assert reader.next_frame_id == 0
        items = list(reader)
        assert reader.next_frame_id == 10 and reader.read() is None
    assert [(i, t) for i, t, _ in items] == [(i, t_of(i)) for i in ids]
    assert all(np.array_equal(image, make_image(i)) for i, _, image in items)
    with RecordingFrameReader(path, start_frame_id=6) as reader:
        assert [i for i, _, _ in reader] == [8, 9]
    with RecordingFrameReader(path, loop=True) as reader:
        looped = [reader.read() for _ in range(2 * len(ids))]
    assert [i for i, _, _ in looped] == ids + [i + 7 for i in ids]  # gaps kept, ids keep increasing
    times = [t for _, t, _ in looped]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[len(ids)] - times[len(ids) - 1] == (t_of(9) - t_of(3)) // 6  # one average period
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(looped, looped[len(ids):]))
    with pytest.raises(ValueError, match="fps"):
        RecordingFrameReader(path, fps=10)


def test_recording_frame_reader_ends_at_damage_with_a_logged_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "frd.fmrec"
    offsets = write_recording(path, [0, 1, 2, 3])
    path.write_bytes(path.read_bytes()[: offsets[2] + 40])
    with caplog.at_level(logging.ERROR), RecordingFrameReader(path) as reader:
        assert [i for i, _, _ in reader] == [0, 1]
        assert reader.error is not None and reader.error.offset == offsets[2] and reader.truncated
    assert any(f"byte offset {offsets[2]}" in r.getMessage() for r in caplog.records)


def _open_frames_with_recordings(source: str, fps: Optional[float] = None, loop: bool = False, start_frame_id: int = 0) -> Any:
    """open_frames as facemoment/formats/frames.py dispatches once recordings are wired in."""
    if is_recording(source):
        return RecordingFrameReader(source, fps=fps, loop=loop, start_frame_id=start_frame_id)
    return open_frames(source, fps=fps, loop=loop, start_frame_id=start_frame_id)


def test_daemon_republishes_a_recording_with_its_ids_and_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "daemon.fmrec"
    ids = [0, 1, 2, 5, 6, 7]
    with RecordingWriter(path) as writer:
        for i in ids:  # 20 ms apart, so the daemon's pacing keeps the test short
            writer.append_image(i, T0 + i * 20_000_000, make_image(i), "raw")
    try:
        routed = isinstance(open_frames(str(path)), RecordingFrameReader)
    except (ValueError, FileNotFoundError):
        routed = False
    if not routed:
        monkeypatch.setattr(daemon_module, "open_frames", _open_frames_with_recordings)
    bound = threading.Event()
    endpoint: List[str] = []

    def on_bound(address: str) -> None:
        endpoint.append(address)
        bound.set()

    # Looping, so the frames checked are never the last ones sent: the daemon
    # closes its socket without lingering, which may discard its final sends.
    sent = len(ids) + 3
    runner = InThread(
        lambda: run_daemon(
            str(path), "tcp://127.0.0.1:*", loop=True, max_frames=sent, wait_subscribers=1,
            wait_timeout_s=WAIT_S, on_bound=on_bound, log=lambda _line: None,
        )
    )
    assert bound.wait(WAIT_S)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.connect(endpoint[0])
    received = []
    try:
        while len(received) < len(ids) + 1 and sub.poll(int(WAIT_S * 1000)):
            received.append(sub.recv_multipart())
    finally:
        summary = runner.join()
        sub.close(linger=0)
        context.term()
    assert summary.frames_sent == sent and summary.frames_dropped == 0
    headers = [struct.unpack("!QQIIB", parts[1]) for parts in received]
    # The second pass continues ids and times: shifted by the id span (8) and 8 frame periods.
    expected = ids + [ids[0] + 8]
    assert [(h[0], h[1]) for h in headers] == [(i, T0 + i * 20_000_000) for i in expected]
    assert all(parts[2] == make_image(i % 8).tobytes() for parts, i in zip(received, expected))
