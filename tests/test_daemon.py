"""The frame daemon: byte layout on the wire, subscriber waiting, pacing, CLI."""

from __future__ import annotations

import argparse
import struct
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import cv2
import numpy as np
import pytest
import zmq

from facemoment.tools.daemon import FramePublisher, Pacer, add_daemon_args, daemon_main, run_daemon

from conftest import decode_all

FPS = 50.0
N_FRAMES = 12
SIZE = (32, 24)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("daemon") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(N_FRAMES):
        image = np.full((SIZE[1], SIZE[0], 3), i * 20, np.uint8)
        cv2.circle(image, (4 + 2 * i, 12), 3, (0, 0, 255), -1)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def reference(video: Path) -> List[np.ndarray]:
    frames = decode_all(video)
    assert len(frames) == N_FRAMES
    return frames


@pytest.fixture()
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def raw_subscriber(context: zmq.Context, endpoint: str) -> zmq.Socket:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)  # the test's own socket keeps everything
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.connect(endpoint)
    return sub


class DaemonThread:
    """run_daemon on a thread; the bound endpoint is reported through on_bound."""

    def __init__(self, **kwargs: Any) -> None:
        self.bound = threading.Event()
        self.endpoint = ""
        self.summary: Any = None
        self.error: Optional[BaseException] = None
        self.lines: List[str] = []
        self._kwargs = kwargs
        self.thread = threading.Thread(target=self._run)

    def _on_bound(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.bound.set()

    def _run(self) -> None:
        try:
            self.summary = run_daemon(log=self.lines.append, on_bound=self._on_bound, **self._kwargs)
        except BaseException as exc:
            self.error = exc
            self.bound.set()

    def start(self) -> "DaemonThread":
        self.thread.start()
        assert self.bound.wait(10)
        assert self.error is None, self.error
        return self

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def receive(sub: zmq.Socket, count: int, timeout: float = 10.0) -> List[List[bytes]]:
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        if sub.poll(50):
            messages.append(sub.recv_multipart())
    return messages


def test_daemon_messages_follow_the_documented_layout(
    video: Path, reference: List[np.ndarray], context: zmq.Context
) -> None:
    daemon = DaemonThread(source=str(video), address="tcp://127.0.0.1:*", wait_subscribers=1, wait_timeout_s=10)
    daemon.start()
    sub = raw_subscriber(context, daemon.endpoint)
    messages = receive(sub, N_FRAMES)
    daemon.join()
    assert len(messages) == N_FRAMES
    for index, parts in enumerate(messages):
        assert len(parts) == 3
        assert parts[0] == b"frame"
        assert len(parts[1]) == 25
        frame_id, t_ns, width, height, channels = struct.unpack("!QQIIB", parts[1])
        assert frame_id == index
        assert t_ns == round(index * 1e9 / FPS)
        assert (width, height, channels) == (SIZE[0], SIZE[1], 3)
        assert parts[2] == reference[index].tobytes()
    assert daemon.summary.frames_sent == N_FRAMES and daemon.summary.frames_dropped == 0
    assert f"sent {N_FRAMES} frames" in daemon.lines[-1]


def test_daemon_loops_and_stops_after_max_frames(video: Path, context: zmq.Context) -> None:
    total = N_FRAMES + 5
    daemon = DaemonThread(
        source=str(video), address="tcp://127.0.0.1:*", loop=True, max_frames=total, wait_subscribers=1,
        wait_timeout_s=10,
    )
    daemon.start()
    sub = raw_subscriber(context, daemon.endpoint)
    messages = receive(sub, total)
    daemon.join()
    headers = [struct.unpack("!QQIIB", parts[1]) for parts in messages]
    assert [h[0] for h in headers] == list(range(total))
    times = [h[1] for h in headers]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert messages[N_FRAMES][2] == messages[0][2]  # the file started over
    assert daemon.summary.frames_sent == total
    assert sub.poll(0) == 0  # nothing after max_frames


def test_wait_for_subscribers_counts_real_subscriptions(context: zmq.Context) -> None:
    with FramePublisher("tcp://127.0.0.1:*", wait_subscribers=2) as publisher:
        assert publisher.wait_for_subscribers(timeout=0.05) is False
        first = raw_subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscribers(timeout=0.2) is False  # one of two
        second = raw_subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscribers(timeout=10) is True
        assert publisher.subscribers == 2
        # Both receive the very first frame: nothing lost to the slow joiner.
        image = np.arange(12, dtype=np.uint8).reshape(3, 4)
        assert publisher.publish(0, 5, image)
        for sub in (first, second):
            (parts,) = receive(sub, 1)
            assert struct.unpack("!QQIIB", parts[1]) == (0, 5, 4, 3, 1)
            assert parts[2] == image.tobytes()


BIG = np.zeros((720, 1280, 3), np.uint8)  # 2.7 MB: a stalled peer's socket buffers fill in a few frames
MANY = 40


def spec_subscriber(context: zmq.Context, endpoint: str) -> zmq.Socket:
    """A subscriber as the protocol describes it: SUB, receive high-water mark 2, topic frame."""
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 2)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.connect(endpoint)
    return sub


