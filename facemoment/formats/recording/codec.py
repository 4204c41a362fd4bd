"""The recording's byte layout: the file header, one record per frame, the pixel encodings and the checks every record passes."""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import cv2
import numpy as np

MAGIC = b"FMREC\r\n\x1a"  # 8 bytes; \r\n and \x1a catch text-mode transfers


VERSION = 1


RECORDING_SUFFIX = ".fmrec"


INDEX_SUFFIX = ".idx"


FILE_HEADER = struct.Struct("!8sHI")  # magic, version, metadata length


CRC = struct.Struct("!I")


RECORD_PREFIX = struct.Struct("!II")  # body length, CRC32 of the body


RECORD_FIELDS = struct.Struct("!QQIIBB")  # frame_id, t_src_ns, width, height, channels, encoding


RECORD_HEADER_SIZE = RECORD_PREFIX.size + RECORD_FIELDS.size


MAX_METADATA_BYTES = 1 << 20


MAX_DIMENSION = 16384


VALID_CHANNELS = (1, 3)


U64_MAX = (1 << 64) - 1


INDEX_MAGIC = b"FMIDX\r\n\x1a"


INDEX_HEADER = struct.Struct("!8sHHI")  # magic, version, entry size, CRC32 of the recording's header


INDEX_ENTRY = np.dtype([("frame_id", ">u8"), ("t_ns", ">u8"), ("offset", ">u8")])


# The writer appends index entries after this many records or seconds, whichever comes first.
INDEX_FLUSH_RECORDS = 32


INDEX_FLUSH_SECONDS = 1.0


ENCODINGS: Dict[str, int] = {"raw": 0, "jpeg": 1, "png": 2}


ENCODING_NAMES = {code: name for name, code in ENCODINGS.items()}


DEFAULT_ENCODING = "jpeg"


DEFAULT_JPEG_QUALITY = 95


# zlib level 1: lossless like every level, and fast enough for live streams.
PNG_COMPRESSION = 1


# What a damaged record can be; a reader that reads on counts them by these names.
DAMAGE_KINDS = ("cut_short", "bad_header", "crc", "out_of_order", "undecodable")


class RecordingError(Exception):
    """A recording that cannot be read at ``offset`` (bytes from the start of ``path``).

    ``kind`` is one of :data:`DAMAGE_KINDS` for a damaged record, ``file_header``
    for a file that cannot be read at all.
    """

    def __init__(self, path: Union[str, Path], offset: int, reason: str, kind: str = "file_header") -> None:
        super().__init__(f"recording {path}: {reason} at byte offset {offset}")
        self.path = str(path)
        self.offset = offset
        self.reason = reason
        self.kind = kind


class RecordingWriteError(OSError):
    """Writing a recording failed (e.g. a full disk); the file holds every complete record before it."""

    def __init__(self, path: Union[str, Path], cause: OSError, detail: str) -> None:
        super().__init__(cause.errno, detail)
        self.path = str(path)
        self.disk_full = cause.errno == errno.ENOSPC

    def __str__(self) -> str:
        return str(self.strerror)


class RecordingFullError(Exception):
    """The next record would take the recording past its byte limit; nothing was written."""


def encode_image(image: np.ndarray, encoding: str = DEFAULT_ENCODING, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """The payload of one frame: JPEG/PNG bytes, or the pixels as they are for ``raw``."""
    if encoding == "raw":
        return np.ascontiguousarray(image).tobytes()
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif encoding == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {encoding}")
    return buf.tobytes()


def image_geometry(image: np.ndarray) -> Tuple[int, int, int]:
    """(width, height, channels) of a uint8 grey or BGR image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in VALID_CHANNELS):
        raise ValueError(f"frames must be uint8 (h, w) or (h, w, 3) images, got {image.dtype} {image.shape}")
    channels = 1 if image.ndim == 2 else int(image.shape[2])
    return int(image.shape[1]), int(image.shape[0]), channels


def _max_payload(encoding: int, width: int, height: int, channels: int) -> int:
    raw = width * height * channels
    # A compressed frame of pure noise can come out larger than its pixels.
    return raw if encoding == ENCODINGS["raw"] else 2 * raw + 65536


@dataclass(frozen=True)
class Record:
    """One stored frame; ``payload`` is still encoded (see :meth:`image`)."""

    offset: int
    size: int  # bytes the record takes in the file
    frame_id: int
    t_src_ns: int
    width: int
    height: int
    channels: int
    encoding: int
    payload: memoryview
    path: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def encoding_name(self) -> str:
        return ENCODING_NAMES[self.encoding]

    def image(self) -> np.ndarray:
        """The decoded pixels, (h, w) or (h, w, 3) uint8, writable."""
        shape = (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)
        if self.encoding == ENCODINGS["raw"]:
            return np.frombuffer(self.payload, dtype=np.uint8).reshape(shape)
        image = cv2.imdecode(np.frombuffer(self.payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.shape != shape:
            got = "nothing" if image is None else f"shape {image.shape}"
            raise RecordingError(
                self.path,
                self.offset,
                f"{self.encoding_name} payload of frame {self.frame_id} decodes to {got}, expected {shape}",
                "undecodable",
            )
        return image


def _check_fields(
    path: str, offset: int, body_len: int, fields: Tuple[int, ...], previous_id: Optional[int]
) -> None:
    frame_id, _t, width, height, channels, encoding = fields
    if encoding not in ENCODING_NAMES:
        raise RecordingError(path, offset, f"bad record header: unknown encoding {encoding}", "bad_header")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION) or channels not in VALID_CHANNELS:
        raise RecordingError(
            path, offset, f"bad record header: width={width} height={height} channels={channels}", "bad_header"
        )
    payload_len = body_len - RECORD_FIELDS.size
    limit = _max_payload(encoding, width, height, channels)
    if payload_len <= 0 or payload_len > limit or (encoding == ENCODINGS["raw"] and payload_len != limit):
        raise RecordingError(
            path,
            offset,
            f"bad record header: length {body_len} does not fit a {width}x{height}x{channels} "
            f"{ENCODING_NAMES[encoding]} frame",
            "bad_header",
        )
    if previous_id is not None and frame_id <= previous_id:
        raise RecordingError(
            path, offset, f"bad record header: frame id {frame_id} does not follow frame id {previous_id}", "out_of_order"
        )


def _header_bytes(metadata: Dict[str, Any]) -> bytes:
    meta = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(meta) > MAX_METADATA_BYTES:
        raise ValueError(f"recording metadata is {len(meta)} bytes, at most {MAX_METADATA_BYTES}")
    head = FILE_HEADER.pack(MAGIC, VERSION, len(meta)) + meta
    return head + CRC.pack(zlib.crc32(head))


def index_path(path: Union[str, Path]) -> Path:
    return Path(f"{os.fspath(path)}{INDEX_SUFFIX}")


def is_recording(source: Union[str, Path]) -> bool:
    """Whether ``source`` names an existing file starting with the recording magic."""
    text = os.fspath(source)
    if not text or "://" in text or text == "sample" or text.isdigit():
        return False
    try:
        with open(os.path.expanduser(text), "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:  # missing, a directory, unreadable: not a recording we can use
        return False
