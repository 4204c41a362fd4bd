"""`facemoment ingest`, the stand-in for visualbase's ingest: its proxy FIFOs carry the
spec's bytes (read here with nothing but struct and a JPEG decoder) and its TRIG
socket takes datagrams as visualbase's does."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pytest

from facemoment.tools.cli import build_parser
from facemoment.tools.ingest import IngestSummary, ProxySpec, run_ingest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for_fifo(path: Path, done: threading.Event) -> bool:
    """Until the writer created its FIFO (or the ingest ended)."""
    while not done.is_set():
        try:
            if stat.S_ISFIFO(os.stat(path).st_mode):
                return True
        except FileNotFoundError:
            pass
        done.wait(0.02)
    return False


def read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return out
        out += chunk
    return out


def read_proxy(path: Path, limit: Optional[int] = None) -> List[Tuple[int, int, np.ndarray]]:
    fd = os.open(path, os.O_RDONLY)
    frames = []
    try:
        while limit is None or len(frames) < limit:
            header = read_exact(fd, 20)
            if len(header) < 20:
                break
            length, frame_id, t_ns = struct.unpack("<IQQ", header)
            jpeg = read_exact(fd, length)
            assert len(jpeg) == length and jpeg[:2] == b"\xff\xd8"
            frames.append((frame_id, t_ns, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)))
    finally:
        os.close(fd)
    return frames


def start(args, **kw) -> Tuple[threading.Thread, threading.Event, List[IngestSummary]]:
    done = threading.Event()
    result: List[IngestSummary] = []
    stop = threading.Event()

    def log_line(line: str) -> None:
        if "received TRIG" in line:
            stop.set()  # what the test waited for: the ingest need not linger longer

    def run() -> None:
        try:
            result.append(run_ingest(*args, log_line=log_line, stop_event=stop, **kw))
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, result


def test_proxies_carry_the_spec_bytes_and_trig_is_received(short_dir: Path) -> None:
    face = ProxySpec.parse(f"face:{short_dir}/vid_face.mjpg:320:240:10")
    full = ProxySpec.parse(f"full:{short_dir}/vid_full.mjpg:640:480:30")
    trig_path = short_dir / "trig.sock"
    thread, done, result = start(("sample", [face, full], str(trig_path)), max_frames=30, linger_s=60)
    assert wait_for_fifo(Path(face.path), done) and wait_for_fifo(Path(full.path), done)
    readers: List[List] = [[], []]
    workers = [threading.Thread(target=lambda i=i, s=s: readers[i].extend(read_proxy(Path(s.path))))
               for i, s in enumerate((face, full))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    face_frames, full_frames = readers
    assert [f[0] for f in full_frames] == list(range(30))  # every source frame, ids and times kept
    assert [f[0] for f in face_frames] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]  # 10 of 30 fps
    assert [f[1] for f in face_frames] == [full_frames[i][1] for i in range(0, 30, 3)]
    assert face_frames[0][2].shape == (240, 320, 3) and full_frames[0][2].shape == (480, 640, 3)
    assert not Path(face.path).exists()  # the FIFO goes with its writer

    text = "TRIG label=highlight t_start_ns=0 t_end_ns=1000000000 faces=1 score=0.800 reason=camera_gaze"
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.sendto(text.encode(), str(trig_path))
    sender.close()
    thread.join(90)  # the ingest lingers for TRIG after its source, and stops on this one
    (summary,) = result
    assert summary.trig_received == 1 and summary.written == [("face", 10, None), ("full", 30, None)]
    assert "1 TRIG received" in summary.line()


def test_a_reader_that_leaves_ends_its_proxy_and_not_the_ingest(short_dir: Path) -> None:
    leaver = ProxySpec.parse(f"a:{short_dir}/a.mjpg:64:48:30")
    stayer = ProxySpec.parse(f"b:{short_dir}/b.mjpg:64:48:30")
    thread, done, result = start(("sample", [leaver, stayer], None), max_frames=40)
    assert wait_for_fifo(Path(leaver.path), done) and wait_for_fifo(Path(stayer.path), done)
    kept: List = []
    reader_b = threading.Thread(target=lambda: kept.extend(read_proxy(Path(stayer.path))))
    reader_b.start()
    assert len(read_proxy(Path(leaver.path), limit=2)) == 2  # then closes the FIFO
    reader_b.join(60)
    thread.join(60)
    (summary,) = result
    assert [f[0] for f in kept] == list(range(40))
    (name, written, error), b = summary.written
    assert name == "a" and error == "FIFO reader disconnected" and written < 40 and b == ("b", 40, None)


def test_the_command_line_takes_visualbase_ingest_spelling() -> None:
    args = build_parser().parse_args(
        ["ingest", "0", "--proxy", "face:/tmp/vid_face.mjpg:640:480:10", "--proxy", "pose:/tmp/vid_pose.mjpg:640:480:10",
         "--trig-socket", "/tmp/trig.sock"]
    )
    assert args.source == "0" and len(args.proxy) == 2 and args.trig_socket == "/tmp/trig.sock"
    with pytest.raises(ValueError, match="NAME:PATH:W:H:FPS"):
        ProxySpec.parse("face:/tmp/x.mjpg:640:480")
    with pytest.raises(ValueError, match="absolute path"):
        ProxySpec.parse("face:x.mjpg:640:480:10")


def test_help_shows_the_daemon_and_the_stock_ingest_recipes() -> None:
    text = build_parser().format_help()
    assert "facemoment daemon video.mp4 --pub tcp://*:5555" in text
    assert "visualbase ingest 0 --proxy face:/tmp/vid_face.mjpg:640:480:10" in text
    assert "facemoment extract fifo:///tmp/vid_face.mjpg --obs-address unix:///tmp/obs.sock" in text
    assert "FACEMOMENT_OBS_INPUTS=unix:///tmp/obs.sock FACEMOMENT__SOURCE__OBS_PUBLISHERS=2" in text
