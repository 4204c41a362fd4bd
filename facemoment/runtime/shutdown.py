"""Graceful Ctrl-C and SIGTERM: the first one ends the input, so windows flush and
every output (clips of pending triggers included) is written; a second one aborts.

Python runs a signal handler on the main thread, and only the main thread can
install one. Under `python -m bytewax.run` the main thread looks `flow` up and then
either runs the only worker itself or, with more workers or processes, waits for the
worker threads while checking for signals every few milliseconds; either way a
handler installed when `flow` is looked up runs (dataflows/facemoment.py)."""

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
    name = signal.Signals(signum).name if signum else "signal"
    log.warning("interrupt (%s): ending the input and flushing outputs (Ctrl-C again to abort)", name)


def install_sigint_handler() -> bool:
    """Install the handler for SIGINT and SIGTERM (only the main thread can); True
    when it is in place. A SIGINT the process was started to ignore (a background
    job of a shell) stays ignored."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return _installed
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigint)
    _installed = True
    return True
