"""The receive side shared by the ZeroMQ sources: a SUB socket, drained by a thread.

A partition's socket belongs to its receive thread once that starts; the partition
only stops the thread and terminates the context afterwards. Nothing here knows
Bytewax or what the messages mean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

import zmq
from zmq.utils.monitor import parse_monitor_message

from connectors.text_transports import MAX_DATAGRAM, bind_datagram_socket

log = logging.getLogger(__name__)

# After a dropped connection ZeroMQ schedules its own reconnect at once (and says so
# with EVENT_CONNECT_RETRIED) unless it dropped the connection for a protocol error,
# which for a subscriber with MAXMSGSIZE is a message over that size.
RETRY_EVENT_WAIT_MS = 200


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


class ArrivalSignal:
    """What a receive thread sets whenever it handled something, for a reader on its own
    thread to wait on instead of polling."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        """Block until set since the last wait, at most `timeout_s`; whether it was."""
        if self._event.wait(timeout_s):
            self._event.clear()  # before the batch that follows: nothing handled later is missed
            return True
        return False


def stop_receiver(stop: threading.Event, thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Ask the receive thread to stop and wait for it (unless called from it)."""
    stop.set()
    if thread.is_alive() and threading.current_thread() is not thread:
        thread.join(timeout=timeout_s)


class SubReceiver:
    """A SUB socket connected to ``addresses``, drained by its own thread into ``handle``.

    With ``max_message_bytes``, ZeroMQ refuses a larger message before allocating it
    and drops that connection for good; the receiver then takes every whole message
    still queued, replaces the socket (not ``disconnect()``: libzmq aborts when a pipe
    is torn down under a message half read) and calls ``on_dropped(refused)``:
    ``refused`` is true when ZeroMQ dropped the connection itself rather than losing
    the peer. ``handle`` and ``on_dropped`` run on the receive thread. An exception
    there stops the thread; ``error`` then says why.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        topic: bytes,
        hwm: int,
        handle: Callable[[List[Any]], None],
        *,
        name: str,
        what: str = "publisher",
        max_message_bytes: Optional[int] = None,
        on_dropped: Optional[Callable[[bool], None]] = None,
        poll_ms: int = 50,
        copy: bool = True,
        **options: int,
    ) -> None:
        self._addresses = list(addresses)
        self._topic = topic
        self._hwm = hwm
        self._handle = handle
        self._name = name
        self._on_dropped = on_dropped
        self._poll_ms = poll_ms
        self._recv = {"copy": copy}
        self._options = dict(options)
        if max_message_bytes is not None:
            self._options["MAXMSGSIZE"] = max_message_bytes
        self._watch = max_message_bytes is not None
        self.error: Optional[str] = None
        self._context = zmq.Context()
        try:
            self._socket = self._connected_socket()
        except zmq.ZMQError as exc:
            self._context.term()
            raise ValueError(f"cannot connect to {what} {','.join(self._addresses)!r}: {exc}") from exc
        self._stop = threading.Event()
        # The socket moves to the receive thread here; only that thread touches it from now on.
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the thread (it closes the socket) and wait for it."""
        stop_receiver(self._stop, self._thread)

    def close(self) -> None:
        self.stop()
        if self._thread.is_alive():
            log.warning("%s did not stop; leaving its socket to the process exit", self._name)
            return
        if not self._context.closed:
            self._context.term()

    # ------------------------------------------------------------ receive thread

    def _connected_socket(self) -> zmq.Socket:
        sock = sub_socket(self._context, self._topic, self._hwm, **self._options)
        try:
            for address in self._addresses:
                sock.connect(address)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _monitor(self, sock: zmq.Socket) -> Optional[zmq.Socket]:
        if not self._watch:
            return None
        return sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)

    def _loop(self) -> None:
        sock, monitor = self._socket, self._monitor(self._socket)
        try:
            while self._receive(sock, monitor):
                drain(sock, self._stop, self._handle, **self._recv)  # every whole message still queued
                refused = not _next_event(monitor, zmq.EVENT_CONNECT_RETRIED, RETRY_EVENT_WAIT_MS)
                _close(sock, monitor)
                sock, monitor = None, None
                sock = self._socket = self._connected_socket()
                monitor = self._monitor(sock)
                if self._on_dropped is not None:
                    self._on_dropped(refused)
        except Exception as exc:  # keep the dataflow alive; the partition ends the stream with the reason
            log.exception("%s failed", self._name)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if sock is not None:
                _close(sock, monitor)

    def _receive(self, sock: zmq.Socket, monitor: Optional[zmq.Socket]) -> bool:
        """Hand messages on until stopped (False) or the connection drops (True)."""
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(self._poll_ms))
            if sock in ready:
                drain(sock, self._stop, self._handle, **self._recv)
            if monitor is not None and monitor in ready and _next_event(monitor, zmq.EVENT_DISCONNECTED, 0):
                return True
        return False


def _next_event(monitor: Optional[zmq.Socket], wanted: int, timeout_ms: int) -> bool:
    """Whether ``wanted`` comes up among the monitor's events within ``timeout_ms``
    (the others are read and passed over)."""
    if monitor is None:
        return False
    while monitor.poll(timeout_ms):
        event: Dict[str, Any] = parse_monitor_message(monitor.recv_multipart())
        if event["event"] == wanted:
            return True
    return False


def _close(sock: zmq.Socket, monitor: Optional[zmq.Socket]) -> None:
    if monitor is not None:
        sock.disable_monitor()
        monitor.close(linger=0)
    sock.close(linger=0)


class ReceivedBatches:
    """`next_batch`/`next_awake` of a partition that a receive thread fills.

    Each batch is what `_take()` finds ready. Once `_end_reason()` names a reason,
    `_stop_receiver()` stops the thread, `_take_rest()` adds what arrived meanwhile, the `_summary`
    record closes the stream and the next call ends the partition. An empty batch
    asks to be woken `IDLE_WAKE` later instead of at once.
    """

    IDLE_WAKE = timedelta(milliseconds=5)
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
        raise NotImplementedError

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


class DatagramReceiver:
    """Unix datagram sockets bound at ``paths``, drained by their own thread into
    ``handle(text, error)``: one message per datagram, as visualbase's
    ``create_message_sender("uds", ...)`` sends them. A datagram that is not UTF-8
    text is handed on as an error. The socket files are removed on stop: nobody can
    send to them any more.
    """

    def __init__(
        self,
        paths: Sequence[str],
        handle: Callable[[Optional[str], Optional[Exception]], None],
        *,
        name: str,
        poll_ms: int = 50,
    ) -> None:
        self._handle = handle
        self._poll_ms = poll_ms
        self._sockets: List[socket.socket] = []
        self._paths: List[str] = []
        try:
            for path in paths:
                self._sockets.append(bind_datagram_socket(path))
                self._paths.append(path)
        except OSError as exc:
            self._close()
            raise ValueError(f"cannot bind the datagram socket {path}: {exc.strerror or exc}") from exc
        for sock in self._sockets:
            sock.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        stop_receiver(self._stop, self._thread)

    def close(self) -> None:
        self.stop()
        if not self._thread.is_alive():
            self._close()

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets:
            poller.register(sock.fileno(), zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(self._poll_ms))
            for sock in self._sockets:
                if sock.fileno() in ready:
                    self._drain(sock)

    def _drain(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self._handle(None, ValueError(f"a datagram of {len(data)} bytes that is not UTF-8 text"))
                continue
            self._handle(text, None)

    def _close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._paths = []
