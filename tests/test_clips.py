"""Clips: stream-copy cuts from files, ring-buffer clips for live streams, the manifest."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path

import bytewax.operators as op
import cv2
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.clips import ClipSink, ClipState
from facemoment.formats.clip_files import CLIPS_DIR, MANIFEST_NAME, ClipSource, clip_file_name, clip_source
from facemoment.formats.frame_ring import EncodedFrame, FrameRing, encode_frame
from facemoment.formats import media, sample
from facemoment.core.types import Frame, Trigger

NS = 1_000_000_000
FRAME_NS = NS / 30
NAME_RE = re.compile(r"^\d{8}_\d{6}_highlight_0\.85_t(\d+)(_\d+)?\.mp4$")


def make_trigger(event_s: float, stream: str = "cam0", reason: str = "expression_spike") -> Trigger:
    event_ns = int(round(event_s * NS))
    return Trigger(
        stream_id=stream,
        frame_id=int(event_s * 30),
        t_ns=event_ns,
        event_t_ns=event_ns,
        reason=reason,
        score=0.85,
        pre_sec=2.0,
        post_sec=2.0,
        face_count=1,
    )


def frame_image(i: int, size=(160, 120)) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    x = (i * 3) % w
    img[:, x:x + 8] = (40, 200, 240)  # a moving bar, so frames differ
    cv2.putText(img, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return img


def encoded(i: int, stream: str = "cam0", size=(160, 120)) -> EncodedFrame:
    t_ns = int(round(i * FRAME_NS))
    return encode_frame(Frame(stream, i, t_ns, frame_image(i, size)), quality=80)


def manifest(out: Path) -> list[dict]:
    path = out / CLIPS_DIR / MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def mp4s(out: Path) -> list[str]:
    return sorted(p.name for p in (out / CLIPS_DIR).glob("*.mp4"))


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    return sample.write_sample_video(tmp_path_factory.mktemp("src") / "sample.mp4")


def live_part(out: Path, **kw):
    return ClipSink(out, {"cam0": {"live": True}}, **kw).build_part("clips", "cam0", None)


# ------------------------------------------------------------------ frames and sources


def test_encode_frame_round_trips_colour_and_grey():
    img = frame_image(7)
    e = encode_frame(Frame("cam0", 7, 233, img), quality=95)
    assert (e.stream_id, e.frame_id, e.t_ns, e.width, e.height) == ("cam0", 7, 233, 160, 120)
    back = cv2.imdecode(np.frombuffer(e.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 4
    grey = encode_frame(Frame("cam0", 8, 0, img[:, :, 1].copy()))
    assert cv2.imdecode(np.frombuffer(grey.jpeg, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2


def test_clip_source_descriptors():
    assert clip_source({"path": "/v.mp4"}) == ClipSource("/v.mp4")
    assert clip_source({"live": True}).is_file is False
    assert clip_source(None).is_file is False
    assert clip_source(Path("/v.mp4")).path == "/v.mp4"
    assert clip_source("tcp://127.0.0.1:5555").is_file is False
    with pytest.raises(TypeError, match="descriptor"):
        clip_source(42)


def test_media_errors_are_clear(tmp_path):
    with pytest.raises(media.MediaError, match="does not exist"):
        media.probe_duration(tmp_path / "none.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    with pytest.raises(media.MediaError, match="cannot decode .*junk.mp4"):
        media.probe_duration(junk)
    with pytest.raises(media.MediaError, match="no frames"):
        media.encode_jpeg_sequence([], tmp_path / "x.mp4", 30)


def test_encoded_jpeg_sequence_has_one_frame_per_image(tmp_path):
    jpegs = [encoded(i, size=(161, 121)).jpeg for i in range(45)]  # odd sizes get evened
    media.encode_jpeg_sequence(jpegs, tmp_path / "x.mp4", 30)
    assert media.probe_frame_count(tmp_path / "x.mp4") == 45
    assert media.probe_duration(tmp_path / "x.mp4") == pytest.approx(1.5)


# ------------------------------------------------------------------ ring buffer


def test_ring_buffer_drops_frames_older_than_its_window():
    ring = FrameRing(max_age_ns=2 * NS, max_bytes=10**9)
    for i in range(300):  # 10 s
        ring.add(encoded(i))
        assert ring.newest_t_ns - ring.oldest_t_ns <= 2 * NS
    assert ring.newest_t_ns == int(round(299 * FRAME_NS))
    assert len(ring) == 61  # 2 s at 30 fps, both ends included
    assert ring.evicted_count == 300 - 61


def test_ring_buffer_keeps_total_bytes_under_its_cap_dropping_oldest():
    frames = [encoded(i) for i in range(60)]
    cap = sum(f.nbytes for f in frames[:20])
    ring = FrameRing(max_age_ns=120 * NS, max_bytes=cap)
    for f in frames:
        ring.add(f)
        assert ring.total_bytes <= cap
        assert ring.total_bytes == sum(x.nbytes for x in ring.frames())
    kept = ring.frames()
    assert kept[-1].frame_id == 59
    assert [f.frame_id for f in kept] == list(range(60 - len(kept), 60))
    assert 15 <= len(kept) <= 25


def test_ring_buffer_orders_late_frames_and_ignores_replays():
    ring = FrameRing(max_age_ns=120 * NS, max_bytes=10**9)
    for i in (0, 1, 3, 4, 2, 4, 1):
        ring.add(encoded(i))
    assert [f.frame_id for f in ring.frames()] == [0, 1, 2, 3, 4]


def test_clip_frames_fill_every_slot_despite_missing_frames():
    ring = FrameRing(max_age_ns=120 * NS, max_bytes=10**9)
    missing = set(range(70, 80)) | set(range(0, 240, 7))
    for i in range(240):
        if i not in missing:
            ring.add(encoded(i))
    picked = ring.clip_frames(2 * NS, 6 * NS, 30.0)
    assert len(picked) == 120
    for k, f in enumerate(picked):
        slot = 60 + k
        expected = max(i for i in range(slot + 1) if i not in missing)
        assert f.frame_id == expected
    assert ring.clip_frames(20 * NS, 24 * NS, 30.0) == []


# ------------------------------------------------------------------ file sources


def test_file_clip_is_cut_and_its_measured_duration_reported(tmp_path, sample_file):
    out = tmp_path / "out"
    part = ClipSink(out, {"cam0": {"path": str(sample_file)}}).build_part("clips", "cam0", None)
    on_keyframe = make_trigger(5.0)  # 3.0 s .. 7.0 s, 3.0 s is a keyframe
    off_keyframe = make_trigger(5.1, reason="head_turn")  # starts between keyframes
    part.write_batch([on_keyframe, off_keyframe])
    part.close()
    entries = manifest(out)
    assert [e["status"] for e in entries] == ["ok", "ok"], entries
    for entry, trig in zip(entries, (on_keyframe, off_keyframe), strict=True):
        assert entry["key"] == trig.key
        match = NAME_RE.match(entry["file"])
        assert match and int(match.group(1)) == int(trig.t_start_ns / NS)
        clip = out / CLIPS_DIR / entry["file"]
        measured = media.probe_duration(clip)
        assert entry["duration_s"] == pytest.approx(measured, abs=1e-3)
        assert entry["requested_s"] == pytest.approx(4.0)
        # Stream copy starts at the keyframe at or before the start (every 0.5 s).
        assert 4.0 - 1 / 30 <= measured <= 4.0 + 0.5 + 0.1
    assert sorted(e["file"] for e in entries) == mp4s(out)


def test_file_clip_is_not_written_twice_across_runs(tmp_path, sample_file):
    out = tmp_path / "out"
    sink = ClipSink(out, {"cam0": {"path": str(sample_file)}})
    part = sink.build_part("clips", "cam0", None)
    part.write_batch([make_trigger(5.0)])
    part.close()
    again = sink.build_part("clips", "cam0", None)  # a fresh run over the same output dir
    again.write_batch([make_trigger(5.0), make_trigger(5.0)])
    again.close()
    assert [e["status"] for e in manifest(out)] == ["ok"]
    assert len(mp4s(out)) == 1


def test_missing_source_file_is_recorded_as_failed(tmp_path):
    out = tmp_path / "out"
    part = ClipSink(out, {"cam0": {"path": str(tmp_path / "gone.mp4")}}).build_part("clips", "cam0", None)
    part.write_batch([make_trigger(5.0)])
    results = part.drain()
    # A failure does not count as done: the partition would retry it after a resume.
    assert part.snapshot() == ClipState(pending=[], done=[])
    part.close()
    (entry,) = manifest(out)
    assert entry["status"] == "failed" and "gone.mp4" in entry["error"]
    assert results[0].status == "failed"
    assert mp4s(out) == []


# ------------------------------------------------------------------ live sources


def test_ring_buffer_clip_has_the_full_span_despite_lost_frames(tmp_path):
    out = tmp_path / "out"
    part = live_part(out)
    missing = set(range(70, 80)) | set(range(0, 300, 7))
    feed = [encoded(i) for i in range(300) if i not in missing]  # 10 s with holes
    trigger = make_trigger(4.0)  # clip 2.0 .. 6.0 s
    before = [f for f in feed if f.t_ns < 5 * NS]
    after = [f for f in feed if f.t_ns >= 5 * NS]
    part.write_batch(before + [trigger])
    state = part.snapshot()
    assert [t.key for t in state.pending] == [trigger.key]  # waiting for frames past 6 s
    assert part.drain() == []
    part.write_batch(after)
    (result,) = part.drain()
    assert part.snapshot() == ClipState(pending=[], done=[trigger.key])
    part.close()
    assert result.status == "ok", result.error
    (entry,) = manifest(out)
    clip = out / CLIPS_DIR / entry["file"]
    duration = media.probe_duration(clip)
    assert abs(duration - 4.0) <= 0.2
    assert entry["duration_s"] == pytest.approx(duration, abs=1e-3)
    assert media.probe_frame_count(clip) == 120
    # visualbase's ring-buffer name: no _t{start} suffix.
    assert re.match(r"^\d{8}_\d{6}_highlight_0\.85(_\d+)?\.mp4$", entry["file"]), entry["file"]


def test_clip_names_follow_visualbase_for_files_rings_and_a_zero_score():
    now = datetime(2026, 1, 2, 3, 4, 5)
    scored = make_trigger(4.0)
    unscored = dataclasses.replace(scored, score=0.0)
    assert clip_file_name(scored, now) == "20260102_030405_highlight_0.85_t2.mp4"
    assert clip_file_name(scored, now, ring=True) == "20260102_030405_highlight_0.85.mp4"
    # visualbase leaves the score out when it is not above 0.
    assert clip_file_name(unscored, now) == "20260102_030405_highlight_t2.mp4"
    assert clip_file_name(unscored, now, ring=True) == "20260102_030405_highlight.mp4"


def test_trigger_with_nothing_buffered_is_recorded_as_failed(tmp_path):
    out = tmp_path / "out"
    part = live_part(out)
    part.write_batch([make_trigger(4.0)])
    part.close()  # must not raise
    (entry,) = manifest(out)
    assert entry["status"] == "failed"
    assert "no frames buffered" in entry["error"]
    assert mp4s(out) == []


def test_trigger_whose_frames_left_the_buffer_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    part = live_part(out, ring_buffer_sec=1.0)
    part.write_batch([encoded(i) for i in range(300)])  # only the last second is kept
    part.write_batch([make_trigger(3.0)])  # 1..5 s: long gone, and already complete
    results = part.drain()
    part.close()
    assert [r.status for r in results] == ["failed"]
    assert manifest(out)[0]["status"] == "failed"


def test_pending_triggers_are_written_on_close_with_what_is_buffered(tmp_path):
    out = tmp_path / "out"
    part = live_part(out)
    part.write_batch([encoded(i) for i in range(151)] + [make_trigger(4.0)])  # frames up to 5.0 s
    assert part.drain() == []
    part.close()
    (entry,) = manifest(out)
    assert entry["status"] == "ok", entry
    # 2.0 s .. the newest frame at 5.0 s.
    assert abs(entry["duration_s"] - 3.0) <= 0.1


def test_pending_trigger_survives_a_resume(tmp_path):
    out = tmp_path / "out"
    sink = ClipSink(out, {"cam0": {"live": True}})
    part = sink.build_part("clips", "cam0", None)
    trigger = make_trigger(4.0)
    part.write_batch([encoded(i) for i in range(60)] + [trigger])
    state = part.snapshot()
    assert isinstance(state, ClipState) and [t.key for t in state.pending] == [trigger.key]
    # Crash: no close. The resumed partition gets the frames again from the source.
    resumed = sink.build_part("clips", "cam0", state)
    resumed.write_batch([encoded(i) for i in range(60, 200)])
    (result,) = resumed.drain()
    assert result.status == "ok"
    assert resumed.snapshot() == ClipState(pending=[], done=[trigger.key])
    resumed.close()
    assert [e["key"] for e in manifest(out)] == [trigger.key]


def test_trigger_for_an_unconfigured_stream_is_recorded_as_failed(tmp_path):
    out = tmp_path / "out"
    part = live_part(out)
    part.write_batch([make_trigger(4.0, stream="cam9")])
    part.close()
    (entry,) = manifest(out)
    assert entry["status"] == "failed" and "cam9" in entry["error"]


# ------------------------------------------------------------------ in a dataflow


def test_clip_sink_in_a_dataflow_routes_each_stream_to_its_partition(tmp_path, sample_file):
    out = tmp_path / "out"
    live_frames = [("live", encoded(i, stream="live")) for i in range(200)]
    items = live_frames[:100] + [
        ("live", make_trigger(4.0, stream="live")),
        ("file", make_trigger(5.0, stream="file")),
    ] + live_frames[100:]
    flow = Dataflow("clips_test")
    stream = op.input("in", flow, TestingSource(items, batch_size=16))
    op.output("clips", stream, ClipSink(out, {"file": {"path": str(sample_file)}, "live": {"live": True}}))
    run_main(flow)
    entries = {e["stream"]: e for e in manifest(out)}
    assert set(entries) == {"file", "live"}
    assert all(e["status"] == "ok" for e in entries.values()), entries
    assert abs(entries["live"]["duration_s"] - 4.0) <= 0.2
    assert len(mp4s(out)) == 2


def test_clip_encoding_runs_only_on_cpu_time_nothing_else_wants():
    """Background ffmpeg runs at SCHED_IDLE, so cutting a clip cannot delay a live stream's extraction."""
    import os
    import subprocess
    import sys

    from facemoment.formats import media

    code = "import os; print(os.sched_getscheduler(0))"
    child = subprocess.run([sys.executable, "-c", code], preexec_fn=media._lower_priority,
                           capture_output=True, text=True, check=True)
    assert int(child.stdout) == os.SCHED_IDLE
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(plain.stdout) != os.SCHED_IDLE


