"""The receive side shared by the ZeroMQ sources: a SUB socket, drained by a thread.

A partition's socket belongs to its receive thread once that starts; the partition
only stops the thread and terminates the context afterwards.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List

import zmq


def sub_socket(context: zmq.Context, topic: bytes, hwm: int, **options: int) -> zmq.Socket:
    """A SUB socket on `topic` that keeps at most `hwm` messages and never lingers.

    `options` are further socket options by name (`RCVTIMEO=1000`), set before the
    subscription.
    """
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def drain(sock: zmq.Socket, stop: threading.Event, handle: Callable[[List[Any]], None], **recv: Any) -> None:
    """Hand every message waiting on `sock` to `handle`, without blocking, until none is
    left or `stop` is set. `recv` goes to `recv_multipart` (`copy=False`)."""
    while not stop.is_set():
        try:
            parts = sock.recv_multipart(flags=zmq.NOBLOCK, **recv)
        except zmq.Again:
            return
        handle(parts)


def stop_receiver(stop: threading.Event, thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Ask the receive thread to stop and wait for it (unless called from it)."""
    stop.set()
    if thread.is_alive() and threading.current_thread() is not thread:
        thread.join(timeout=timeout_s)

