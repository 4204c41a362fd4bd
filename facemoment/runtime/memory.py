"""Keep the resident size of a long-running stream flat.

Every frame is a fresh ~1 MB array, allocated on one thread and freed on another.
glibc raises its mmap threshold after such frees, so later frames come from per-thread
heap arenas that fragment and keep growing for minutes. Pinning the threshold (frames
are then mmapped and returned on free) and capping the arenas keeps memory flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_done = False


def keep_frame_memory_flat(mmap_threshold: int = 256 * 1024, arenas: int = 4) -> bool:
    """Apply the allocator settings once per process (glibc only); True when applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(_M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    if not ok:
        log.debug("mallopt not available; frame memory may grow with fragmentation")
    return ok
