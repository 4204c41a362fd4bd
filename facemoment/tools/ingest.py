"""`facemoment ingest`: a stand-in for visualbase's ingest process, for demos and containers.

    facemoment ingest SOURCE --proxy face:/tmp/vid_face.mjpg:640:480:10 \\
        --proxy pose:/tmp/vid_pose.mjpg:640:480:10 --trig-socket /tmp/trig.sock

As visualbase's ingest does (shared/spec/visualbase-protocol.md): per proxy it
removes any file at PATH, creates a FIFO, waits in ``open()`` for a reader, then
writes the source's frames scaled to W x H and sampled down to FPS, each as one
write of ``struct.pack("<IQQ", len(jpeg), frame_id, t_src_ns)`` and the JPEG
(quality 85); ids and times are the full stream's. A reader that closes the FIFO
ends that proxy (logged, not reopened); the FIFO is removed when its writer ends.
TRIG messages are read from a Unix datagram socket bound at ``--trig-socket`` and
printed; clips are not cut (visualbase does that).

Files are paced at their own rate. Each proxy has a queue of a few frames: while a
proxy's reader has not come yet (or is slow), the queue fills and the source waits
for it, so no proxy loses a frame.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from facemoment.formats.proxy_pipe import DEFAULT_JPEG_QUALITY, encode_proxy_jpeg, pack_proxy_frame
from facemoment.formats.wire import WireError, parse_trig
from facemoment.tools.daemon import paced_frames

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65536
_END = None  # the queue item that ends a proxy


@dataclass
class ProxySpec:
    name: str
    path: str
    width: int
    height: int
    fps: float
    written: int = 0
    error: Optional[str] = None
    frames: "queue.Queue[Optional[Tuple[int, int, np.ndarray]]]" = field(default_factory=lambda: queue.Queue(maxsize=8))
    _due_ns: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "ProxySpec":
        """``NAME:PATH:W:H:FPS`` as visualbase's --proxy takes it."""
        parts = text.split(":")
        if len(parts) != 5:
            raise ValueError(f"--proxy {text!r}: expected NAME:PATH:W:H:FPS")
        name, path, width, height, fps = parts
        try:
            spec = cls(name, path, int(width), int(height), float(fps))
        except ValueError:
            raise ValueError(f"--proxy {text!r}: W and H must be whole numbers and FPS a number") from None
        if not name or not path.startswith("/") or spec.width < 1 or spec.height < 1 or not spec.fps > 0:
            raise ValueError(f"--proxy {text!r}: a name, an absolute path, W, H and FPS above 0")
        return spec

    def wants(self, t_ns: int) -> bool:
        """Sampling down: the first frame at or after each 1/FPS period."""
        period = int(round(1e9 / self.fps))
        due = self._due_ns
        if due is not None and due - 2 * period <= t_ns < due:
            return False
        # On schedule: the next period follows this one; a new start (the first frame,
        # time that went back or leapt ahead) starts the schedule from this frame.
        on_schedule = due is not None and 0 <= t_ns - due <= period
        self._due_ns = (due if on_schedule else t_ns) + period
        return True


def proxy_bytes(frame_id: int, t_ns: int, image: np.ndarray, spec: ProxySpec, quality: int) -> bytes:
    import cv2

    if image.shape[1] != spec.width or image.shape[0] != spec.height:
        image = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    return pack_proxy_frame(frame_id, t_ns, encode_proxy_jpeg(image, quality))


def _make_fifo(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)


def _write_proxy(spec: ProxySpec, quality: int, stop: threading.Event) -> None:
    fd: Optional[int] = None
    try:
        fd = os.open(spec.path, os.O_WRONLY)  # waits for the reader, as visualbase does
        log.info("proxy %s: reader connected at %s", spec.name, spec.path)
        while True:
            item = spec.frames.get()
            if item is _END or stop.is_set():
                break
            data = memoryview(proxy_bytes(*item, spec, quality))
            while data:
                data = data[os.write(fd, data):]
            spec.written += 1
    except BrokenPipeError:
        spec.error = "FIFO reader disconnected"
        log.error("proxy %s: FIFO reader disconnected; not reopening", spec.name)
    finally:
        if fd is not None:
            os.close(fd)
        if os.path.lexists(spec.path) and stat.S_ISFIFO(os.lstat(spec.path).st_mode):
            os.unlink(spec.path)
        while spec.error and spec.frames.get() is not _END:
            pass  # keep the source going: a dead proxy takes its frames and drops them


