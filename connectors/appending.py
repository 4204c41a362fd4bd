"""Appending whole lines to a file that may fail part way (a full disk)."""

from __future__ import annotations

import os
from typing import Any, Optional


def append_whole(file: Any, data: bytes, sync: bool = False) -> Optional[OSError]:
    """Append ``data`` to an unbuffered binary file, all of it or nothing.

    Returns the error of a failed write after cutting the file back to where it
    was, so it keeps holding whole lines; None when everything was written.
    """
    start = file.tell()
    try:
        view = memoryview(data)
        while view:
            written = file.write(view)
            if not written:
                raise OSError("write stored nothing")
            view = view[written:]
        if sync:
            os.fsync(file.fileno())
    except OSError as exc:
        try:
            file.truncate(start)
            file.seek(start)
        except (OSError, ValueError, AttributeError):
            pass
        return exc
    return None