def test_background_encodes_get_normal_priority_once_the_input_ended(tmp_path):
    """Other load on the machine must not hold the end of a run: once the clip sink's
    input ended, a running encode and later ones leave idle priority."""
    import os
    import threading

    from facemoment.formats import media

    from conftest import wait_until

    if os.geteuid() != 0:
        pytest.skip("raising a child's priority out of SCHED_IDLE needs the privilege to")
    encoding = media.Background()
    seen = {}

    def started(pid: int) -> None:
        seen["policy"] = os.sched_getscheduler(pid)
        media.Background.started(encoding, pid)

    encoding.started = started
    failure = []
    # An encode that runs until it is killed: ffmpeg's own test source, never ending.
    runner = threading.Thread(target=lambda: failure.append(_run_or_error(media, encoding, tmp_path)))
    runner.start()
    try:
        assert wait_until(lambda: encoding._pids, 30)
        (pid,) = encoding._pids
        assert seen["policy"] == os.SCHED_IDLE
        encoding.lift()
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    finally:
        for pid in list(encoding._pids):
            os.kill(pid, 9)
        runner.join(30)
    assert failure and "ffmpeg failed" in failure[0]
    # Started after the lift: normal priority from the start.
    code = media.Background()
    code.lift()
    after = {}
    code.started = lambda pid: after.setdefault("policy", os.sched_getscheduler(pid))
    media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-t", "0.2", "-f", "null", "-"],
                     background=code)
    assert after["policy"] == os.SCHED_OTHER