class TrigSocket:
    """visualbase's --trig-socket: a datagram socket bound at the path, one TRIG per datagram."""

    def __init__(self, path: str, on_message: Callable[[str], None]) -> None:
        self.path = path
        self.received: List[str] = []
        self._on_message = on_message
        if os.path.lexists(path):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trig-socket", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode("utf-8", errors="replace")
            try:
                parse_trig(text)
            except WireError as exc:
                log.warning("not a TRIG message on %s: %s", self.path, exc)
                continue
            self.received.append(text)
            self._on_message(text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        if os.path.lexists(self.path):
            os.unlink(self.path)


@dataclass
class IngestSummary:
    frames_read: int
    written: List[Tuple[str, int, Optional[str]]]
    trig_received: int
    trig_socket: Optional[str]

    def line(self) -> str:
        proxies = ", ".join(f"{name} {n}" + (f" ({err})" if err else "") for name, n, err in self.written)
        trig = f"; {self.trig_received} TRIG received on {self.trig_socket}" if self.trig_socket else ""
        return f"ingest: read {self.frames_read} frames; proxy frames written: {proxies}{trig}"


def run_ingest(
    source: str,
    proxies: List[ProxySpec],
    trig_socket: Optional[str] = None,
    loop: bool = False,
    max_frames: Optional[int] = None,
    linger_s: float = 0.0,
    quality: int = DEFAULT_JPEG_QUALITY,
    stop_event: Optional[threading.Event] = None,
    log_line: Callable[[str], None] = print,
) -> IngestSummary:
    """Write ``source`` to every proxy until it ends; then listen ``linger_s`` more for TRIG."""
    from facemoment.formats.frames import open_frames

    stop = stop_event or threading.Event()
    reader = open_frames(source, loop=loop)
    trig = TrigSocket(trig_socket, lambda text: log_line(f"[ingest] received {text}")) if trig_socket else None
    for spec in proxies:
        _make_fifo(spec.path)
    writers = [threading.Thread(target=_write_proxy, args=(s, quality, stop), name=f"proxy-{s.name}", daemon=True) for s in proxies]
    for writer in writers:
        writer.start()
    log_line("ingest: " + ", ".join(f"{s.name} -> {s.path} ({s.width}x{s.height} at {s.fps:g} fps)" for s in proxies))
    count = 0
    try:
        for frame_id, t_ns, image in paced_frames(reader, stop, max_frames):
            count += 1
            for spec in proxies:
                if spec.wants(t_ns):
                    spec.frames.put((frame_id, t_ns, image))
        for spec in proxies:
            spec.frames.put(_END)
        for writer in writers:
            writer.join()
        if trig is not None and linger_s > 0:
            stop.wait(linger_s)  # late TRIG: a fusion sends the last ones once its stream ended
    except KeyboardInterrupt:
        stop.set()
    finally:
        reader.close()
        if trig is not None:
            trig.close()
    summary = IngestSummary(count, [(s.name, s.written, s.error) for s in proxies], len(trig.received) if trig else 0, trig_socket)
    log_line(summary.line())
    return summary


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        proxies = [ProxySpec.parse(p) for p in args.proxy]
    except ValueError as exc:
        print(f"facemoment ingest: {exc}", file=sys.stderr)
        return 2
    if not proxies:
        print("facemoment ingest: at least one --proxy NAME:PATH:W:H:FPS is needed", file=sys.stderr)
        return 2
    try:
        run_ingest(args.source, proxies, args.trig_socket, loop=args.loop, max_frames=args.max_frames,
                   linger_s=args.linger, quality=args.jpeg_quality)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"facemoment ingest: {exc}", file=sys.stderr)
        return 2
    return 0


def add_ingest_args(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "ingest",
        help="stand in for visualbase ingest: proxy streams over FIFOs, TRIG on a Unix datagram socket",
    )
    p.add_argument("source", help="video file, camera index, rtsp:// URL or 'sample'")
    p.add_argument("--proxy", action="append", default=[], metavar="NAME:PATH:W:H:FPS",
                   help="a proxy stream written to a FIFO at PATH (repeatable), e.g. face:/tmp/vid_face.mjpg:640:480:10")
    p.add_argument("--trig-socket", default="/tmp/trig.sock", help="where TRIG is received ('' for none; default /tmp/trig.sock)")
    p.add_argument("--loop", action="store_true", help="restart files at their end")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N source frames")
    p.add_argument("--linger", type=float, default=30.0, metavar="S",
                   help="after the source ended, listen S seconds more for TRIG (default 30)")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, help="proxy JPEG quality (default 85)")
    p.set_defaults(func=cmd_ingest)


__all__ = ["ProxySpec", "TrigSocket", "IngestSummary", "run_ingest", "add_ingest_args", "cmd_ingest"]
