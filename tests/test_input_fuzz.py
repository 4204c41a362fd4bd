"""Hostile input on every input path but the ZeroMQ frames (tests/test_fuzz.py): OBS over
ZeroMQ and over Unix datagrams, visualbase proxy FIFOs, damaged recordings.

For each, a seeded flood of garbage interleaved with valid messages: every valid
message is delivered, every malformed one is counted (the counts add up), the
records stay at about one per kind per second, and what waits in memory is bounded.
Seeded, so a failure replays."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np
import pytest
import zmq

import connectors.obs_source as obs_source
from connectors.fifo_source import FifoFrameSource
from connectors.obs_source import ObsSource
from connectors.replay_source import ReplaySource
from facemoment.core.config import SourceConfig
from facemoment.core.records import Record
from facemoment.core.types import FramePresence, Frame, Observation
from facemoment.formats.obs import format_obs
from facemoment.formats.recording import RecordingWriter
from facemoment.formats.recording.codec import DAMAGE_KINDS

from conftest import run_source
from test_fifo_source import Writer
from test_obs import FACE, SpecPublisher
from vb_ingest import proxy_frame_bytes

MESSAGES = 400  # valid observations
OBS_KINDS = ("binary", "not_obs", "bad_field", "no_src", "cut_short", "extra_part")


def _records(items: List[Any]) -> List[Dict[str, Any]]:
    return [x.to_dict() for x in items if isinstance(x, Record)]


def _assert_bounded(records: List[Dict[str, Any]], kinds: int) -> List[Dict[str, Any]]:
    """About one malformed_message record per kind per second of the run."""
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    malformed = [r for r in records if r["record_type"] == "malformed_message"]
    assert len(malformed) <= kinds * (summary["duration_s"] + 2)
    return malformed


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ OBS


def _valid_obs(i: int) -> str:
    if i % 2 == 0:
        return format_obs(FramePresence("", i // 2, i * 50), extended=True, publisher="a")
    return format_obs(Observation("face", "", i // 2, i * 50, faces=[FACE]), extended=True, publisher="a")


def _hostile_obs(rng: random.Random, kind: str) -> List[bytes]:
    """One garbled OBS message as ZeroMQ parts (a datagram carries the last part)."""
    valid = format_obs(Observation("face", "", 7, 700, faces=[FACE]), extended=True, publisher="a")
    if kind == "binary":
        return [b"msg", bytes([0xFF, 0xFE]) + rng.randbytes(rng.randint(0, 300))]
    if kind == "not_obs":
        return [b"msg", "".join(rng.choice("abc =xyz\t") for _ in range(rng.randint(0, 200))).encode()]
    if kind == "bad_field":
        return [b"msg", valid.replace("frame=7", f"frame={rng.choice(['x', '', '1e9', '0x1'])}").encode()]
    if kind == "no_src":
        return [b"msg", valid.replace("src=face", "").encode()]
    if kind == "cut_short":
        return [b"msg", valid[: rng.randint(0, 8)].encode()]
    return [b"msg", valid.encode(), b"more"]  # extra_part: not one text


def _obs_script(seed: int, kinds: Tuple[str, ...] = OBS_KINDS) -> Tuple[List[List[bytes]], Counter]:
    rng = random.Random(seed)
    messages: List[List[bytes]] = []
    sent: Counter = Counter()
    for i in range(MESSAGES):
        messages.append([b"msg", _valid_obs(i).encode()])
        while rng.random() < 0.8:
            kind = rng.choice(kinds)
            messages.append(_hostile_obs(rng, kind))
            sent[kind] += 1
    return messages, sent


def _check_obs(items: List[Any], hostile: int) -> None:
    observations = [x for x in items if isinstance(x, (Observation, FramePresence))]
    assert sorted((o.source, o.frame_id) for o in observations) == sorted(
        ("frame" if i % 2 == 0 else "face", i // 2) for i in range(MESSAGES)
    )
    records = _records(items)
    malformed = _assert_bounded(records, 1)
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    assert summary["malformed_obs"] == hostile
    assert sum(r["messages"] for r in malformed) == hostile
    assert malformed[-1]["count"] == hostile and all(r["kind"] == "obs" for r in malformed)
    assert summary.get("dropped_obs", 0) == 0 and summary["records_dropped"] == 0


@pytest.mark.parametrize("seed", [5, 17])
def test_a_flood_of_garbage_on_a_zmq_obs_input_is_counted_in_a_few_records(seed: int, short_dir: Path) -> None:
    messages, sent = _obs_script(seed)
    assert set(sent) == set(OBS_KINDS)
    ctx = zmq.Context()
    address = f"ipc://{short_dir}/obs"
    pub = SpecPublisher(ctx, address)
    pub.sock.setsockopt(zmq.XPUB_NODROP, 1)  # a send waits for room: nothing lost on the way

    def send() -> None:
        assert pub.subscribers.wait_for(1, timeout=30)
        for parts in messages:
            pub.sock.send_multipart(parts)

    try:
        items = run_source(ObsSource("cam0", [address], idle_timeout_s=1.0, connect_timeout_s=30), send)
    finally:
        pub.close()
        ctx.term()
    _check_obs(items, sum(sent.values()))


@pytest.mark.parametrize("seed", [5, 17])
def test_a_flood_of_garbage_on_a_unix_obs_input_is_counted_in_a_few_records(seed: int, short_dir: Path) -> None:
    kinds = tuple(k for k in OBS_KINDS if k != "extra_part")  # a datagram is one text
    messages, sent = _obs_script(seed, kinds)
    assert set(sent) == set(kinds)
    path = short_dir / "obs.sock"

    def send() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for _ in range(3000):  # the source binds the path as its partition starts
                try:
                    sock.connect(str(path))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    threading.Event().wait(0.01)
            for parts in messages:
                sock.send(parts[1])  # a blocking send waits for room: nothing lost
        finally:
            sock.close()

    items = run_source(ObsSource("cam0", [f"unix://{path}"], idle_timeout_s=1.0, connect_timeout_s=30), send)
    _check_obs(items, sum(sent.values()))


def _datagram_sender(path: Path, texts: List[str]) -> Callable[[], None]:
    """Sends `texts` as datagrams to `path` once the source has bound it (polled, bounded)."""

    def send() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for _ in range(3000):
                try:
                    sock.connect(str(path))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    threading.Event().wait(0.01)
            for text in texts:
                sock.send(text.encode())
        finally:
            sock.close()

    return send


def test_the_obs_hold_is_bounded_and_what_it_sheds_is_counted(short_dir: Path, monkeypatch) -> None:
    """A publisher that never speaks holds everything back; the hold sheds its oldest, counted."""
    monkeypatch.setattr(obs_source, "MAX_HELD", 50)
    path = short_dir / "obs.sock"
    texts = [_valid_obs(i) for i in range(MESSAGES)]

    send = _datagram_sender(path, texts)

    # Two publishers expected, one speaks, and it is waited for a long time: all is held.
    source = ObsSource("cam0", [f"unix://{path}"], idle_timeout_s=1.0, connect_timeout_s=30, hold_s=3600, publishers=2)
    items = run_source(source, send)
    observations = [x for x in items if isinstance(x, (Observation, FramePresence))]
    records = _records(items)
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    drops = [r for r in records if r["record_type"] == "obs_drop"]
    assert len(observations) == 50
    assert summary["dropped_obs"] == sum(r["dropped_obs"] for r in drops) == MESSAGES - 50
    assert all(r["held"] <= 50 for r in drops)
    # the oldest went: the newest 50 in event time are delivered
    assert sorted(o.t_ns for o in observations) == [i * 50 for i in range(MESSAGES - 50, MESSAGES)]


def test_obs_naming_ever_new_publishers_is_counted_not_kept(short_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(obs_source, "MAX_PUBLISHERS", 4)
    path = short_dir / "obs.sock"
    texts = [format_obs(FramePresence("", i, i * 50), extended=True, publisher=f"p{i}") for i in range(40)]

    send = _datagram_sender(path, texts)

    items = run_source(ObsSource("cam0", [f"unix://{path}"], idle_timeout_s=1.0, connect_timeout_s=30, hold_s=0.1), send)
    records = _records(items)
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    assert sorted(o.frame_id for o in items if isinstance(o, FramePresence)) == [0, 1, 2, 3]
    assert summary["publishers"] == ["p0", "p1", "p2", "p3"] and summary["malformed_obs"] == 36
    assert sum(r["messages"] for r in records if r["record_type"] == "malformed_message" and r["kind"] == "publishers") == 36


# ------------------------------------------------------------------ proxy FIFO

W, H = 32, 24
FIFO_KINDS = ("too_large", "not_jpeg", "broken_jpeg", "junk")
SOI = b"\xff\xd8\xff"


def _image(frame_id: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (frame_id * 7) % 256
    return img


def _hostile_chunk(rng: random.Random, kind: str, max_bytes: int) -> bytes:
    """Garbage that ends where it starts: the next valid frame is found again after it."""
    if kind == "too_large":
        return struct.pack("<IQQ", max_bytes + rng.randint(1, 1 << 20), rng.getrandbits(32), 0) + rng.randbytes(rng.randint(0, 40))
    if kind == "not_jpeg":
        n = rng.randint(4, 60)
        return struct.pack("<IQQ", n, rng.getrandbits(32), 0) + b"AB" + rng.randbytes(n - 2)
    if kind == "broken_jpeg":
        n = rng.randint(20, 200)
        return struct.pack("<IQQ", n, 5, 5_000_000) + SOI + bytes(n - len(SOI))
    while True:  # junk: random bytes with no JPEG start in them
        junk = rng.randbytes(rng.randint(1, 300))
        if SOI[:2] not in junk:
            return junk


@pytest.mark.parametrize("seed", [3, 11])
def test_a_flood_of_garbage_on_a_proxy_fifo_is_counted_in_a_few_records(seed: int, short_dir: Path) -> None:
    rng = random.Random(seed)
    max_bytes = 1 << 16
    path = short_dir / "proxy.mjpg"
    frames = 200
    chunks: List[bytes] = []
    sent: Counter = Counter()
    runs = 0  # stretches of garbage between two frames
    for i in range(frames):
        chunks.append(proxy_frame_bytes(i, i * 33_333_333, _image(i), W, H))
        before = sum(sent.values())
        while rng.random() < 0.8:
            kind = rng.choice(FIFO_KINDS)
            chunks.append(_hostile_chunk(rng, kind, max_bytes))
            sent[kind] += 1
        runs += sum(sent.values()) > before
    assert set(sent) == set(FIFO_KINDS)
    stream = b"".join(chunks)
    pieces = []
    at = 0
    while at < len(stream):  # a pipe hands bytes out in pieces of any size
        n = rng.randint(1, 5000)
        pieces.append(stream[at : at + n])
        at += n

    writer = Writer(path, pieces)
    writer.start()
    settings = SourceConfig(idle_timeout_s=1.0, buffer_frames=0, max_frame_mb=max_bytes / (1024 * 1024))
    got = run_source(FifoFrameSource(f"fifo://{path}", "cam0", settings))
    writer.join(30)
    assert writer.error is None
    out = [x for x in got if isinstance(x, Frame)]
    assert [f.frame_id for f in out] == list(range(frames))
    records = _records(got)
    malformed = _assert_bounded(records, 3)
    (summary,) = [r for r in records if r["record_type"] == "source_summary"]
    # A pipe is a byte stream: garbage chunks in a row may read as one error, never as none.
    assert runs <= sum(summary["malformed"].values()) <= sum(sent.values())
    assert summary["malformed"]["jpeg"] == sent["broken_jpeg"]  # each has a header and a JPEG start: found again
    assert {k: sum(r["messages"] for r in malformed if r["kind"] == k) for k in summary["malformed"]} == summary["malformed"]
    assert summary["records_dropped"] == 0 and summary["lost_on_wire"] == 0


# ------------------------------------------------------------------ recordings

REC_IDS = list(range(40))


def _damage(rng: random.Random, data: bytes) -> Tuple[bytes, int, str]:
    """The recording with one seeded piece of damage, the first byte that differs, and its kind."""
    at = rng.randrange(len(data))
    kind = rng.choice(("flip", "cut", "insert", "zero"))
    if kind == "flip":
        damaged = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    elif kind == "cut":
        damaged = data[:at]
    elif kind == "insert":
        damaged = data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    else:
        n = rng.randint(1, 64)
        damaged = data[:at] + bytes(min(n, len(data) - at)) + data[at + n :]
    if damaged == data:
        return damaged, len(data), "none"
    common = min(len(damaged), len(data))
    first = next((i for i in range(common) if damaged[i] != data[i]), common)
    return damaged, first, kind


def _survives(damaged: bytes, data: bytes, start: int, end: int) -> bool:
    """Whether the record at data[start:end] is in ``damaged`` byte for byte, in place or
    moved by inserted bytes."""
    shift = len(damaged) - len(data)
    return damaged[start:end] == data[start:end] or (shift > 0 and damaged[start + shift : end + shift] == data[start:end])


@pytest.mark.parametrize("seed", range(3))
def test_damaged_recordings_emit_every_intact_record_and_count_the_damage(seed: int, tmp_path: Path) -> None:
    original = tmp_path / "cam.fmrec"
    with RecordingWriter(original, {"stream": "test"}) as writer:
        offsets = [writer.append_image(i, 1_000 + i * 33_333_333, _image(i), "raw") for i in REC_IDS]
    data = original.read_bytes()
    ends = offsets[1:] + [len(data)]
    rng = random.Random(seed)
    for trial in range(12):
        damaged, at, kind = _damage(rng, data)
        path = tmp_path / f"bad{trial}.fmrec"
        path.write_bytes(damaged)
        items = run_source(ReplaySource(path, "cam0"))
        frames = [x for x in items if isinstance(x, Frame)]
        records = _records(items)
        if kind != "none" and at < offsets[0]:  # the file header: nothing can be trusted
            assert frames == [] and [r["record_type"] for r in records] == ["source_error"], (trial, kind, at)
            assert records[0]["offset"] <= at
            continue
        intact = [i for i, start, end in zip(REC_IDS, offsets, ends) if _survives(damaged, data, start, end)]
        # every record whose bytes survived, in order, whatever came before it
        assert [f.frame_id for f in frames] == intact, (trial, kind, at)
        assert all(np.array_equal(f.image, _image(f.frame_id)) for f in frames)
        (summary,) = [r for r in records if r["record_type"] == "source_summary"]
        malformed = [r for r in records if r["record_type"] == "malformed_message"]
        assert summary["frames_emitted"] == len(frames)
        clean_end = kind == "cut" and (at in offsets or at == len(data))
        if kind == "none" or clean_end:
            assert malformed == [] and summary["malformed"] == {}
            continue
        # the damage is counted by kind, and each count is in the trace
        assert sum(summary["malformed"].values()) >= 1, (trial, kind, at)
        assert set(summary["malformed"]) <= set(DAMAGE_KINDS)
        assert {k: sum(r["messages"] for r in malformed if r["kind"] == k) for k in summary["malformed"]} == summary["malformed"]
