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

Modules: :mod:`.codec` (byte layout and checks), :mod:`.writer`, :mod:`.reader`,
:mod:`.index` (the sidecar index) and :mod:`.frame_reader`.
"""

from facemoment.formats.recording.codec import (
    DEFAULT_ENCODING,
    DEFAULT_JPEG_QUALITY,
    ENCODINGS,
    INDEX_ENTRY,
    INDEX_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_PREFIX,
    RECORDING_SUFFIX,
    Record,
    RecordingError,
    RecordingFullError,
    RecordingWriteError,
    encode_image,
    image_geometry,
    index_path,
    is_recording,
)
from facemoment.formats.recording.frame_reader import RecordingFrameReader
from facemoment.formats.recording.index import RecordingIndex, load_index
from facemoment.formats.recording.reader import RecordingReader
from facemoment.formats.recording.writer import RecordingWriter

__all__ = [
    "DEFAULT_ENCODING",
    "DEFAULT_JPEG_QUALITY",
    "ENCODINGS",
    "INDEX_ENTRY",
    "INDEX_HEADER",
    "RECORD_HEADER_SIZE",
    "RECORD_PREFIX",
    "RECORDING_SUFFIX",
    "Record",
    "RecordingError",
    "RecordingFrameReader",
    "RecordingFullError",
    "RecordingIndex",
    "RecordingReader",
    "RecordingWriteError",
    "RecordingWriter",
    "encode_image",
    "image_geometry",
    "index_path",
    "is_recording",
    "load_index",
]
