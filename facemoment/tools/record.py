"""`facemoment record`: subscribe to a frame publisher and write a recording.

The recorder subscribes like the dataflow's ZMQ source (SUB, topic ``frame``) but
with a much larger receive high-water mark (:data:`RECEIVE_HWM` frames instead of
2): a recording must not drop, so frames queue in ZeroMQ while a record is being
encoded or written.  Encoding (JPEG/PNG) runs on a small thread pool, records are
written in arrival order.  If the recorder still falls behind, the publisher's own
queue overflows and the lost frames show up as frame id gaps, which the summary
reports.

The recording ends after ``duration_s`` (counted from the start of the command),
on Ctrl-C / SIGTERM / ``stop_event``, before a record that would pass
``max_bytes``, or when the publisher restarts (frame ids going back: a recording
holds one run of the publisher, so its ids strictly increase).  It is closed
cleanly in every case; a failed write (a full disk) leaves it readable up to its
last complete record and makes the command exit non-zero.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple, Union

import zmq

from facemoment.core.addresses import zmq_address
from facemoment.formats.recording import (
    DEFAULT_ENCODING,
    DEFAULT_JPEG_QUALITY,
    ENCODINGS,
    RecordingFullError,
    RecordingWriteError,
    RecordingWriter,
    encode_image,
    image_geometry,
)
from connectors.shares import frame_gap
from connectors.sources import stream_spec
from facemoment.formats.wire import FRAME_TOPIC, WireError, unpack_frame

DEFAULT_MAX_BYTES = 2 * 1024**3
# Frames ZeroMQ may queue for the recorder (the dataflow's source keeps 2).
RECEIVE_HWM = 256
# Frames received but not yet written; beyond this the recorder stops reading and
# lets ZeroMQ queue, rather than holding more decoded images in memory.
MAX_PENDING = 16
ENCODE_THREADS = 2
POLL_MS = 50
PROGRESS_INTERVAL_S = 1.0

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_USAGE = 2

Payload = Union[bytes, "Future[bytes]"]


@dataclass
class RecordSummary:
    path: str
    address: str
    frames: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    lost_frames: int = 0
    gaps: int = 0
    malformed: Dict[str, int] = field(default_factory=dict)
    first_frame_id: Optional[int] = None
    last_frame_id: Optional[int] = None
    end_reason: str = ""
    error: Optional[str] = None

    def line(self) -> str:
        rate = self.frames / self.duration_s if self.duration_s > 0 else 0.0
        text = (
            f"record: {self.frames} frames, {self.bytes / 1e6:.1f} MB in {self.duration_s:.1f} s "
            f"({rate:.1f} fps) from {self.address} to {self.path}; "
            f"{self.lost_frames} frame(s) lost on the wire in {self.gaps} gap(s)"
        )
        if self.malformed:
            text += "; malformed messages: " + ", ".join(f"{k}={v}" for k, v in sorted(self.malformed.items()))
        return text + f"; ended: {self.end_reason}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Recorder:
    """Records one publisher to one file; :meth:`run` blocks until the recording ends.

    ``frames_written`` may be read from another thread while it runs.
    """

    def __init__(
        self,
        address: str,
        path: Union[str, Path],
        *,
        duration_s: Optional[float] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        encoding: str = DEFAULT_ENCODING,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        overwrite: bool = False,
        progress: Callable[[str], None] = _stderr,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        receive_hwm: int = RECEIVE_HWM,
    ) -> None:
        zmq_address(address, "frame publisher")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg quality must be 1-100, got {jpeg_quality}")
        if duration_s is not None and not duration_s > 0:
            raise ValueError(f"duration must be positive, got {duration_s}")
        if max_bytes <= 0:
            raise ValueError(f"max bytes must be positive, got {max_bytes}")
        self.address = address
        self.path = Path(path)
        self.duration_s = duration_s
        self.max_bytes = max_bytes
        self.encoding = encoding
        self.jpeg_quality = jpeg_quality
        self.overwrite = overwrite
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.receive_hwm = receive_hwm
        self.frames_written = 0
        self._summary = RecordSummary(str(self.path), address)
        self._last_id: Optional[int] = None
        self._pending: Deque[Tuple[int, int, int, int, int, Payload]] = deque()

    # -------------------------------------------------------------- running

    def run(self, stop_event: Optional[threading.Event] = None) -> RecordSummary:
        """Record until the end condition; raises FileExistsError / OSError before the first frame only."""
        stop = stop_event or threading.Event()
        started = time.monotonic()
        context = zmq.Context()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.receive_hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, FRAME_TOPIC)
        try:
            sock.connect(self.address)
            # Created after connecting, so a bad address leaves no empty recording behind.
            writer = RecordingWriter(self.path, self._metadata(), max_bytes=self.max_bytes, overwrite=self.overwrite)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            context.term()
            raise ValueError(f"cannot connect to frame publisher {self.address!r}: {exc}") from exc
        except BaseException:
            sock.close(linger=0)
            context.term()
            raise
        executor = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="record-encode") if self.encoding != "raw" else None
        summary = self._summary
        try:
            self.progress(f"record: recording {self.address} to {self.path} ({self._describe_encoding()})")
            summary.end_reason = self._loop(sock, writer, executor, stop, started)
        except KeyboardInterrupt:
            summary.end_reason = "interrupted"
        except RecordingFullError as exc:
            summary.end_reason = "max_bytes"
            self.progress(f"record: stopped: {exc}")
        except RecordingWriteError as exc:
            summary.end_reason = "write_failed"
            summary.error = str(exc)
        finally:
            self._pending.clear()
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            sock.close(linger=0)
            context.term()
            writer.close()
            summary.duration_s = time.monotonic() - started
            summary.bytes = writer.size + writer.index_size
            summary.frames = writer.frames
            summary.first_frame_id = writer.first_frame_id
            summary.last_frame_id = writer.last_frame_id
        return summary

    def _loop(
        self,
        sock: zmq.Socket,
        writer: RecordingWriter,
        executor: Optional[ThreadPoolExecutor],
        stop: threading.Event,
        started: float,
    ) -> str:
        deadline = None if self.duration_s is None else started + self.duration_s
        next_progress = time.monotonic() + self.progress_interval_s
        progress_mark = (time.monotonic(), 0)
        while True:
            if stop.is_set():
                self._write_ready(writer, wait_all=True)
                return "stopped"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._write_ready(writer, wait_all=True)
                return "duration"
            if now >= next_progress:
                progress_mark = self._report_progress(writer, progress_mark)
                next_progress = now + self.progress_interval_s
            wait_ms = POLL_MS if deadline is None else max(0, min(POLL_MS, int((deadline - now) * 1000)))
            if sock.poll(wait_ms):
                for parts in self._drain(sock):
                    reason = self._accept(parts, executor)
                    if reason is not None:
                        self._write_ready(writer, wait_all=True)
                        return reason
                    # Keep memory bounded: wait for encodes instead of reading further.
                    self._write_ready(writer, wait_all=len(self._pending) >= MAX_PENDING)
            self._write_ready(writer, wait_all=False)

    @staticmethod
    def _drain(sock: zmq.Socket) -> Iterator[List[bytes]]:
        while True:
            try:
                yield sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return

    def _accept(self, parts: List[bytes], executor: Optional[ThreadPoolExecutor]) -> Optional[str]:
        """Queue one message for writing; returns an end reason when the stream cannot go on in this file."""
        summary = self._summary
        try:
            frame_id, t_ns, image = unpack_frame(parts)
        except WireError as exc:
            summary.malformed[exc.kind] = summary.malformed.get(exc.kind, 0) + 1
            return None
        last = self._last_id
        if last is not None and frame_id <= last:
            self.progress(
                f"record: the publisher restarted (frame id {frame_id} after {last}); "
                f"ending this recording, start a new one for the new run"
            )
            return "publisher_restart"
        gap = frame_gap(last, frame_id)
        if gap is not None:
            summary.lost_frames += gap.count
            summary.gaps += 1
        self._last_id = frame_id
        width, height, channels = image_geometry(image)
        payload: Payload
        if executor is None:
            payload = bytes(parts[2])  # raw: exactly the bytes received
        else:
            payload = executor.submit(encode_image, image, self.encoding, self.jpeg_quality)
        self._pending.append((frame_id, t_ns, width, height, channels, payload))
        return None

    def _write_ready(self, writer: RecordingWriter, wait_all: bool) -> None:
        """Write queued frames in arrival order: the encoded ones, or all when ``wait_all``."""
        while self._pending:
            frame_id, t_ns, width, height, channels, payload = self._pending[0]
            if isinstance(payload, Future):
                if not wait_all and not payload.done():
                    return
                data = payload.result()
            else:
                data = payload
            self._pending.popleft()
            writer.append(frame_id, t_ns, width, height, channels, self.encoding, data)
            self.frames_written = writer.frames

    def _report_progress(self, writer: RecordingWriter, mark: Tuple[float, int]) -> Tuple[float, int]:
        now = time.monotonic()
        elapsed = now - mark[0]
        rate = (writer.frames - mark[1]) / elapsed if elapsed > 0 else 0.0
        lost = self._summary.lost_frames
        self.progress(
            f"record: {writer.frames} frames, {(writer.size + writer.index_size) / 1e6:.1f} MB, "
            f"{rate:.1f} fps" + (f", {lost} lost on the wire" if lost else "")
        )
        return now, writer.frames

    def _metadata(self) -> Dict[str, Any]:
        now = time.time_ns()
        meta: Dict[str, Any] = {
            "stream": self.address,
            "start_wall_ns": now,
            "start_wall": datetime.fromtimestamp(now / 1e9, timezone.utc).isoformat(),
            "encoding": self.encoding,
        }
        if self.encoding == "jpeg":
            meta["jpeg_quality"] = self.jpeg_quality
        return meta

    def _describe_encoding(self) -> str:
        if self.encoding == "jpeg":
            return f"jpeg quality {self.jpeg_quality}"
        return self.encoding


# ------------------------------------------------------------------ CLI

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from ``2147483648``, ``500M``, ``2G``, ``1.5GiB`` (binary units)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    try:
        size = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 2147483648, 500M or 2G") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def _quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"jpeg quality must be an integer 1-100, got {text!r}")
    return value


def add_record_args(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``facemoment record`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "record",
        help="record a frame publisher to a file (replay it with 'process' or 'daemon --source')",
        description="Subscribe to a frame publisher and write every frame it sends to a recording file.",
    )
    p.add_argument("address", help="the frame publisher, e.g. tcp://127.0.0.1:5555")
    p.add_argument("-o", "--output", required=True, help="recording file to create, e.g. cam0.fmrec")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help="stop before the recording plus its index would exceed N bytes (500M, 2G; default 2G)",
    )
    p.add_argument("--encoding", choices=list(ENCODINGS), default=DEFAULT_ENCODING, help="frame payloads (default jpeg)")
    p.add_argument(
        "--jpeg-quality", type=_quality, default=DEFAULT_JPEG_QUALITY, metavar="Q", help="JPEG quality 1-100 (default 95)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing recording")
    p.set_defaults(func=record_main)
    return p


@dataclass
class _Signals:
    """Ctrl-C and SIGTERM set the stop event, so no write is cut in half; a second Ctrl-C aborts."""

    stop: threading.Event
    previous: Dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def record_main(
    args: argparse.Namespace,
    stop_event: Optional[threading.Event] = None,
    progress: Callable[[str], None] = _stderr,
) -> int:
    """Run ``facemoment record`` from parsed arguments; returns the exit code."""
    stop = stop_event or threading.Event()
    try:
        # Resolved like every source (connectors/sources.py); only a publisher can be recorded.
        spec = stream_spec("record", args.address)
        if spec.kind != "zmq":
            raise ValueError(f"{args.address!r} is a {spec.kind} source; record a frame publisher (tcp://host:port)")
        recorder = Recorder(
            spec.source,
            args.output,
            duration_s=args.duration,
            max_bytes=args.max_bytes,
            encoding=args.encoding,
            jpeg_quality=args.jpeg_quality,
            overwrite=args.overwrite,
            progress=progress,
        )
        with _Signals(stop):
            summary = recorder.run(stop)
    except FileExistsError as exc:
        progress(f"facemoment record: {exc.strerror or exc}; pass --overwrite to replace it")
        return EXIT_USAGE
    except ValueError as exc:
        progress(f"facemoment record: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        progress(f"facemoment record: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_WRITE_FAILED
    progress(summary.line())
    if summary.error:
        progress(f"facemoment record: {summary.error}")
        return EXIT_WRITE_FAILED
    return EXIT_OK
