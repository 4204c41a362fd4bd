"""The sidecar index (frame_id, t_src_ns, offset per record): loaded, extended or rebuilt by scanning."""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import numpy as np

from facemoment.formats.recording.codec import (
    INDEX_ENTRY,
    INDEX_HEADER,
    INDEX_MAGIC,
    RECORD_PREFIX,
    U64_MAX,
    VERSION,
    RecordingError,
    index_path,
)

if TYPE_CHECKING:  # the reader builds its index from here
    from facemoment.formats.recording.reader import RecordingReader

try:  # advisory locks keep a reader from replacing the index of a file being recorded
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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
    """Index entries from ``offset`` on, by record headers (the CRC is checked when records are
    read), skipping damaged stretches to the next intact record; ``complete`` is False if any."""
    size = reader.file_size
    found = []
    complete = True
    while True:
        try:
            header = reader.read_header_at(offset, previous)
            if header is not None and offset + RECORD_PREFIX.size + header[0] > size:
                raise RecordingError(reader.path, offset, "record cut short", "cut_short")
        except RecordingError as exc:
            # A record still being appended looks like this too: the next scan extends from here.
            resume = reader.find_record(offset + 1, previous)
            log.debug("indexing skips damage: %s; %s", exc, "nothing intact after it" if resume is None else f"resumes at {resume}")
            complete = False
            if resume is None:
                return found, offset, False
            offset = resume
            continue
        if header is None:
            return found, offset, complete
        body_len, _crc, fields = header
        found.append((fields[0], fields[1], offset))
        previous, offset = fields[0], offset + RECORD_PREFIX.size + body_len


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
