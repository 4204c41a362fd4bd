"""Keep the resident size of a long-running stream flat, without paying for fresh pages per frame.

Every frame is a fresh array, allocated on one thread (ZeroMQ's I/O thread, a
decoder) and freed on another. glibc raises its mmap threshold after such frees, so
large frames then come from per-thread heap arenas that fragment and keep growing
for minutes. The threshold is pinned instead, and the arenas capped.

It is pinned at 1 MiB: a frame at the analysis size (640x480, 900 KiB) and the
per-frame images made from it are served from the heap and reuse the memory the
frames before them freed; mmapped, each cost some 225 freshly zeroed pages, most of
what ZeroMQ's I/O thread spent on a 640x480 camera. Raw full-resolution frames (6 MB at
1080p) stay above it: mapped per frame and returned to the system on free.

The heaps keep up to 16 MiB of freed memory at their top instead of glibc's 128 KiB:
with a few frames in flight the top of ZeroMQ's I/O thread's heap is freed and refilled
every frame; trimmed at once, it was faulted in afresh each time (about 190 pages a
640x480 frame). What a heap keeps is bounded by the threshold; past it, glibc trims.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
TRIM_THRESHOLD = 16 * 1024 * 1024
_done = False


def keep_frame_memory_flat(
    mmap_threshold: int = MMAP_THRESHOLD, arenas: int = 4, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Apply the allocator settings once per process (glibc only); True when applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = all(libc.mallopt(option, value) == 1 for option, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold), (_M_ARENA_MAX, arenas), (_M_TRIM_THRESHOLD, trim_threshold)))
    except (OSError, AttributeError):
        return False
    _done = ok
    if not ok:
        log.debug("mallopt not available; frame memory may grow with fragmentation")
    return ok
