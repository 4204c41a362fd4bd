"""The frame daemon: publish a video source as visualbase frame messages.

``FramePublisher`` binds a PUB socket the way visualbase's daemon does (send
high-water mark 2, linger 0, non-blocking sends).  To count the frames a slow
subscriber cannot take, the socket sets ``ZMQ_XPUB_NODROP``: a send that would
exceed the high-water mark fails instead of vanishing, and the frame is dropped
and counted.  (With several subscribers this drops the frame for all of them
rather than only for the slow one.)

With ``wait_subscribers=N`` the socket is an XPUB instead, which SUB peers cannot
tell from a PUB, so :meth:`FramePublisher.wait_for_subscribers` can block until N
subscriptions to ``frame`` have arrived: a demo or a test then does not lose its
first frames to ZeroMQ's slow-joiner window.

``run_daemon`` paces frames by their timestamps against a monotonic clock
(frame k is due at ``start + (t_k - t_0)``), so timing errors do not accumulate.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import zmq

from facemoment.formats.frames import open_frames
from facemoment.formats.wire import FRAME_TOPIC, pack_frame

SEND_HWM = 2
SUBSCRIBE = b"\x01"
UNSUBSCRIBE = b"\x00"
# When the daemon falls this far behind its schedule it starts a new schedule instead of bursting.
MAX_LAG_NS = 1_000_000_000


class FramePublisher:
    """Binds and publishes frame messages; see the module doc."""

    def __init__(self, address: str = "tcp://*:5555", wait_subscribers: int = 0) -> None:
        if wait_subscribers < 0:
            raise ValueError(f"wait_subscribers must not be negative, got {wait_subscribers}")
        self.address = address
        self.wait_subscribers = wait_subscribers
        self.sent = 0
        self.dropped = 0
        self.subscribers = 0
        self._context = zmq.Context()
        kind = zmq.XPUB if wait_subscribers > 0 else zmq.PUB
        self._socket = self._context.socket(kind)
        self._socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if kind == zmq.XPUB:
            # Without this an XPUB passes on only the first subscription to a topic.
            self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            self._context.term()
            raise ValueError(f"cannot bind frame publisher to {address!r}: {exc}") from exc
        endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        # The address actually bound (resolves a "*" port); connect to this one.
        self.endpoint = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    def _read_subscriptions(self, timeout_ms: int) -> None:
        if self.wait_subscribers == 0:
            return
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            message = self._socket.recv()
            timeout_ms = 0
            # SUB peers subscribe to b"frame", or to b"" (everything), which also gets frames.
            topic = message[1:]
            if not FRAME_TOPIC.startswith(topic):
                continue
            if message[:1] == SUBSCRIBE:
                self.subscribers += 1
            elif message[:1] == UNSUBSCRIBE:
                self.subscribers = max(0, self.subscribers - 1)

    def wait_for_subscribers(self, timeout: Optional[float] = None) -> bool:
        """Block until ``wait_subscribers`` peers subscribed to frames; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.subscribers < self.wait_subscribers:
            if deadline is None:
                wait_ms = 100
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait_ms = max(1, min(100, int(remaining * 1000)))
            self._read_subscriptions(wait_ms)
        return True

    def publish(self, frame_id: int, t_ns: int, image: np.ndarray) -> bool:
        """Send one frame without waiting; False (and counted) when the queue is full."""
        self._read_subscriptions(0)  # keep the XPUB's incoming queue drained
        parts = pack_frame(frame_id, t_ns, image)
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self, flush_ms: int = 1000) -> None:
        # Sends never wait (linger 0 while running); at a clean end the last frames
        # already queued get up to `flush_ms` to reach the subscribers.
        if not self._socket.closed:
            self._socket.close(linger=flush_ms)
        if not self._context.closed:
            self._context.term()

    def __enter__(self) -> "FramePublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pacer:
    """Says how long to wait until a frame with source timestamp ``t_ns`` is due."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns, max_lag_ns: int = MAX_LAG_NS) -> None:
        self._clock = clock
        self._max_lag_ns = max_lag_ns
        self._start_clock: Optional[int] = None
        self._start_t: int = 0

    def delay_ns(self, t_ns: int) -> int:
        now = self._clock()
        if self._start_clock is None or t_ns < self._start_t:
            # First frame, or timestamps went back: start a new schedule.
            self._start_clock, self._start_t = now, t_ns
            return 0
        due = self._start_clock + (t_ns - self._start_t)
        if now - due > self._max_lag_ns:
            self._start_clock, self._start_t = now, t_ns
            return 0
        return max(0, due - now)


@dataclass
class DaemonSummary:
    frames_sent: int
    frames_dropped: int
    duration_s: float
    source: str
    address: str

    def line(self) -> str:
        rate = self.frames_sent / self.duration_s if self.duration_s > 0 else 0.0
        return (
            f"daemon: sent {self.frames_sent} frames, dropped {self.frames_dropped} at the high-water mark, "
            f"{self.duration_s:.1f} s ({rate:.1f} fps) from {self.source} to {self.address}"
        )


def run_daemon(
    source: str,
    address: str = "tcp://*:5555",
    fps: Optional[float] = None,
    loop: bool = False,
    wait_subscribers: int = 0,
    max_frames: Optional[int] = None,
    log: Callable[[str], None] = print,
    stop_event: Optional[threading.Event] = None,
    wait_timeout_s: Optional[float] = None,
    on_bound: Optional[Callable[[str], None]] = None,
) -> DaemonSummary:
    """Publish ``source`` until it is exhausted, ``max_frames`` were sent or ``stop_event`` is set.

    Files are paced at their own rate (or sampled down to ``fps``); live sources
    deliver at capture pace.  ``on_bound`` receives the bound endpoint (useful with
    a ``*`` port).  Returns the summary it also logs as one line.
    """
    stop = stop_event or threading.Event()
    reader = open_frames(source, fps=fps, loop=loop)
    started = time.monotonic()
    publisher: Optional[FramePublisher] = None
    interrupted = False
    try:
        publisher = FramePublisher(address, wait_subscribers=wait_subscribers)
        if on_bound is not None:
            on_bound(publisher.endpoint)
        if wait_subscribers:
            log(f"daemon: waiting for {wait_subscribers} subscriber(s) on {publisher.endpoint}")
            if not publisher.wait_for_subscribers(wait_timeout_s):
                log(f"daemon: only {publisher.subscribers} subscriber(s) after {wait_timeout_s} s; publishing anyway")
        started = time.monotonic()
        pacer = Pacer()
        attempts = 0
        while not stop.is_set() and (max_frames is None or attempts < max_frames):
            item = reader.read()
            if item is None:
                break
            frame_id, t_ns, image = item
            if not reader.is_live:
                delay = pacer.delay_ns(t_ns)
                if delay and stop.wait(delay / 1e9):
                    break
            publisher.publish(frame_id, t_ns, image)
            attempts += 1
    except KeyboardInterrupt:
        interrupted = True  # still close and report below
    finally:
        reader.close()
        sent = publisher.sent if publisher else 0
        dropped = publisher.dropped if publisher else 0
        endpoint = publisher.endpoint if publisher else address
        if publisher is not None:
            publisher.close()
    summary = DaemonSummary(sent, dropped, time.monotonic() - started, source, endpoint)
    log(summary.line())
    if interrupted:
        raise KeyboardInterrupt
    return summary


def add_daemon_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--source",
        required=True,
        help="video file, camera index (0, 1, ...), rtsp:// or http:// URL, or 'sample'",
    )
    parser.add_argument("--address", default="tcp://*:5555", help="address to bind the PUB socket to")
    parser.add_argument("--fps", type=float, default=None, help="publish at most this rate (samples files down)")
    parser.add_argument("--loop", action="store_true", help="restart files at their end")
    parser.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="wait until N subscribers joined before the first frame",
    )
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    return parser


def daemon_main(args: argparse.Namespace) -> int:
    """Run the daemon from parsed CLI arguments; returns the exit code."""
    try:
        run_daemon(
            args.source,
            args.address,
            fps=args.fps,
            loop=args.loop,
            wait_subscribers=args.wait_subscribers,
            max_frames=args.max_frames,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"facemoment daemon: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # run_daemon closed everything and printed its summary
    return 0
