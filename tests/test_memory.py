"""The allocator settings a run applies: frames at the analysis size reuse heap memory,
raw full-resolution frames are mapped per frame and returned on free."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from conftest import PYTHON, REPO

# In a fresh interpreter: mallopt changes the whole process. Counts the mmapped blocks
# glibc holds (mallinfo2's hblks) while one array of each size is alive.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, sys
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "apply":
        from facemoment.runtime import memory
        assert memory.keep_frame_memory_flat()

    def mapped_while_alive(shape):
        before = libc.mallinfo2().hblks
        frame = np.ones(shape, np.uint8)
        during = libc.mallinfo2().hblks
        del frame
        return during - before

    analysis = [mapped_while_alive((480, 640, 3)) for _ in range(5)]
    raw = [mapped_while_alive((1080, 1920, 3)) for _ in range(5)]
    print(json.dumps({"analysis": analysis, "raw": raw}))
    """
)


def _probe(mode: str, probe: str = PROBE) -> Any:
    """What `probe` prints, run in a fresh interpreter with `mode` as its argument."""
    out = subprocess.run([PYTHON, "-c", probe, mode], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_frames_at_the_analysis_size_come_from_the_heap_and_raw_frames_are_mapped():
    applied = _probe("apply")
    assert applied["analysis"] == [0] * 5  # 640x480 frames: heap memory, reused
    assert applied["raw"] == [1] * 5  # 1080p frames: mapped each time, returned on free


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_without_the_pinned_threshold_glibc_moves_raw_frames_into_its_heaps():
    # What pinning prevents: after the first raw frame is freed, glibc raises its
    # threshold and later raw frames come from the heaps, where they fragment.
    assert _probe("default")["raw"][1:] == [0] * 4


# A long-lived thread allocates frames (as ZeroMQ's I/O thread does), the main thread
# frees them; prints the page faults of each later round of eight 640x480 frames.
REUSE_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, queue, resource, sys, threading
    import numpy as np

    if sys.argv[1] == "apply":
        from facemoment.runtime import memory
        assert memory.keep_frame_memory_flat()
    else:  # the mmap threshold and arenas as applied, glibc's own trim threshold
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        assert libc.mallopt(-3, 1024 * 1024) == 1 and libc.mallopt(-8, 4) == 1

    asked, made = queue.Queue(), queue.Queue()

    def receiver():
        while asked.get():
            made.put([np.ones((480, 640, 3), np.uint8) for _ in range(8)])

    threading.Thread(target=receiver, daemon=True).start()

    def faults_of_a_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        asked.put(True)
        frames = made.get()
        del frames
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_a_round()  # the heap grows once
    print(json.dumps([faults_of_a_round() for _ in range(5)]))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_frames_freed_on_another_thread_are_refilled_without_fresh_pages():
    # Eight frames are about 1,800 pages; a round refilling freed heap memory faults (almost) none.
    assert max(_probe("apply", REUSE_PROBE)) < 50


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_with_glibcs_trim_threshold_the_receiving_heap_is_trimmed_every_round():
    # Why the trim threshold is raised: glibc's 128 KiB gives freed frames back at once.
    assert min(_probe("pin", REUSE_PROBE)) > 100