def _run_or_error(media, encoding, tmp_path) -> str:
    try:
        media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-f", "null", "-"], background=encoding)
    except media.MediaError as exc:
        return str(exc)
    return ""


def test_a_live_streams_clip_writing_thread_runs_in_the_background_until_the_input_ends(tmp_path):
    """Writing a clip also feeds the encoder and decodes the clip again for its best
    still: the writing thread, and what it starts, runs at idle priority too."""
    import os

    part = live_part(tmp_path / "out")
    try:
        policy = part._pool.submit(lambda: os.sched_getscheduler(0)).result(30)
        assert policy == os.SCHED_IDLE
        if os.geteuid() == 0:  # raising a thread out of SCHED_IDLE needs the privilege to
            part._encoding.lift()
            assert part._pool.submit(lambda: os.sched_getscheduler(0)).result(30) == os.SCHED_OTHER
    finally:
        part.close()


# ------------------------------------------------------------------ compressing off the worker's thread


def _pending(i: int, future=None):
    from concurrent.futures import Future

    from facemoment.formats.ring_encoder import PendingFrame

    e = encoded(i)
    if future is None:
        future = Future()
        future.set_result(e)
    return PendingFrame(e.stream_id, e.frame_id, e.t_ns, future), e


def test_frames_being_compressed_join_the_ring_once_done_and_in_arrival_order(tmp_path):
    from concurrent.futures import Future

    part = live_part(tmp_path / "out")
    slow = Future()
    first, first_encoded = _pending(0, slow)
    second, _ = _pending(1)
    part.write_batch([first, second])
    assert len(part.ring) == 0  # the second waits behind the first
    slow.set_result(first_encoded)
    part.write_batch([])
    assert [f.frame_id for f in part.ring.frames()] == [0, 1]
    part.close()


