"""The frame daemon: publish a video source as visualbase frame messages.

``FramePublisher`` binds a PUB socket the way visualbase's daemon does (send
high-water mark 2, linger 0, non-blocking sends).  Each subscriber has its own
queue: when a slow one's queue is full, frames are dropped for that subscriber
only, and the others still get every frame (plain PUB semantics; the slow one
sees gaps in ``frame_id``).

``lossless=True`` (``--lossless``) trades that for completeness: the socket sets
``ZMQ_XPUB_NODROP``, so a send that would overflow any subscriber's queue is
retried until every subscriber has room.  Nobody loses a frame, and the daemon
goes at the pace of its slowest subscriber (``waits`` counts the frames that had
to wait).

With ``wait_subscribers=N`` (or in lossless mode) the socket is an XPUB, which SUB
peers cannot tell from a PUB, so :meth:`FramePublisher.wait_for_subscribers` can
block until N subscriptions to ``frame`` have arrived: a demo or a test then does
not lose its first frames to ZeroMQ's slow-joiner window.

``run_daemon`` paces frames by their timestamps against a monotonic clock
(frame k is due at ``start + (t_k - t_0)``), so timing errors do not accumulate.

With ``detect_address`` (``--detect``) every frame is also published scaled to
``detect_width`` on a second socket, with the same id and timestamp: a camera's
detect stream, analysed beside the full one its clips are cut from.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import zmq

from connectors.sources import open_reader, stream_spec
from facemoment.core.config import ConfigError, load_config
from facemoment.formats.scaling import detect_image
from facemoment.formats.wire import FRAME_TOPIC, pack_frame
from facemoment.runtime.subscriptions import SubscriberCount

SEND_HWM = 2
# Lossless mode: how long one wait for room lasts before the stop event is checked again.
ROOM_POLL_MS = 100
# When the daemon falls this far behind its schedule it starts a new schedule instead of bursting.
MAX_LAG_NS = 1_000_000_000


class FramePublisher:
    """Binds and publishes frame messages; see the module doc."""

    def __init__(self, address: str = "tcp://*:5555", wait_subscribers: int = 0, lossless: bool = False) -> None:
        if wait_subscribers < 0:
            raise ValueError(f"wait_subscribers must not be negative, got {wait_subscribers}")
        self.address = address
        self.wait_subscribers = wait_subscribers
        self.lossless = lossless
        self.sent = 0
        self.dropped = 0  # lossless mode only: frames given up on because of a stop
        self.waits = 0  # lossless mode only: frames that waited for a slow subscriber
        self._context = zmq.Context()
        kind = zmq.XPUB if wait_subscribers > 0 or lossless else zmq.PUB
        self._socket = self._context.socket(kind)
        self._socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._socket.setsockopt(zmq.LINGER, 0)
        if lossless:
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if kind == zmq.XPUB:
            # Without this an XPUB passes on only the first subscription to a topic.
            self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._subscriptions = SubscriberCount(self._socket, FRAME_TOPIC) if kind == zmq.XPUB else None
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            self._context.term()
            raise ValueError(f"cannot bind frame publisher to {address!r}: {exc}") from exc
        endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        # The address actually bound (resolves a "*" port); connect to this one.
        self.endpoint = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    @property
    def subscribers(self) -> int:
        """Subscriptions to frames seen so far (counted on an XPUB only)."""
        return self._subscriptions.count if self._subscriptions is not None else 0

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        # An XPUB's incoming queue holds the subscriptions; keep it drained.
        if self._subscriptions is not None:
            self._subscriptions.read(timeout_ms)

    def wait_for_subscribers(self, timeout: Optional[float] = None) -> bool:
        """Block until ``wait_subscribers`` peers subscribed to frames; False on timeout."""
        if self._subscriptions is None:
            return self.wait_subscribers == 0
        return self._subscriptions.wait_for(self.wait_subscribers, timeout)

    def publish(self, frame_id: int, t_ns: int, image: np.ndarray, stop: Optional[threading.Event] = None) -> bool:
        """Send one frame.

        Default: never waits; a subscriber whose queue is full misses this frame.
        Lossless: waits until every subscriber has room, or until ``stop`` is set
        (then the frame is counted in ``dropped`` and False is returned).
        """
        self._read_subscriptions(0)
        parts = pack_frame(frame_id, t_ns, image)
        waited = False
        while True:
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
                break
            except zmq.Again:
                # Only a NODROP socket refuses a send; wait for room, subscriptions read meanwhile.
                if not waited:
                    waited = True
                    self.waits += 1
                if stop is not None and stop.is_set():
                    self.dropped += 1
                    return False
                self._socket.poll(ROOM_POLL_MS, zmq.POLLOUT)
                self._read_subscriptions(0)
        self.sent += 1
        return True

    def send_raw(self, parts: List[bytes], wait_s: float = 1.0) -> bool:
        """Send a message as it is (a test's malformed one), waiting up to ``wait_s`` for a
        subscriber's room (the send queue holds two frames: a burst would be shed
        unseen). False if it could not go: no subscriber, or no room in time."""
        self._read_subscriptions(0)
        if self._subscriptions is None or self._subscriptions.count == 0:
            return False
        deadline = time.monotonic() + wait_s
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)  # refuse rather than drop: the caller counts
        try:
            while True:
                try:
                    self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
                    return True
                except zmq.Again:
                    if time.monotonic() >= deadline:
                        return False
                    self._socket.poll(ROOM_POLL_MS, zmq.POLLOUT)
        finally:
            self._socket.setsockopt(zmq.XPUB_NODROP, int(self.lossless))

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


def paced_frames(
    reader: Any, stop: threading.Event, max_frames: Optional[int] = None
) -> Iterator[Tuple[int, int, np.ndarray]]:
    """`reader`'s frames as (frame_id, t_ns, image), a file's at the pace of its
    timestamps (a live reader paces itself), until it ends, `stop` is set or
    `max_frames` were given."""
    pacer = Pacer()
    count = 0
    while not stop.is_set() and (max_frames is None or count < max_frames):
        item = reader.read()
        if item is None:
            return
        frame_id, t_ns, image = item
        if not reader.is_live:
            delay = pacer.delay_ns(t_ns)
            if delay and stop.wait(delay / 1e9):
                return
        count += 1
        yield frame_id, t_ns, image


@dataclass
class DaemonSummary:
    frames_sent: int
    frames_dropped: int
    duration_s: float
    source: str
    address: str
    lossless: bool = False
    frames_waited: int = 0
    detect_address: Optional[str] = None
    detect_width: int = 0

    def line(self) -> str:
        rate = self.frames_sent / self.duration_s if self.duration_s > 0 else 0.0
        if self.lossless:
            detail = f"{self.frames_waited} waited for a slow subscriber, {self.frames_dropped} given up at the stop"
        else:
            detail = "a slow subscriber misses frames on its own"
        detect = f", and {self.detect_width} px wide to {self.detect_address}" if self.detect_address else ""
        return (
            f"daemon: sent {self.frames_sent} frames ({detail}), "
            f"{self.duration_s:.1f} s ({rate:.1f} fps) from {self.source} to {self.address}{detect}"
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
    lossless: bool = False,
    detect_address: Optional[str] = None,
    detect_width: int = 640,
    on_detect_bound: Optional[Callable[[str], None]] = None,
) -> DaemonSummary:
    """Publish ``source`` until it is exhausted, ``max_frames`` were sent or ``stop_event`` is set.

    Files are paced at their own rate (or sampled down to ``fps``); live sources
    deliver at capture pace.  ``on_bound`` receives the bound endpoint (useful with
    a ``*`` port).  ``detect_address``: also publish every frame at ``detect_width``
    there (``on_detect_bound`` receives that endpoint).  Returns the summary it also
    logs as one line.
    """
    stop = stop_event or threading.Event()
    # The same resolution of a source as the dataflow's (connectors/sources.py).
    reader = open_reader(stream_spec("daemon", source), fps, loop=loop)
    started = time.monotonic()
    publisher: Optional[FramePublisher] = None
    detect: Optional[FramePublisher] = None
    interrupted = False
    try:
        publisher = FramePublisher(address, wait_subscribers=wait_subscribers, lossless=lossless)
        if on_bound is not None:
            on_bound(publisher.endpoint)
        if detect_address:
            detect = FramePublisher(detect_address, wait_subscribers=wait_subscribers, lossless=lossless)
            if on_detect_bound is not None:
                on_detect_bound(detect.endpoint)
        for pub in (publisher, detect):
            if wait_subscribers and pub is not None:
                log(f"daemon: waiting for {wait_subscribers} subscriber(s) on {pub.endpoint}")
                if not pub.wait_for_subscribers(wait_timeout_s):
                    log(f"daemon: only {pub.subscribers} subscriber(s) after {wait_timeout_s} s; publishing anyway")
        started = time.monotonic()
        attempts = 0
        for frame_id, t_ns, image in paced_frames(reader, stop, max_frames):
            if detect is not None:
                # The detect copy first: an analysis never waits on a frame its clip has.
                detect.publish(frame_id, t_ns, detect_image(image, detect_width), stop)
            publisher.publish(frame_id, t_ns, image, stop)
            attempts += 1
    except KeyboardInterrupt:
        interrupted = True  # still close and report below
    finally:
        reader.close()
        sent = publisher.sent if publisher else 0
        dropped = publisher.dropped if publisher else 0
        waited = publisher.waits if publisher else 0
        endpoint = publisher.endpoint if publisher else address
        if publisher is not None:
            publisher.close()
        detect_endpoint = detect.endpoint if detect is not None else detect_address
        if detect is not None:
            detect.close()
    summary = DaemonSummary(
        sent, dropped, time.monotonic() - started, source, endpoint, lossless, waited,
        detect_endpoint, detect_width if detect_address else 0,
    )
    log(summary.line())
    if interrupted:
        raise KeyboardInterrupt
    return summary


def add_daemon_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # Both spellings: visualbase's `daemon SOURCE --pub ADDRESS` and `--source/--address`.
    parser.add_argument(
        "source_arg",
        nargs="?",
        metavar="SOURCE",
        help="video file, camera index (0, 1, ...), rtsp:// or http:// URL, or 'sample' (or --source)",
    )
    parser.add_argument("--source", help="the same as SOURCE")
    parser.add_argument(
        "--address", "--pub", dest="address", default="tcp://*:5555",
        help="address to bind the PUB socket to (default tcp://*:5555; --pub is visualbase's name)",
    )
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
    parser.add_argument(
        "--lossless",
        action="store_true",
        help="never drop a frame for any subscriber: wait for the slowest one (default: a slow subscriber misses frames alone)",
    )
    parser.add_argument(
        "--detect", default=None, metavar="ADDRESS",
        help="also publish every frame scaled to --detect-width on this address (same ids and timestamps): a detect stream",
    )
    parser.add_argument(
        "--detect-width", type=int, default=640, metavar="PX",
        help="width of the detect stream's frames (default 640; narrower frames go as they are)",
    )
    return parser


def daemon_source(args: argparse.Namespace) -> str:
    """The one source named by SOURCE or --source; ValueError otherwise."""
    given = [s for s in (getattr(args, "source_arg", None), args.source) if s]
    if not given:
        raise ValueError("no source: name one as SOURCE (visualbase's spelling) or --source")
    if len(given) == 2 and given[0] != given[1]:
        raise ValueError(f"two sources named: {given[0]!r} and --source {given[1]!r}")
    return given[0]


def daemon_main(args: argparse.Namespace) -> int:
    """Run the daemon from parsed CLI arguments; returns the exit code."""
    try:
        # The options as settings: checked by their declarations like every run's.
        detect_width = getattr(args, "detect_width", 640)
        cfg = load_config(
            env={},
            settings={"source.source": daemon_source(args), "source.fps": args.fps, "extract.detect_width": detect_width},
        )
        if getattr(args, "detect", None) and cfg.extract.detect_width <= 0:
            raise ValueError(f"--detect-width {detect_width}: a detect stream needs a width of at least one pixel")
        run_daemon(
            cfg.source.source,
            args.address,
            fps=cfg.source.fps,
            loop=args.loop,
            wait_subscribers=args.wait_subscribers,
            max_frames=args.max_frames,
            lossless=getattr(args, "lossless", False),
            detect_address=getattr(args, "detect", None),
            detect_width=cfg.extract.detect_width,
        )
    except (FileNotFoundError, ValueError, ConfigError) as exc:
        print(f"facemoment daemon: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # run_daemon closed everything and printed its summary
    return 0