class Reader:
    """Receives frames on a thread and records their ids; `wait_for(id)` polls a real condition."""

    def __init__(self, sub: zmq.Socket) -> None:
        self.sub = sub
        self.ids: List[int] = []
        self.go = threading.Event()
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.go.wait()
        while not self.stop.is_set():
            if self.sub.poll(50):
                parts = self.sub.recv_multipart()
                with self.changed:
                    self.ids.append(struct.unpack("!QQIIB", parts[1])[0])
                    self.changed.notify_all()

    def wait_for(self, frame_id: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: frame_id in self.ids, timeout)

    def wait_quiet(self, count: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: len(self.ids) >= count, timeout)

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        self.thread.join(5)
        self.sub.close()


def test_a_stalled_subscriber_does_not_cost_a_fast_one_any_frame(context: zmq.Context) -> None:
    with FramePublisher("tcp://127.0.0.1:*", wait_subscribers=2) as publisher:
        stalled = Reader(spec_subscriber(context, publisher.endpoint))  # never reads until the end
        fast = Reader(spec_subscriber(context, publisher.endpoint))
        fast.go.set()
        try:
            assert publisher.wait_for_subscribers(timeout=10)
            for frame_id in range(MANY):
                assert publisher.publish(frame_id, frame_id * 1000, BIG)
                # Lock-step with the fast reader: it is never the one that is slow.
                assert fast.wait_for(frame_id, timeout=10), f"the fast subscriber lost frame {frame_id}"
            assert fast.ids == list(range(MANY))
            stalled.go.set()
            stalled.wait_quiet(MANY, timeout=1.0)  # takes what its queues held; bounded wait
            assert len(stalled.ids) < MANY, "the stalled subscriber never backed up: the test proved nothing"
            assert stalled.ids == sorted(stalled.ids)
        finally:
            stalled.close()
            fast.close()


def test_lossless_mode_waits_for_the_slowest_subscriber_and_nobody_loses_a_frame(context: zmq.Context) -> None:
    with FramePublisher("tcp://127.0.0.1:*", wait_subscribers=2, lossless=True) as publisher:
        slow = Reader(spec_subscriber(context, publisher.endpoint))
        fast = Reader(spec_subscriber(context, publisher.endpoint))
        fast.go.set()
        stop = threading.Event()
        results: List[bool] = []
        try:
            assert publisher.wait_for_subscribers(timeout=10)
            sender = threading.Thread(
                target=lambda: results.extend(publisher.publish(i, i, BIG, stop) for i in range(MANY)), daemon=True
            )
            sender.start()
            deadline = time.monotonic() + 20
            while publisher.waits == 0 and sender.is_alive() and time.monotonic() < deadline:
                sender.join(0.05)  # poll a real condition: the publisher is held back by the slow peer
            assert publisher.waits >= 1, "the slow subscriber never held the publisher back"
            slow.go.set()  # now it reads, and the publisher continues
            sender.join(30)
            assert not sender.is_alive()
            assert results == [True] * MANY and publisher.dropped == 0
            for reader in (slow, fast):
                reader.wait_quiet(MANY, timeout=10)
                assert reader.ids == list(range(MANY))
        finally:
            stop.set()
            slow.close()
            fast.close()


def test_lossless_publish_gives_up_and_counts_when_stopped(context: zmq.Context) -> None:
    with FramePublisher("tcp://127.0.0.1:*", wait_subscribers=1, lossless=True) as publisher:
        stalled = Reader(spec_subscriber(context, publisher.endpoint))
        stop = threading.Event()
        try:
            assert publisher.wait_for_subscribers(timeout=10)
            stop.set()  # a stop is pending: the first frame that finds no room is given up
            results = [publisher.publish(i, i, BIG, stop) for i in range(MANY)]
            assert results.count(False) >= 1
            assert publisher.dropped == results.count(False) and publisher.sent == results.count(True)
        finally:
            stalled.close()