def test_a_frame_that_failed_to_compress_is_left_out_and_counted(tmp_path):
    from concurrent.futures import Future

    part = live_part(tmp_path / "out")
    broken = Future()
    broken.set_exception(ValueError("cannot JPEG-encode"))
    bad, _ = _pending(0, broken)
    good, _ = _pending(1)
    part.write_batch([bad, good])
    assert [f.frame_id for f in part.ring.frames()] == [1]
    assert part.frames_not_compressed == 1
    part.close()


def test_a_trigger_waits_for_the_compressions_its_clip_needs_and_no_others(tmp_path):
    import threading

    from facemoment.formats.ring_encoder import JpegEncoder

    gate = threading.Event()

    def encode(frame, quality):
        if frame.frame_id >= 180:  # 6.0 s on: held until the gate opens
            assert gate.wait(30)
        return encode_frame(frame, quality)

    encoder = JpegEncoder(threads=2, max_pending=400, encode=encode)
    part = live_part(tmp_path / "out")
    frames = [encoder.submit(Frame("cam0", i, int(round(i * FRAME_NS)), frame_image(i)), 80) for i in range(186)]

    # No trigger needs the held frames: the batch does not wait for them.
    plain = threading.Thread(target=part.write_batch, args=(frames,))
    plain.start()
    plain.join(30)
    assert not plain.is_alive()

    # A trigger ending at 6.0 s needs frame 180: its batch waits for that compression.
    trigger = make_trigger(4.0)
    waiting = threading.Thread(target=part.write_batch, args=([trigger],))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()
    assert part.drain() == []
    gate.set()
    waiting.join(30)
    assert not waiting.is_alive()
    (result,) = part.drain()  # submitted in that same batch
    assert result.status == "ok", result.error
    part.close()


