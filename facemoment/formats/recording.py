"""Recordings of a frame stream: one append-only file plus a sidecar index.

The byte layout is documented in docs/recording.md.  In short::

    header   magic "FMREC\\r\\n\\x1a", u16 version, u32 M, M bytes of JSON metadata,
             u32 CRC32 of everything before it
    record*  u32 L, u32 CRC32(body), body = u64 frame_id, u64 t_src_ns, u32 width,
             u32 height, u8 channels, u8 encoding, payload (L - 26 bytes)

All integers are big-endian, like the visualbase frame header.  Frames keep the
ids and timestamps they arrived with; ids strictly increase within a file, which
makes the index (``PATH.idx``: frame_id, t_src_ns, offset per record) searchable
by frame id.

- :class:`RecordingWriter` appends records; a failed write (a full disk) cuts the
  file back to its last complete record, so the file stays readable.
- :class:`RecordingReader` reads records from an offset; damage (a CRC mismatch,
  a record cut short, impossible header fields) raises :class:`RecordingError`
  naming the byte offset, after every record before it was returned.
- :func:`load_index` loads the sidecar index, extending or rebuilding it by
  scanning when it is missing, stale or shorter than the data.
- :class:`RecordingFrameReader` has the interface of ``facemoment.formats.frames.FrameReader``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Optional, Tuple, Union

import cv2
import numpy as np

try:  # advisory locks keep a reader from replacing the index of a file being recorded
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

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


class RecordingError(Exception):
    """A recording that cannot be read at ``offset`` (bytes from the start of ``path``)."""

    def __init__(self, path: Union[str, Path], offset: int, reason: str) -> None:
        super().__init__(f"recording {path}: {reason} at byte offset {offset}")
        self.path = str(path)
        self.offset = offset
        self.reason = reason


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


# ------------------------------------------------------------------ pixels


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


# ------------------------------------------------------------------ records


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
                self.path, self.offset, f"{self.encoding_name} payload of frame {self.frame_id} decodes to {got}, expected {shape}"
            )
        return image


def _check_fields(
    path: str, offset: int, body_len: int, fields: Tuple[int, ...], previous_id: Optional[int]
) -> None:
    frame_id, _t, width, height, channels, encoding = fields
    if encoding not in ENCODING_NAMES:
        raise RecordingError(path, offset, f"bad record header: unknown encoding {encoding}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION) or channels not in VALID_CHANNELS:
        raise RecordingError(
            path, offset, f"bad record header: width={width} height={height} channels={channels}"
        )
    payload_len = body_len - RECORD_FIELDS.size
    limit = _max_payload(encoding, width, height, channels)
    if payload_len <= 0 or payload_len > limit or (encoding == ENCODINGS["raw"] and payload_len != limit):
        raise RecordingError(
            path,
            offset,
            f"bad record header: length {body_len} does not fit a {width}x{height}x{channels} "
            f"{ENCODING_NAMES[encoding]} frame",
        )
    if previous_id is not None and frame_id <= previous_id:
        raise RecordingError(
            path, offset, f"bad record header: frame id {frame_id} does not follow frame id {previous_id}"
        )


def _header_bytes(metadata: Dict[str, Any]) -> bytes:
    meta = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(meta) > MAX_METADATA_BYTES:
        raise ValueError(f"recording metadata is {len(meta)} bytes, at most {MAX_METADATA_BYTES}")
    head = FILE_HEADER.pack(MAGIC, VERSION, len(meta)) + meta
    return head + CRC.pack(zlib.crc32(head))


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write every byte (a raw file may take fewer per call)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


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


# ------------------------------------------------------------------ writer


class RecordingWriter:
    """Appends frames to a new recording and keeps its index.

    :arg metadata: JSON-able facts stored in the header (stream address, start time...).
    :arg max_bytes: bound on recording plus index; :meth:`append` raises
        :class:`RecordingFullError` (writing nothing) when a record would pass it.
    :arg overwrite: replace an existing file instead of refusing.
    """

    def __init__(
        self,
        path: Union[str, Path],
        metadata: Optional[Dict[str, Any]] = None,
        *,
        max_bytes: Optional[int] = None,
        overwrite: bool = False,
        index_flush_records: int = INDEX_FLUSH_RECORDS,
        index_flush_seconds: float = INDEX_FLUSH_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.index_path = index_path(self.path)
        self.max_bytes = max_bytes
        self.metadata = {"format": "facemoment-recording", "created_ns": time.time_ns(), **(metadata or {})}
        self._flush_records = max(1, index_flush_records)
        self._flush_seconds = index_flush_seconds
        self._pending_index: list = []
        self._last_index_flush = time.monotonic()
        self.frames = 0
        self.last_frame_id: Optional[int] = None
        self.first_frame_id: Optional[int] = None
        self.failed = False
        self._closed = False
        header = _header_bytes(self.metadata)
        self.header_crc = CRC.unpack(header[-CRC.size:])[0]
        try:
            # Append mode: every write lands at the end, also after a cut; "x" refuses an existing file.
            self._file: BinaryIO = open(self.path, "ab" if overwrite else "xb", buffering=0)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, f"{self.path} already exists") from None
        try:
            _lock(self._file, f"{self.path} is being recorded by another process")
            os.ftruncate(self._file.fileno(), 0)  # only now: never truncate a file someone else records
            self._index: BinaryIO = open(self.index_path, "wb", buffering=0)
        except BaseException:
            self._file.close()
            raise
        self.size = 0
        self.index_size = 0
        try:
            self._write_data(header)
            self._write_index(INDEX_HEADER.pack(INDEX_MAGIC, VERSION, INDEX_ENTRY.itemsize, self.header_crc))
        except RecordingWriteError:
            self._abandon()
            raise
        self.header_size = self.size

    # -------------------------------------------------------------- sizes

    @staticmethod
    def record_size(payload_len: int) -> int:
        return RECORD_HEADER_SIZE + payload_len

    @property
    def total_bytes(self) -> int:
        """Recording plus index, including index entries not flushed yet."""
        return self.size + self.index_size + len(self._pending_index) * INDEX_ENTRY.itemsize

    def fits(self, payload_len: int) -> bool:
        if self.max_bytes is None:
            return True
        return self.total_bytes + self.record_size(payload_len) + INDEX_ENTRY.itemsize <= self.max_bytes

    # -------------------------------------------------------------- appending

    def append_image(
        self,
        frame_id: int,
        t_src_ns: int,
        image: np.ndarray,
        encoding: str = DEFAULT_ENCODING,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    ) -> int:
        width, height, channels = image_geometry(image)
        payload = encode_image(image, encoding, jpeg_quality)
        return self.append(frame_id, t_src_ns, width, height, channels, encoding, payload)

    def append(
        self,
        frame_id: int,
        t_src_ns: int,
        width: int,
        height: int,
        channels: int,
        encoding: str,
        payload: bytes,
    ) -> int:
        """Append one record; returns its offset."""
        if self._closed or self.failed:
            raise ValueError(f"recording {self.path} is closed")
        code = ENCODINGS.get(encoding)
        if code is None:
            raise ValueError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
        if not (0 <= frame_id <= U64_MAX and 0 <= t_src_ns <= U64_MAX):
            raise ValueError(f"frame id {frame_id} and timestamp {t_src_ns} must fit an unsigned 64-bit integer")
        fields = (int(frame_id), int(t_src_ns), int(width), int(height), int(channels), code)
        body_len = RECORD_FIELDS.size + len(payload)
        try:
            _check_fields(str(self.path), self.size, body_len, fields, self.last_frame_id)
        except RecordingError as exc:
            raise ValueError(exc.reason) from None
        if not self.fits(len(payload)):
            raise RecordingFullError(
                f"the next record ({self.record_size(len(payload))} bytes) would take {self.path} "
                f"past its limit of {self.max_bytes} bytes"
            )
        packed = RECORD_FIELDS.pack(*fields)
        crc = zlib.crc32(payload, zlib.crc32(packed))
        offset = self.size
        self._write_data(b"".join((RECORD_PREFIX.pack(body_len, crc), packed, payload)))
        self.frames += 1
        self.last_frame_id = int(frame_id)
        if self.first_frame_id is None:
            self.first_frame_id = int(frame_id)
        self._pending_index.append((int(frame_id), int(t_src_ns), offset))
        if len(self._pending_index) >= self._flush_records or time.monotonic() - self._last_index_flush >= self._flush_seconds:
            self.flush_index()
        return offset

    def _write_data(self, data: bytes) -> None:
        self._write(self._file, self.path, self.size, data)
        self.size += len(data)

    def _write_index(self, data: bytes) -> None:
        self._write(self._index, self.index_path, self.index_size, data)
        self.index_size += len(data)

    def _write(self, file: BinaryIO, where: Path, size: int, data: bytes) -> None:
        try:
            _write_all(file, data)
        except OSError as exc:
            self.failed = True
            self._cut(file, size)
            raise RecordingWriteError(where, exc, self._failure_text(exc, where)) from exc
        except BaseException:  # e.g. a second Ctrl-C: still end the file at a complete record
            self._cut(file, size)
            raise

    def _failure_text(self, exc: OSError, where: Path) -> str:
        kept = f"{self.path} keeps its {self.frames} complete frame(s)"
        if self.last_frame_id is not None:
            kept += f" up to frame id {self.last_frame_id}"
        if exc.errno == errno.ENOSPC:
            return f"disk full while writing {where}; {kept}"
        return f"cannot write {where}: {exc.strerror or exc}; {kept}"

    @staticmethod
    def _cut(file: BinaryIO, size: int) -> None:
        """Drop a partly written record so the file ends with a complete one."""
        try:
            os.ftruncate(file.fileno(), size)
            file.seek(size)
        except OSError as exc:  # the reader still stops cleanly at the cut record
            log.error("cannot cut %s back to %d bytes: %s", getattr(file, "name", file), size, exc)

    def flush_index(self) -> None:
        if not self._pending_index:
            return
        entries = np.array(self._pending_index, dtype=INDEX_ENTRY)
        self._pending_index = []
        self._last_index_flush = time.monotonic()
        self._write_index(entries.tobytes())

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        """Flush the index and close; safe to call more than once and after a failure."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.failed:
                self.flush_index()
        except RecordingWriteError as exc:
            # The data is complete; readers rebuild a short index by scanning.
            log.error("%s; the index will be rebuilt when the recording is read", exc)
        finally:
            for file in (self._file, self._index):
                try:
                    if not self.failed:
                        os.fsync(file.fileno())
                except OSError:
                    pass
                file.close()

    def _abandon(self) -> None:
        """A header that could not be written leaves nothing worth keeping."""
        self._closed = True
        for file, path in ((self._file, self.path), (self._index, self.index_path)):
            file.close()
            try:
                os.unlink(path)
            except OSError:
                pass

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(file: BinaryIO, busy: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(errno.EBUSY, busy) from None


# ------------------------------------------------------------------ reader


class RecordingReader:
    """Reads a recording's header and its records; raises :class:`RecordingError` on damage."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self._file: BinaryIO = open(self.path, "rb")
        try:
            self.metadata, self.data_offset, self.header_crc = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self._index: Optional["RecordingIndex"] = None

    def _read_header(self) -> Tuple[Dict[str, Any], int, int]:
        f = self._file
        head = f.read(FILE_HEADER.size)
        if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise RecordingError(self.path, 0, "not a FaceMoment recording (bad magic)")
        if len(head) < FILE_HEADER.size:
            raise RecordingError(self.path, len(head), "the file header is cut short")
        _, version, meta_len = FILE_HEADER.unpack(head)
        if version != VERSION:
            raise RecordingError(self.path, len(MAGIC), f"unsupported recording version {version} (this reader knows {VERSION})")
        if meta_len > MAX_METADATA_BYTES:
            raise RecordingError(self.path, len(MAGIC) + 2, f"bad file header: metadata length {meta_len}")
        rest = f.read(meta_len + CRC.size)
        if len(rest) < meta_len + CRC.size:
            raise RecordingError(self.path, FILE_HEADER.size + len(rest), "the file header is cut short")
        crc = CRC.unpack(rest[meta_len:])[0]
        if zlib.crc32(head + rest[:meta_len]) != crc:
            raise RecordingError(self.path, 0, "file header CRC mismatch")
        try:
            metadata = json.loads(rest[:meta_len].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordingError(self.path, FILE_HEADER.size, f"file header metadata is not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise RecordingError(self.path, FILE_HEADER.size, "file header metadata is not a JSON object")
        return metadata, FILE_HEADER.size + meta_len + CRC.size, crc

    @property
    def file_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    # -------------------------------------------------------------- records

    def read_header_at(
        self, offset: int, previous_id: Optional[int] = None
    ) -> Optional[Tuple[int, int, Tuple[int, ...]]]:
        """(body length, CRC, fields) of the record at ``offset`` without its payload; None at the end."""
        self._file.seek(offset)
        head = self._file.read(RECORD_HEADER_SIZE)
        if not head:
            return None
        if len(head) < RECORD_HEADER_SIZE:
            raise RecordingError(
                self.path, offset, f"record cut short: {len(head)} of its {RECORD_HEADER_SIZE} header bytes"
            )
        body_len, crc = RECORD_PREFIX.unpack_from(head)
        if body_len < RECORD_FIELDS.size:
            raise RecordingError(self.path, offset, f"bad record header: length {body_len}")
        fields = RECORD_FIELDS.unpack_from(head, RECORD_PREFIX.size)
        _check_fields(str(self.path), offset, body_len, fields, previous_id)
        return body_len, crc, fields

    def read_at(self, offset: int, previous_id: Optional[int] = None) -> Optional[Record]:
        """The record at ``offset``, checked against its CRC; None at a clean end of file."""
        found = self.read_header_at(offset, previous_id)
        if found is None:
            return None
        body_len, crc, fields = found
        self._file.seek(offset + RECORD_PREFIX.size)
        body = bytearray(body_len)  # writable, so raw frames decode without a copy
        got = self._file.readinto(body)
        if got < body_len:
            raise RecordingError(
                self.path, offset, f"record of frame {fields[0]} cut short: {got} of its {body_len} bytes"
            )
        if zlib.crc32(body) != crc:
            raise RecordingError(self.path, offset, f"CRC mismatch in the record of frame {fields[0]}")
        frame_id, t_ns, width, height, channels, encoding = fields
        return Record(
            offset=offset,
            size=RECORD_PREFIX.size + body_len,
            frame_id=frame_id,
            t_src_ns=t_ns,
            width=width,
            height=height,
            channels=channels,
            encoding=encoding,
            payload=memoryview(body)[RECORD_FIELDS.size:],
            path=str(self.path),
        )

    def records(self, start_offset: Optional[int] = None) -> Iterator[Record]:
        """Every record from ``start_offset`` (default: the first) to the end or the damage.

        Damage raises :class:`RecordingError` after the records before it were yielded.
        """
        offset = self.data_offset if start_offset is None else start_offset
        previous: Optional[int] = None
        while True:
            record = self.read_at(offset, previous)
            if record is None:
                return
            yield record
            previous, offset = record.frame_id, record.end

    # -------------------------------------------------------------- index

    def index(self) -> "RecordingIndex":
        if self._index is None:
            self._index = load_index(self)
        return self._index

    def offset_for(self, frame_id: int) -> int:
        """Offset of the first record whose id is at least ``frame_id`` (the end when none is)."""
        index = self.index()
        position = index.position(frame_id)
        offset = index.offset_at(position)
        if position < len(index):
            found = self.read_header_at(offset)
            if found is None or found[2][0] != int(index.frame_ids[position]):
                # The file changed under the index: rebuild it from the data and look again.
                log.warning("index of %s does not match the data; rebuilding it", self.path)
                self._index = load_index(self, trust_sidecar=False)
                return self._index.offset_at(self._index.position(frame_id))
        return offset

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ index


@dataclass
class RecordingIndex:
    """frame_id, t_src_ns and offset of the records from the start up to ``end`` (exclusive)."""

    entries: np.ndarray  # INDEX_ENTRY
    end: int  # offset just after the last indexed record
    complete: bool  # False when scanning stopped at damage

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def frame_ids(self) -> np.ndarray:
        return self.entries["frame_id"]

    @property
    def t_ns(self) -> np.ndarray:
        return self.entries["t_ns"]

    @property
    def offsets(self) -> np.ndarray:
        return self.entries["offset"]

    def position(self, frame_id: int) -> int:
        """Position of the first record with an id at least ``frame_id`` (binary search)."""
        if frame_id <= 0 or not len(self.entries):
            return 0
        if frame_id > U64_MAX:
            return len(self.entries)
        return int(np.searchsorted(self.frame_ids, np.uint64(frame_id), side="left"))

    def offset_at(self, position: int) -> int:
        return int(self.offsets[position]) if position < len(self.entries) else self.end


def load_index(reader: RecordingReader, trust_sidecar: bool = True) -> RecordingIndex:
    """The sidecar index, checked against the data; extended or rebuilt by scanning as needed."""
    path = index_path(reader.path)
    entries = _read_sidecar(reader, path) if trust_sidecar else None
    rebuilt = entries is None
    if entries is None:
        entries, start, previous = np.empty(0, INDEX_ENTRY), reader.data_offset, None
    elif not len(entries):
        start, previous = reader.data_offset, None
    else:
        last = int(entries["offset"][-1])
        header = reader.read_header_at(last)
        assert header is not None  # _read_sidecar checked this record
        start, previous = last + RECORD_PREFIX.size + header[0], int(entries["frame_id"][-1])
    scanned, end, complete = _scan(reader, start, previous)
    if scanned:
        entries = np.concatenate([entries, np.array(scanned, dtype=INDEX_ENTRY)])
    if rebuilt or scanned:
        _persist_index(reader, path, entries)
    return RecordingIndex(entries, end, complete)


def _read_sidecar(reader: RecordingReader, path: Path) -> Optional[np.ndarray]:
    """Entries of a sidecar that belongs to this recording and agrees with it, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < INDEX_HEADER.size:
        return None
    magic, version, entry_size, header_crc = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or version != VERSION or entry_size != INDEX_ENTRY.itemsize or header_crc != reader.header_crc:
        log.info("index %s does not belong to %s; rebuilding it", path, reader.path)
        return None
    usable = (len(data) - INDEX_HEADER.size) // INDEX_ENTRY.itemsize * INDEX_ENTRY.itemsize  # a cut last entry is dropped
    entries = np.frombuffer(data, dtype=INDEX_ENTRY, count=usable // INDEX_ENTRY.itemsize, offset=INDEX_HEADER.size)
    if not len(entries):
        return entries
    ids, offsets = entries["frame_id"], entries["offset"]
    size = reader.file_size
    ordered = bool(np.all(ids[1:] > ids[:-1]) and np.all(offsets[1:] > offsets[:-1]))
    if not ordered or int(offsets[0]) != reader.data_offset or int(offsets[-1]) >= size:
        log.info("index %s disagrees with %s; rebuilding it", path, reader.path)
        return None
    try:
        last = reader.read_header_at(int(offsets[-1]))
    except RecordingError:
        last = None
    if last is None or last[2][0] != int(ids[-1]) or last[2][1] != int(entries["t_ns"][-1]):
        log.info("index %s disagrees with %s; rebuilding it", path, reader.path)
        return None
    return entries


def _scan(reader: RecordingReader, offset: int, previous: Optional[int]) -> Tuple[list, int, bool]:
    """Index entries from ``offset`` on, by record headers (the CRC is checked when records are read)."""
    size = reader.file_size
    found = []
    while True:
        try:
            header = reader.read_header_at(offset, previous)
        except RecordingError as exc:
            log.debug("indexing stopped: %s", exc)
            return found, offset, False
        if header is None:
            return found, offset, True
        body_len, _crc, fields = header
        end = offset + RECORD_PREFIX.size + body_len
        if end > size:
            log.debug("indexing stopped at the record cut short at byte offset %d", offset)
            return found, offset, False
        found.append((fields[0], fields[1], offset))
        previous, offset = fields[0], end


def _persist_index(reader: RecordingReader, path: Path, entries: np.ndarray) -> None:
    """Write a rebuilt index, unless the recording is still being written (its writer owns the index)."""
    with _data_lock(reader.path) as locked:
        if not locked:
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        except OSError as exc:  # read-only media: the index stays in memory
            log.debug("cannot write index %s: %s", path, exc)
            return
        try:
            with open(fd, "wb") as f:
                f.write(INDEX_HEADER.pack(INDEX_MAGIC, VERSION, INDEX_ENTRY.itemsize, reader.header_crc))
                f.write(entries.astype(INDEX_ENTRY).tobytes())
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write index %s: %s", path, exc)
            with suppress(OSError):
                os.unlink(tmp)


@contextmanager
def _data_lock(path: Path) -> Iterator[bool]:
    if fcntl is None:
        yield True
        return
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------ FrameReader interface


class RecordingFrameReader:
    """A recording as ``facemoment.formats.frames.FrameReader``: ``(frame_id, t_src_ns, image)`` as recorded.

    Ids and timestamps are the recorded ones (gaps stay gaps).  ``start_frame_id``
    starts at the first record with an id at least that.  Damage ends the frames
    with an error logged (``error`` holds it).  ``loop`` starts over at the first
    record and, as ``FrameReader`` does for files, keeps ids and timestamps
    increasing: pass ``k`` adds ``k`` times the recording's id span to the ids and
    ``k`` times its duration plus one frame period to the timestamps.
    """

    is_live = False
    target_fps: Optional[float] = None

    def __init__(
        self,
        source: Union[str, Path],
        fps: Optional[float] = None,
        loop: bool = False,
        start_frame_id: int = 0,
    ) -> None:
        if fps is not None:
            raise ValueError(
                f"recording {source}: fps sampling is not supported; a recording replays every frame with its recorded id"
            )
        if start_frame_id < 0:
            raise ValueError(f"start_frame_id must not be negative, got {start_frame_id}")
        self.source = os.fspath(source)
        self.loop = loop
        self._reader = RecordingReader(source)
        self.path = self._reader.path
        self.metadata = self._reader.metadata
        index = self._reader.index()
        self.frame_count: Optional[int] = len(index)
        self.source_fps: Optional[float] = _rate(index)
        self.width, self.height = _first_geometry(self._reader, index)
        self.error: Optional[RecordingError] = None
        self.truncated = False
        self._pass = 0
        self._id_span, self._t_span = _loop_spans(index)
        self._next_id = start_frame_id
        self._records = self._reader.records(self._reader.offset_for(start_frame_id))
        self._closed = False

    @property
    def fps(self) -> Optional[float]:
        return self.source_fps

    @property
    def next_frame_id(self) -> int:
        return self._next_id

    def __iter__(self) -> Iterator[Tuple[int, int, np.ndarray]]:
        return self

    def __next__(self) -> Tuple[int, int, np.ndarray]:
        item = self.read()
        if item is None:
            raise StopIteration
        return item

    def read(self) -> Optional[Tuple[int, int, np.ndarray]]:
        """The next recorded frame, or None at the end (or at damage, logged)."""
        while not self._closed:
            try:
                record = next(self._records, None)
                if record is not None:
                    image = record.image()
            except RecordingError as exc:
                self.error = exc
                self.truncated = True
                log.error("%s; the frames before it were read", exc)
                self._closed = True
                return None
            if record is None:
                if self.loop and self.frame_count:
                    self._records = self._reader.records()
                    self._pass += 1
                    continue
                return None
            frame_id = record.frame_id + self._pass * self._id_span
            self._next_id = frame_id + 1
            return frame_id, record.t_src_ns + self._pass * self._t_span, image
        return None

    def close(self) -> None:
        self._closed = True
        self._reader.close()

    def __enter__(self) -> "RecordingFrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rate(index: RecordingIndex) -> Optional[float]:
    """The publisher's rate: frame ids per second over the recorded span (lost frames count)."""
    if len(index) < 2:
        return None
    span = int(index.t_ns[-1]) - int(index.t_ns[0])
    if span <= 0:
        return None
    return (int(index.frame_ids[-1]) - int(index.frame_ids[0])) * 1e9 / span


def _loop_spans(index: RecordingIndex) -> Tuple[int, int]:
    """How far each loop pass shifts ids and timestamps: the span of the recording plus one frame."""
    if not len(index):
        return 0, 0
    ids = int(index.frame_ids[-1]) - int(index.frame_ids[0])
    duration = max(0, int(index.t_ns[-1]) - int(index.t_ns[0]))
    period = duration // ids if ids > 0 and duration > 0 else int(1e9 / 30)
    return ids + 1, duration + period


def _first_geometry(reader: RecordingReader, index: RecordingIndex) -> Tuple[int, int]:
    if not len(index):
        return 0, 0
    found = reader.read_header_at(int(index.offsets[0]))
    assert found is not None
    return int(found[2][2]), int(found[2][3])
