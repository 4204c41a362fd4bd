"""visualbase ingest's proxy FIFOs: the pipe codec, the FIFO source and its start-up check.

Writers here follow the protocol (tests/vb_ingest.py builds the bytes from the spec):
the FIFO is created by the writer, which blocks in open() until a reader comes.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from conftest import drain
from facemoment.core.config import SourceConfig
from connectors.fifo_source import FifoFrameSource
from connectors.id_steps import IdStep
from facemoment.core.config import ConfigError, load_config
from facemoment.core.records import Record
from facemoment.core.types import Frame
from facemoment.formats.proxy_pipe import ProxyFrameParser, decode_proxy_jpeg, is_fifo, pack_proxy_frame
from facemoment.formats.wire import WireError
from facemoment.runtime import preflight

from vb_ingest import proxy_frame_bytes

W, H = 64, 48


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def image(value: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = value % 256
    return img


def frame_bytes(frame_id: int) -> bytes:
    return proxy_frame_bytes(frame_id, frame_id * 33_333_333, image(frame_id * 7), W, H)


class Writer(threading.Thread):
    """One ingest proxy writer: creates the FIFO, waits for a reader, writes `chunks`."""

    def __init__(self, path: Path, chunks: List[bytes], made: Optional[threading.Event] = None) -> None:
        super().__init__(daemon=True)
        self.path, self.chunks = path, chunks
        self.made = made or threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        if self.path.exists():
            self.path.unlink()
        os.mkfifo(self.path)
        self.made.set()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for chunk in self.chunks:
                os.write(fd, chunk)
        except BrokenPipeError as exc:
            self.error = exc
        finally:
            os.close(fd)
            self.path.unlink()


def run_source(source: FifoFrameSource) -> Tuple[List[Frame], List[Dict[str, Any]]]:
    got: List[Any] = []
    flow = Dataflow("fifo_test")
    op.output("out", op.input("in", flow, source), TestingSink(got))
    run_main(flow)
    return [x for x in got if isinstance(x, Frame)], [x.to_dict() for x in got if isinstance(x, Record)]


# ---------------------------------------------------------------- the pipe codec


def test_header_is_little_endian_length_id_time_then_the_jpeg() -> None:
    jpeg = b"\xff\xd8\xff" + b"x" * 10
    data = pack_proxy_frame(7, 123_456_789, jpeg)
    assert data[:20] == struct.pack("<IQQ", len(jpeg), 7, 123_456_789) and data[20:] == jpeg
    assert ProxyFrameParser().feed(data) == [(7, 123_456_789, jpeg)]


def test_frames_split_anywhere_are_reassembled() -> None:
    stream = b"".join(frame_bytes(i) for i in (0, 3, 6))
    parser = ProxyFrameParser()
    out: List[Any] = []
    for k in range(0, len(stream), 7):  # pieces of 7 bytes, as a pipe may hand them out
        out += parser.feed(stream[k : k + 7])
    assert [(fid, t) for fid, t, _ in out] == [(0, 0), (3, 99_999_999), (6, 199_999_998)]
    assert np.array_equal(decode_proxy_jpeg(out[0][2]).shape, (H, W, 3)) and parser.pending_bytes == 0


def test_bad_headers_are_errors_and_the_parser_finds_the_next_frame() -> None:
    too_large = struct.pack("<IQQ", 1 << 31, 1, 1) + b"\x00" * 5
    not_jpeg = struct.pack("<IQQ", 8, 2, 2) + b"ABCDEFGH"
    parser = ProxyFrameParser(max_jpeg_bytes=1 << 20)
    out = parser.feed(frame_bytes(0) + too_large + frame_bytes(3) + not_jpeg + b"junk" + frame_bytes(6))
    kinds = [x.kind if isinstance(x, WireError) else x[0] for x in out]
    assert kinds == [0, "too_large", 3, "bad_header", 6]


def test_a_jpeg_that_does_not_decode_is_a_jpeg_error() -> None:
    with pytest.raises(WireError) as err:
        decode_proxy_jpeg(b"\xff\xd8\xff" + b"\x00" * 50)
    assert err.value.kind == "jpeg"


def test_ids_advancing_by_the_step_are_the_rate_and_longer_advances_are_gaps() -> None:
    steps = IdStep()
    ids = [0, 3, 6, 10, 12, 15, 24, 27]  # about 3; 15 -> 24 misses two proxy frames
    gaps = [steps.gap(a, b) for a, b in zip(ids, ids[1:])]
    assert [g.count if g else 0 for g in gaps] == [0, 0, 0, 0, 0, 2, 0]
    gap = gaps[5]
    assert (gap.first, gap.last, steps.listed(15, gap)) == (16, 23, [18, 21])
    ones = IdStep([1, 1, 1])
    assert ones.gap(10, 13).count == 2 and ones.gap(13, 14) is None


# ---------------------------------------------------------------- the source


def test_the_source_reads_a_proxy_stream_counts_lost_frames_by_step_and_rejoins_a_new_writer(short_dir: Path) -> None:
    path = short_dir / "vid_face.mjpg"
    first_ids = [0, 3, 6, 9, 12, 21, 24]  # 12 -> 21: two proxy frames lost
    second_ids = [0, 3, 6]  # ingest restarted: ids from 0 again
    chunks = [frame_bytes(i) for i in first_ids]
    chunks.insert(2, struct.pack("<IQQ", 60, 99, 99) + b"\xff\xd8\xff" + b"\x00" * 57)  # a JPEG that does not decode
    chunks.append(frame_bytes(27)[:30])  # the writer goes away mid-frame

    def both() -> None:
        Writer(path, chunks).run()
        Writer(path, [frame_bytes(i) for i in second_ids]).run()

    writers = threading.Thread(target=both, daemon=True)
    writers.start()
    frames, records = run_source(FifoFrameSource(f"fifo://{path}", "cam3", SourceConfig(idle_timeout_s=1.0, buffer_frames=0)))
    writers.join(10)
    assert [f.frame_id for f in frames] == first_ids + second_ids
    assert all(f.stream_id == "cam3" and f.image.shape == (H, W, 3) for f in frames)
    assert frames[1].t_src_ns == 99_999_999
    (drop,) = [r for r in records if r["record_type"] == "frame_drop"]
    assert (drop["dropped_count"], drop["dropped_range"], drop["dropped_frame_ids"], drop["where"]) == (2, [13, 20], [15, 18], "pipe")
    (restart,) = [r for r in records if r["record_type"] == "publisher_restart"]
    assert (restart["frame_id"], restart["previous_frame_id"]) == (0, 24)
    malformed = {r["kind"]: r["count"] for r in records if r["record_type"] == "malformed_message"}
    assert malformed == {"jpeg": 1, "truncated": 1}
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    assert summary["address"] == f"fifo://{path}" and summary["end_reason"] == "idle_timeout"
    assert (summary["frames_received"], summary["lost_on_wire"], summary["reconnects"]) == (10, 2, 1)
    assert summary["malformed"] == {"jpeg": 1, "truncated": 1} and summary["publisher_restarts"] == 1


def test_a_resumed_source_reports_what_it_missed_while_down(short_dir: Path) -> None:
    path = short_dir / "p.mjpg"
    writer = Writer(path, [frame_bytes(i) for i in (30, 33, 36)])
    writer.start()
    source = FifoFrameSource(str(path), "cam0", SourceConfig(idle_timeout_s=1.0, buffer_frames=0))
    state = {"last_frame_id": 21, "counts": {"frames_received": 8}, "steps": [3, 3, 3]}
    part = source.build_part("in", "cam0", state)
    try:
        got = drain(part)
    finally:
        part.close()
    writer.join(10)
    records = [x.to_dict() for x in got if isinstance(x, Record)]
    (drop,) = [r for r in records if r["record_type"] == "frame_drop"]
    assert (drop["where"], drop["dropped_count"], drop["dropped_frame_ids"]) == ("while_down", 2, [24, 27])
    assert part.snapshot()["last_frame_id"] == 36 and part.snapshot()["counts"]["frames_received"] == 11


def test_the_source_waits_for_the_fifo_to_appear(short_dir: Path) -> None:
    path = short_dir / "later.mjpg"
    made = threading.Event()
    writer = Writer(path, [frame_bytes(i) for i in (0, 3)], made)
    source = FifoFrameSource(f"fifo://{path}", "cam0", SourceConfig(idle_timeout_s=1.0, buffer_frames=0))
    part = source.build_part("in", "cam0", None)  # no FIFO yet: the reader looks, does not fail
    writer.start()
    try:
        got = drain(part)
    finally:
        part.close()
    writer.join(10)
    assert [x.frame_id for x in got if isinstance(x, Frame)] == [0, 3] and writer.error is None


def test_a_reader_waits_on_the_partitions_arrival_signal(short_dir: Path) -> None:
    path = short_dir / "w.mjpg"
    source = FifoFrameSource(str(path), "cam0", SourceConfig(idle_timeout_s=5.0, buffer_frames=0))
    part = source.build_part("in", "cam0", None)
    writer = Writer(path, [frame_bytes(0)])
    try:
        assert not part.wait_for_items(0.05)  # no writer yet: the wait times out
        writer.start()
        assert part.wait_for_items(10.0)  # woken by the frame, which the next batch holds
        assert [x.frame_id for x in part.next_batch() if isinstance(x, Frame)] == [0]
    finally:
        part.close()
    writer.join(10)


# ---------------------------------------------------------------- start-up checks


def test_preflight_classifies_a_fifo_without_opening_it_and_the_writer_survives(short_dir: Path, monkeypatch) -> None:
    path = short_dir / "vid_face.mjpg"
    made = threading.Event()
    writer = Writer(path, [frame_bytes(i) for i in (0, 3, 6)], made)
    writer.start()
    assert made.wait(10) and is_fifo(str(path))

    opened: List[str] = []
    real_os_open, real_open, real_io_open = os.open, builtins.open, io.open

    def guard(real):
        def opener(file, *args, **kwargs):
            if str(file) == str(path):
                opened.append(str(file))
                raise AssertionError("the start-up check opened the FIFO")
            return real(file, *args, **kwargs)
        return opener

    monkeypatch.setattr(os, "open", guard(real_os_open))
    monkeypatch.setattr(builtins, "open", guard(real_open))
    monkeypatch.setattr(io, "open", guard(real_io_open))
    for source in (str(path), f"fifo://{path}"):
        cfg = load_config({"FACEMOMENT_SOURCE": source, "FACEMOMENT_TRIG_ADDRESS": "none", "FACEMOMENT_OUTPUT_DIR": str(short_dir / "out")})
        assert preflight.source_kind(source) == "fifo"
        preflight.check(cfg)
    monkeypatch.undo()
    assert opened == []

    # The writer is still waiting for its one reader, which then gets every frame.
    frames, _ = run_source(FifoFrameSource(str(path), "cam0", SourceConfig(idle_timeout_s=1.0, buffer_frames=0)))
    writer.join(10)
    assert [f.frame_id for f in frames] == [0, 3, 6] and writer.error is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"x"), "is not a FIFO"),
    ],
)
def test_a_fifo_source_that_is_not_a_fifo_is_one_line(short_dir: Path, make, message: str) -> None:
    path = short_dir / "proxy"
    make(path)
    with pytest.raises(ConfigError, match=message):
        preflight.check_source(f"fifo://{path}")


def test_a_fifo_source_path_must_be_absolute_and_may_not_exist_yet(short_dir: Path) -> None:
    with pytest.raises(ConfigError, match="absolute path"):
        preflight.check_source("fifo://relative/pipe")
    preflight.check_source(f"fifo://{short_dir}/not-yet.mjpg")  # the source waits for the writer
    with pytest.raises(ConfigError, match="does not exist"):
        preflight.check_source(f"fifo://{short_dir}/no/such/dir/p.mjpg")
