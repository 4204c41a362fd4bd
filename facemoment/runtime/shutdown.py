"""Graceful Ctrl-C: the first interrupt ends the input, so windows flush and every
output (clips of pending triggers included) is written; a second one aborts."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

STOP = threading.Event()
_installed = False


def _on_sigint(signum, frame):  # noqa: ARG001
    if STOP.is_set():
        raise KeyboardInterrupt
    STOP.set()
    log.warning("interrupt: ending the input and flushing outputs (Ctrl-C again to abort)")


def install_sigint_handler() -> bool:
    """Install the handler (only the main thread can); True when it is in place."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return _installed
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigint)
    _installed = True
    return True
