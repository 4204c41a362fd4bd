"""Reading a JSONL file that another process is still appending to."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

# One poll reads at most this much; the rest comes on the next polls.
MAX_READ = 8 << 20


class JsonlTail:
    """New complete lines of a growing JSONL file, poll after poll.

    Only lines ending in a newline are taken: a last line the writer has not finished
    is read again next time. A file that shrank or was replaced (a new run in the same
    directory) starts over, and `resets` counts it so the reader can drop what it built.
    Lines that are not JSON objects are counted in `bad_lines` and skipped.
    """

    def __init__(self, path: Path, max_read: int = MAX_READ) -> None:
        self.path = path
        self.max_read = max_read
        self.offset = 0
        self.identity: Optional[tuple] = None
        self.resets = 0
        self.bad_lines = 0

    def read(self) -> List[Dict[str, Any]]:
        """The objects of the lines completed since the last call (possibly none)."""
        try:
            handle = open(self.path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return []
        with handle:
            st = os.fstat(handle.fileno())
            identity = (st.st_dev, st.st_ino)
            if self.identity is not None and (identity != self.identity or st.st_size < self.offset):
                self.offset = 0
                self.resets += 1
            self.identity = identity
            if st.st_size <= self.offset:
                return []
            handle.seek(self.offset)
            data = handle.read(self.max_read)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= self.max_read:  # one line longer than a whole read: skip it
                self.offset += len(data)
                self.bad_lines += 1
            return []
        self.offset += end + 1
        rows: List[Dict[str, Any]] = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                self.bad_lines += 1
                continue
            if isinstance(value, dict):
                rows.append(value)
            else:
                self.bad_lines += 1
        return rows

    @property
    def caught_up(self) -> bool:
        try:
            return os.stat(self.path).st_size - self.offset < self.max_read
        except OSError:
            return True
