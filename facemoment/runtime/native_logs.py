"""Quiet native model logs: MediaPipe, absl, TF Lite and glog write straight to fd 2.

Environment settings ask glog and TF Lite for warnings and up, but MediaPipe 0.10's
absl logging ignores them and prints its one-time lines ("All log messages before
absl::InitializeLog() ...", "Created TensorFlow Lite XNNPACK delegate", feedback
manager and NORM_RECT warnings) for every graph, in every worker and process.

`filter_native_stderr()` puts a small filter process on fd 2: native INFO and
WARNING lines are dropped, everything else (errors, fatal lines, Bytewax's own
messages) passes. Python's `sys.stderr` keeps writing to the terminal directly, so
progress bars and logs are unchanged. The filter is a separate process so that a
native crash's last words still get through after this process has died.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Optional

# Native INFO/WARNING lines: glog/absl prefixes ("W0000 00:00:1796175177.624434  14750 file.cc:114] ")
# and the TF Lite and absl one-liners. Errors (E) and fatal lines (F) are never matched.
NATIVE_LINE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: (?:Created|Initialized|Replacing) TensorFlow Lite"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)

_FILTER = r"""
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pattern = re.compile(PATTERN)
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not pattern.match(line):
        out.write(line)
        out.flush()
"""

_installed: Optional[subprocess.Popen] = None


def quiet_native_env() -> None:
    """glog and TF Lite: warnings and up. Works before MediaPipe is imported; explicit settings win."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def is_native_line(line: bytes) -> bool:
    return NATIVE_LINE.match(line) is not None


def filter_native_stderr() -> bool:
    """Drop native INFO/WARNING lines from fd 2 for the rest of this process (once; True if active)."""
    global _installed
    quiet_native_env()
    if _installed is not None:
        return True
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        code = _FILTER.replace("PATTERN", repr(NATIVE_LINE.pattern))
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", code],
            stdin=subprocess.PIPE,
            stdout=terminal,
            stderr=terminal,
            close_fds=True,
            start_new_session=False,
        )
    except (OSError, ValueError):
        return False  # no fd 2 or no way to start the filter: leave stderr as it is
    assert proc.stdin is not None
    # Python keeps the terminal itself (unfiltered, unbuffered by lines: progress bars work).
    sys.stderr = open(terminal, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace", closefd=False)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()  # fd 2 is now the only write end held here
    _installed = proc
    return True
