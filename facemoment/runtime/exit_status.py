"""The run's exit code: sources say when their input could not be read to its end.

A damaged file must not look like a finished one to a script: the run still writes
everything it read, then exits with :data:`EXIT_INPUT_INCOMPLETE` (codes in
:mod:`facemoment.runtime.preflight`).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import List

EXIT_INPUT_INCOMPLETE = 3

_lock = threading.Lock()
_problems: List[str] = []


def input_incomplete(what: str) -> None:
    """A source could not read all of its input (called from any worker thread)."""
    with _lock:
        _problems.append(what)


def problems() -> List[str]:
    with _lock:
        return list(_problems)


def code() -> int:
    return EXIT_INPUT_INCOMPLETE if problems() else 0


def reset() -> None:
    with _lock:
        _problems.clear()


def exit_with_status_at_exit() -> None:
    """For `python -m bytewax.run`, whose own exit code is 0 once the flow ends.

    Register this before anything else at exit: handlers run last-in first-out,
    so the others (the run summary) have run when it ends the process.
    """

    def _exit() -> None:
        status = code()
        if status:
            for what in problems():
                print(f"facemoment: input incomplete: {what}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(status)

    atexit.register(_exit)
