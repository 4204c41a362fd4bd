"""Appending frames to a recording; a failed write cuts the file back to its last complete record."""

from __future__ import annotations

import errno
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Dict, Optional, Union

import numpy as np

from facemoment.formats.closing import Closing
from facemoment.formats.recording.codec import (
    CRC,
    DEFAULT_ENCODING,
    DEFAULT_JPEG_QUALITY,
    ENCODINGS,
    INDEX_ENTRY,
    INDEX_FLUSH_RECORDS,
    INDEX_FLUSH_SECONDS,
    INDEX_HEADER,
    INDEX_MAGIC,
    RECORD_FIELDS,
    RECORD_HEADER_SIZE,
    RECORD_PREFIX,
    U64_MAX,
    VERSION,
    RecordingError,
    RecordingFullError,
    RecordingWriteError,
    _check_fields,
    _header_bytes,
    encode_image,
    image_geometry,
    index_path,
)

try:  # advisory locks keep a reader from replacing the index of a file being recorded
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write every byte (a raw file may take fewer per call)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


class RecordingWriter(Closing):
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


def _lock(file: BinaryIO, busy: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(errno.EBUSY, busy) from None
