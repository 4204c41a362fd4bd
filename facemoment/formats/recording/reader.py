"""Reading a recording's records from a byte offset; damage raises RecordingError naming the offset."""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from facemoment.formats.closing import Closing
from facemoment.formats.recording.codec import (
    CRC,
    ENCODING_NAMES,
    FILE_HEADER,
    MAGIC,
    MAX_METADATA_BYTES,
    RECORD_FIELDS,
    RECORD_HEADER_SIZE,
    RECORD_PREFIX,
    VERSION,
    Record,
    RecordingError,
    _check_fields,
)
from facemoment.formats.recording.index import RecordingIndex, load_index

log = logging.getLogger(__name__)

OnDamage = Callable[[RecordingError, Optional[int]], None]

SCAN_CHUNK = 1 << 20  # bytes screened at a time when looking for the next intact record


def _plausible_headers(chunk: bytes) -> Iterator[int]:
    """Positions in ``chunk`` where a record header could start: channels 1 or 3, a known
    encoding, width and height below 2^16 (a cheap screen; read_at decides)."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    n = len(data) - RECORD_HEADER_SIZE + 1
    if n <= 0:
        return
    fields = RECORD_PREFIX.size  # the record's fields start after length and CRC
    width, height = fields + 16, fields + 20
    channels, encoding = data[fields + 24 : fields + 24 + n], data[fields + 25 : fields + 25 + n]
    mask = ((channels == 1) | (channels == 3)) & (encoding <= max(ENCODING_NAMES))
    for at in (width, width + 1, height, height + 1):
        mask &= data[at : at + n] == 0
    yield from np.flatnonzero(mask).tolist()


class RecordingReader(Closing):
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

    def tell(self) -> int:
        """The byte offset reading has reached."""
        return self._file.tell()

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
                self.path, offset, f"record cut short: {len(head)} of its {RECORD_HEADER_SIZE} header bytes", "cut_short"
            )
        body_len, crc = RECORD_PREFIX.unpack_from(head)
        if body_len < RECORD_FIELDS.size:
            raise RecordingError(self.path, offset, f"bad record header: length {body_len}", "bad_header")
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
                self.path, offset, f"record of frame {fields[0]} cut short: {got} of its {body_len} bytes", "cut_short"
            )
        if zlib.crc32(body) != crc:
            raise RecordingError(self.path, offset, f"CRC mismatch in the record of frame {fields[0]}", "crc")
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

    def records(self, start_offset: Optional[int] = None, on_damage: Optional[OnDamage] = None) -> Iterator[Record]:
        """Every record from ``start_offset`` (default: the first) to the end.

        Without ``on_damage``, damage raises :class:`RecordingError` after the
        records before it were yielded. With it, each damaged stretch is handed to
        ``on_damage`` (the error and the offset reading goes on from, None when no
        intact record follows) and reading goes on at the next intact record.
        """
        offset = self.data_offset if start_offset is None else start_offset
        previous: Optional[int] = None
        while True:
            try:
                record = self.read_at(offset, previous)
            except RecordingError as exc:
                if on_damage is None:
                    raise
                found = self.find_record(offset + 1, previous)
                on_damage(exc, found)
                if found is None:
                    return
                offset = found
                continue
            if record is None:
                return
            yield record
            previous, offset = record.frame_id, record.end

    def find_record(self, offset: int, previous_id: Optional[int] = None) -> Optional[int]:
        """Offset of the first intact record at or after ``offset`` (CRC checked, id after
        ``previous_id``); None when none is left. Positions are screened by their
        header bytes in bulk, so skipping a damaged stretch costs little per byte."""
        size = self.file_size
        while offset + RECORD_HEADER_SIZE <= size:
            self._file.seek(offset)
            chunk = self._file.read(SCAN_CHUNK + RECORD_HEADER_SIZE)
            for candidate in _plausible_headers(chunk):
                try:
                    if self.read_at(offset + candidate, previous_id) is not None:
                        return offset + candidate
                except RecordingError:
                    continue
            offset += SCAN_CHUNK
        return None

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
