"""A stand-in for `visualbase ingest SOURCE --proxy NAME:PATH:W:H:FPS ... --trig-socket PATH`,
written from the protocol (shared/spec/visualbase-protocol.md, "Frames: A -> B over a
named pipe" and "OBS and TRIG over Unix datagram sockets"):

- per proxy, a writer thread removes any file at PATH, creates the FIFO, blocks in
  ``open()`` until a reader opens it, then writes each frame scaled to W x H and
  sampled down to FPS as ONE write of ``struct.pack("<IQQ", len(jpeg), frame_id,
  t_src_ns)`` and the JPEG (quality 85); frame ids and times are the full stream's;
  a broken pipe is logged and the writer does not reopen; the FIFO is removed when
  the writer closes;
- the TRIG socket: an AF_UNIX SOCK_DGRAM socket bound at the path (a stale file
  removed first), read 64 KiB per datagram.

Nothing here imports the project's proxy codec: the bytes are built from the spec.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import cv2
import numpy as np

JPEG_QUALITY = 85

# (frame_id, t_src_ns, BGR image) of the full-resolution stream.
SourceFrame = Tuple[int, int, np.ndarray]


@dataclass
class Proxy:
    name: str
    path: str
    width: int
    height: int
    fps: float
    written: List[int] = field(default_factory=list)  # frame ids written
    error: Optional[str] = None

    @classmethod
    def parse(cls, spec: str) -> "Proxy":
        """``NAME:PATH:W:H:FPS``, as ingest's --proxy takes it."""
        name, path, width, height, fps = spec.split(":")
        return cls(name, path, int(width), int(height), float(fps))


def proxy_frame_bytes(frame_id: int, t_src_ns: int, image: np.ndarray, width: int, height: int) -> bytes:
    if image.shape[1] != width or image.shape[0] != height:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    assert ok
    data = jpeg.tobytes()
    return struct.pack("<IQQ", len(data), frame_id, t_src_ns) + data


def sampled(frames: Iterable[SourceFrame], fps: float) -> Iterable[SourceFrame]:
    """The frames a proxy at ``fps`` keeps: the first one at or after each period."""
    period_ns = int(round(1e9 / fps))
    due: Optional[int] = None
    for frame in frames:
        t_ns = frame[1]
        if due is None or t_ns >= due:
            due = (t_ns if due is None else due) + period_ns
            yield frame


class StandInIngest:
    def __init__(self, frames: List[SourceFrame], proxies: List[Proxy], trig_socket: str) -> None:
        self.frames = frames
        self.proxies = proxies
        self.trig_socket = trig_socket
        self.trig_messages: List[str] = []
        if os.path.exists(trig_socket):
            os.unlink(trig_socket)
        self._trig = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._trig.bind(trig_socket)
        self._trig.settimeout(0.1)
        self._stop = threading.Event()
        self._fifos_made = threading.Barrier(len(proxies) + 1)
        self._threads = [threading.Thread(target=self._write, args=(p,), daemon=True) for p in proxies]
        self._trig_thread = threading.Thread(target=self._read_trig, daemon=True)

    def start(self) -> "StandInIngest":
        self._trig_thread.start()
        for thread in self._threads:
            thread.start()
        self._fifos_made.wait(timeout=30)  # every FIFO exists from here on
        return self

    def _write(self, proxy: Proxy) -> None:
        if os.path.lexists(proxy.path):
            os.unlink(proxy.path)
        os.mkfifo(proxy.path)
        self._fifos_made.wait(timeout=30)
        fd = os.open(proxy.path, os.O_WRONLY)  # blocks until a reader opens it
        try:
            for frame_id, t_ns, image in sampled(self.frames, proxy.fps):
                data = memoryview(proxy_frame_bytes(frame_id, t_ns, image, proxy.width, proxy.height))
                while data:
                    data = data[os.write(fd, data):]
                proxy.written.append(frame_id)
        except BrokenPipeError as exc:
            proxy.error = f"FIFO reader disconnected: {exc}"  # ingest logs it and does not reopen
        finally:
            os.close(fd)
            os.unlink(proxy.path)

    def _read_trig(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._trig.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.trig_messages.append(data.decode("utf-8"))

    def join_writers(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a proxy writer is still waiting for its reader"

    def close(self) -> List[str]:
        """Stop reading TRIG (taking what is queued) and remove the socket file."""
        self._stop.set()
        self._trig_thread.join(5)
        self._trig.setblocking(False)
        while True:
            try:
                data, _ = self._trig.recvfrom(65536)
            except (BlockingIOError, socket.timeout):
                break
            self.trig_messages.append(data.decode("utf-8"))
        self._trig.close()
        if os.path.exists(self.trig_socket):
            os.unlink(self.trig_socket)
        return self.trig_messages