def test_publisher_binds_clearly_or_fails_clearly() -> None:
    with FramePublisher("tcp://127.0.0.1:*") as publisher:
        assert publisher.endpoint.startswith("tcp://127.0.0.1:")
        with pytest.raises(ValueError, match="cannot bind"):
            FramePublisher(publisher.endpoint)  # port taken


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def test_pacer_schedules_by_timestamps_without_drift() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, max_lag_ns=500_000_000)
    ms = 1_000_000

    def due_in(t_ns: int) -> int:
        delay = pacer.delay_ns(t_ns)
        clock.now += delay  # the caller waits that long
        return delay

    assert due_in(5_000 * ms) == 0  # the first frame starts the schedule
    clock.now += 30 * ms  # sending took 30 ms: the next frame is due 70 ms later, not 100
    assert due_in(5_100 * ms) == 70 * ms
    assert due_in(5_200 * ms) == 100 * ms
    clock.now += 150 * ms  # late: send at once, the schedule stays
    assert due_in(5_300 * ms) == 0
    assert due_in(5_400 * ms) == 50 * ms
    clock.now += 2_000 * ms  # far behind: a new schedule starts instead of a burst
    assert due_in(5_500 * ms) == 0
    assert due_in(5_600 * ms) == 100 * ms
    assert due_in(1_000 * ms) == 0  # timestamps went back: new schedule


def parse(argv: List[str]) -> argparse.Namespace:
    return add_daemon_args(argparse.ArgumentParser()).parse_args(argv)


def test_cli_arguments_and_exit_codes(video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse(["--source", str(video), "--address", "tcp://127.0.0.1:*", "--max-frames", "3", "--fps", "25"])
    assert (args.fps, args.loop, args.wait_subscribers, args.max_frames) == (25.0, False, 0, 3)
    assert parse(["--source", "0", "--loop", "--wait-subscribers", "2"]).wait_subscribers == 2
    assert args.lossless is False and parse(["--source", "0", "--lossless"]).lossless is True
    assert daemon_main(args) == 0
    assert "sent 3 frames (a slow subscriber misses frames on its own)" in capsys.readouterr().out
    assert daemon_main(parse(["--source", str(video), "--address", "tcp://127.0.0.1:*", "--max-frames", "2", "--lossless"])) == 0
    assert "sent 2 frames (0 waited for a slow subscriber, 0 given up at the stop)" in capsys.readouterr().out
    assert daemon_main(parse(["--source", str(tmp_path / "missing.mp4")])) == 2
    assert "missing.mp4" in capsys.readouterr().err
    capsys.readouterr()
    assert daemon_main(parse([])) == 2
    assert "no source" in capsys.readouterr().err


def test_visualbase_spelling_daemon_source_pub_address(video: Path, capsys: pytest.CaptureFixture) -> None:
    args = parse([str(video), "--pub", "tcp://127.0.0.1:*", "--max-frames", "2"])
    assert (args.source_arg, args.address) == (str(video), "tcp://127.0.0.1:*")
    assert daemon_main(args) == 0
    assert "sent 2 frames" in capsys.readouterr().out
    assert daemon_main(parse([str(video), "--source", "other.mp4"])) == 2
    assert "two sources" in capsys.readouterr().err
    # The same run through the command line, both spellings.
    from facemoment.tools.cli import build_parser

    both = build_parser().parse_args(["daemon", str(video), "--pub", "tcp://*:6000"])
    assert (both.source_arg, both.address) == (str(video), "tcp://*:6000")
    ours = build_parser().parse_args(["daemon", "--source", str(video), "--address", "tcp://*:6000"])
    assert (ours.source, ours.address) == (str(video), "tcp://*:6000")


def test_a_detect_stream_carries_every_frame_scaled_with_the_same_id_and_timestamp(
    video: Path, reference: List[np.ndarray], context: zmq.Context
) -> None:
    from conftest import free_port

    from facemoment.formats.scaling import detect_image

    detect_address = f"tcp://127.0.0.1:{free_port()}"
    daemon = DaemonThread(
        source=str(video), address="tcp://127.0.0.1:*", wait_subscribers=1, wait_timeout_s=10,
        detect_address=detect_address, detect_width=16, lossless=True,
    )
    daemon.start()
    full = raw_subscriber(context, daemon.endpoint)
    detect = raw_subscriber(context, detect_address)
    full_messages = receive(full, N_FRAMES)
    detect_messages = receive(detect, N_FRAMES)
    daemon.join()
    assert len(full_messages) == len(detect_messages) == N_FRAMES
    for index, (whole, small) in enumerate(zip(full_messages, detect_messages)):
        full_header = struct.unpack("!QQIIB", whole[1])
        detect_header = struct.unpack("!QQIIB", small[1])
        assert full_header == (index, round(index * 1e9 / FPS), SIZE[0], SIZE[1], 3)
        assert detect_header == (index, round(index * 1e9 / FPS), 16, 12, 3)  # same id and time, 16 px wide
        assert small[2] == detect_image(reference[index], 16).tobytes()
    assert "16 px wide to tcp://127.0.0.1:" in daemon.lines[-1]
