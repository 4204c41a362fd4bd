"""visualbase's proxy pipe format: the frames its ``ingest --proxy`` writes to a FIFO.

Each frame is one write of a 20-byte little-endian header and a JPEG::

    struct.pack("<IQQ", len(jpeg), frame_id, t_src_ns) + jpeg

(/work/shared/spec/visualbase-protocol.md, "Frames: A -> B over a named pipe").
A pipe is a byte stream: reads return pieces of frames, so :class:`ProxyFrameParser`
reassembles them. The format has no marker to find a frame by, so after a header
that cannot be right (a JPEG length over the limit, a payload that does not start
like a JPEG) the parser looks for the next place where a plausible header is
followed by a JPEG's start-of-image bytes, and carries on from there.

Errors are :class:`facemoment.formats.wire.WireError` with the kinds in
``PROXY_ERROR_KINDS``, counted by the source like malformed ZeroMQ frames.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import List, Optional, Tuple, Union

import numpy as np

from facemoment.formats.wire import WireError

PROXY_HEADER = struct.Struct("<IQQ")  # jpeg length, frame_id, t_src_ns
JPEG_SOI = b"\xff\xd8\xff"  # every JPEG starts with SOI and a marker
DEFAULT_JPEG_QUALITY = 85  # visualbase's proxy quality
DEFAULT_MAX_JPEG_BYTES = 32 * 1024 * 1024

FIFO_SCHEME = "fifo://"

# too_large: a header's length over the limit; bad_header: a payload that is not a
# JPEG (the framing is lost there); jpeg: a JPEG that does not decode.
PROXY_ERROR_KINDS = ("too_large", "bad_header", "jpeg")

# A proxy frame as read: (frame_id, t_src_ns, jpeg bytes).
ProxyFrame = Tuple[int, int, bytes]


def pack_proxy_frame(frame_id: int, t_src_ns: int, jpeg: bytes) -> bytes:
    """The bytes visualbase writes for one frame."""
    return PROXY_HEADER.pack(len(jpeg), int(frame_id), int(t_src_ns)) + bytes(jpeg)


def encode_proxy_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return data.tobytes()


def decode_proxy_jpeg(jpeg: bytes) -> np.ndarray:
    """The BGR image of a proxy JPEG; WireError ``jpeg`` when it does not decode."""
    import cv2

    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise WireError("jpeg", f"{len(jpeg)} bytes that do not decode as a JPEG")
    return image


def fifo_path(source: str) -> str:
    """The FIFO's path of a ``fifo:///path`` source (a plain path is itself)."""
    return source[len(FIFO_SCHEME):] if source.startswith(FIFO_SCHEME) else source


def is_fifo(path: str) -> bool:
    """Whether a FIFO is at ``path`` now. Looks at the path without opening it: opening
    a proxy FIFO and closing it unread breaks visualbase's writer for good."""
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class ProxyFrameParser:
    """Bytes in (any pieces), whole frames and framing errors out, in stream order."""

    def __init__(self, max_jpeg_bytes: Optional[int] = DEFAULT_MAX_JPEG_BYTES) -> None:
        self.max_jpeg_bytes = max_jpeg_bytes
        self._buffer = bytearray()
        self._resyncing = False

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        """Forget a partial frame (the writer went away mid-frame)."""
        self._buffer.clear()
        self._resyncing = False

    def feed(self, data: bytes) -> List[Union[ProxyFrame, WireError]]:
        self._buffer += data
        out: List[Union[ProxyFrame, WireError]] = []
        while True:
            if self._resyncing and not self._resync():
                return out
            if len(self._buffer) < PROXY_HEADER.size:
                return out
            length, frame_id, t_src_ns = PROXY_HEADER.unpack_from(self._buffer)
            error = self._header_error(length)
            if error is not None:
                out.append(error)
                self._skip_to_next_header(1)
                continue
            have = len(self._buffer) - PROXY_HEADER.size
            start = PROXY_HEADER.size
            if length >= len(JPEG_SOI) and have < len(JPEG_SOI):
                return out
            if length < len(JPEG_SOI) or bytes(self._buffer[start : start + len(JPEG_SOI)]) != JPEG_SOI:
                out.append(WireError("bad_header", f"frame {frame_id}: {length} bytes that do not start like a JPEG"))
                self._skip_to_next_header(1)
                continue
            if have < length:
                return out
            jpeg = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            out.append((frame_id, t_src_ns, jpeg))

    def _header_error(self, length: int) -> Optional[WireError]:
        if self.max_jpeg_bytes is not None and length > self.max_jpeg_bytes:
            return WireError("too_large", f"a JPEG of {length} bytes is over the limit of {self.max_jpeg_bytes}")
        return None

    def _skip_to_next_header(self, start: int) -> None:
        del self._buffer[:start]
        self._resyncing = True

    def _resync(self) -> bool:
        """Drop bytes up to the next plausible header followed by a JPEG start; True once found."""
        search_from = PROXY_HEADER.size
        while True:
            at = self._buffer.find(JPEG_SOI, search_from)
            if at < 0:
                # Keep the tail that could still hold the start of a header and an SOI.
                keep = PROXY_HEADER.size + len(JPEG_SOI) - 1
                if len(self._buffer) > keep:
                    del self._buffer[: len(self._buffer) - keep]
                return False
            header_at = at - PROXY_HEADER.size
            length, _, _ = PROXY_HEADER.unpack_from(self._buffer, header_at)
            if length >= len(JPEG_SOI) and self._header_error(length) is None:
                del self._buffer[:header_at]
                self._resyncing = False
                return True
            search_from = at + 1


__all__ = [
    "FIFO_SCHEME",
    "PROXY_HEADER",
    "PROXY_ERROR_KINDS",
    "DEFAULT_JPEG_QUALITY",
    "ProxyFrameParser",
    "ProxyFrame",
    "pack_proxy_frame",
    "encode_proxy_jpeg",
    "decode_proxy_jpeg",
    "fifo_path",
    "is_fifo",
]