def test_the_encoder_holds_at_most_its_pending_frames_and_then_waits():
    import threading

    from facemoment.formats.ring_encoder import JpegEncoder

    gate = threading.Event()

    def encode(frame, quality):
        assert gate.wait(30)
        return encode_frame(frame, quality)

    encoder = JpegEncoder(threads=1, max_pending=2, encode=encode)
    frame = lambda i: Frame("cam0", i, int(i * FRAME_NS), frame_image(i))  # noqa: E731
    held = [encoder.submit(frame(0)), encoder.submit(frame(1))]
    third = []
    blocked = threading.Thread(target=lambda: third.append(encoder.submit(frame(2))))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and not third
    gate.set()
    blocked.join(30)
    assert not blocked.is_alive()
    assert [p.result().frame_id for p in held + third] == [0, 1, 2]


def test_compression_runs_on_a_lower_priority_thread_and_gives_the_same_jpeg():
    import os
    import pickle
    import threading

    from facemoment.formats.ring_encoder import JpegEncoder

    where = {}

    def encode(frame, quality):
        tid = threading.get_native_id()
        where["tid"], where["nice"] = tid, os.getpriority(os.PRIO_PROCESS, tid)
        return encode_frame(frame, quality)

    frame = Frame("cam0", 7, 233, frame_image(7))
    pending = JpegEncoder(encode=encode).submit(frame, 80)
    result = pending.result()
    assert result == encode_frame(frame, 80)
    assert where["tid"] != threading.get_native_id()
    assert where["nice"] > os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    # Crossing to another process it travels as the compressed frame.
    assert pickle.loads(pickle.dumps(pending)) == result
