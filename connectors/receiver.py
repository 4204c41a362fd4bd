"""The receive side shared by the ZeroMQ sources: a SUB socket, drained by a thread.

A partition's socket belongs to its receive thread once that starts; the partition
only stops the thread and terminates the context afterwards.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Optional

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



class ReceivedBatches:
    """`next_batch`/`next_awake` of a partition that a receive thread fills.

    Each batch is what `_take()` finds ready. Once `_end_reason()` names a reason,
    the thread stops, `_take_rest()` adds what arrived meanwhile, the `_summary`
    record closes the stream and the next call ends the partition. An empty batch
    asks to be woken `IDLE_WAKE` later instead of at once.
    """

    IDLE_WAKE = timedelta(milliseconds=5)
    _stop: threading.Event
    _thread: threading.Thread
    _ended = False
    _empty = False

    def _take(self) -> List[Any]:
        raise NotImplementedError

    def _take_rest(self) -> List[Any]:
        return self._take()

    def _end_reason(self) -> Optional[str]:
        raise NotImplementedError

    def _summary(self, reason: str) -> Any:
        raise NotImplementedError

    def _stop_receiver(self) -> None:
        stop_receiver(self._stop, self._thread)

    def next_batch(self) -> List[Any]:
        if self._ended:
            raise StopIteration
        out = self._take()
        reason = self._end_reason()
        if reason is not None:
            self._stop_receiver()
            out.extend(self._take_rest())
            out.append(self._summary(reason))
            self._ended = True
        self._empty = not out
        return out

    def next_awake(self) -> Optional[datetime]:
        return datetime.now(timezone.utc) + self.IDLE_WAKE if self._empty else None
