"""The two transports visualbase reads text messages (TRIG, OBS) from.

- ZeroMQ (``tcp://``, ``ipc://``): a PUB socket sending ``[topic, text]``, send
  high-water mark 100. It is an XPUB (SUB peers cannot tell), so the first send can
  wait, bounded, for a subscriber: a PUB drops what it sends before anyone joined.
- Unix datagram (``unix:///path``): one UTF-8 message per datagram to the socket
  file a receiver bound (visualbase's ``ingest --trig-socket``). Sends never block:
  with nobody listening, or a receiver whose buffer is full, the message is
  counted and dropped.

Both have ``send(text) -> status`` and ``close()``; status is one of ``SENT``,
``UNHEARD`` (nobody listening), ``DROPPED`` (queue or buffer full).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import threading
import time
from typing import Optional, Protocol

import zmq

from facemoment.core.addresses import UNIX_SCHEME, parse_address
from facemoment.runtime.preflight import ipc_conflict
from facemoment.runtime.subscriptions import SubscriberCount

log = logging.getLogger(__name__)

SENT, UNHEARD, DROPPED = "sent", "unheard", "dropped"
SEND_HWM = 100  # visualbase's message PUB high-water mark
CLOSE_LINGER_MS = 1000  # on close, queued messages get this long to reach subscribers
MAX_DATAGRAM = 65536  # visualbase's receive size
RECEIVE_BUFFER = 8 * 1024 * 1024  # a bound OBS socket keeps bursts of several senders
RECEIVER_POLL_S = 0.05


class BindError(RuntimeError):
    """A message address cannot be bound."""


class TextTransport(Protocol):
    endpoint: str

    def send(self, text: str) -> str: ...

    def close(self) -> None: ...


class ZmqTextTransport:
    """``[topic, text]`` on a bound XPUB; waits once, bounded, for a first subscriber."""

    def __init__(
        self, address: str, topic: bytes, subscriber_wait_s: float = 1.0, what: str = "TRIG", send_hwm: int = SEND_HWM
    ) -> None:
        self._topic = topic
        self._subscriber_wait_s = subscriber_wait_s
        self._waited = False
        self._what = what
        conflict = ipc_conflict(address, what)
        if conflict is not None:
            raise BindError(conflict)  # binding would delete another program's socket file
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, send_hwm)
        self._sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        try:
            self._sock.bind(address)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            self._ctx.term()
            raise BindError(
                f"cannot bind the {what} publisher at {address}: {exc.strerror}; "
                f"set FACEMOMENT_{what}_ADDRESS to a free address"
            ) from exc
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscribers = SubscriberCount(self._sock, topic)

    def _await_first_subscriber(self) -> None:
        if self._waited or self.subscribers.read():
            return
        self._waited = True
        if not self.subscribers.wait_for(1, self._subscriber_wait_s):
            log.warning("no %s subscriber at %s yet: messages are published to nobody", self._what, self.endpoint)

    def send(self, text: str) -> str:
        self._await_first_subscriber()
        try:
            # A PUB never blocks; NOBLOCK turns a full queue into an error instead.
            self._sock.send_multipart([self._topic, text.encode("utf-8")], flags=zmq.NOBLOCK)
        except zmq.Again:
            return DROPPED
        return SENT if self.subscribers.count else UNHEARD

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()


class UnixDatagramTransport:
    """One datagram per message to ``path``; never raises for a missing peer.

    By default a send never blocks (TRIG: nobody waits on visualbase). OBS senders
    may wait, bounded: ``first_wait_s`` for a receiver to bind before the first
    message (as a ZeroMQ publisher waits for a first subscriber), ``room_wait_s``
    for room in a busy receiver's queue. After a wait for room that ran out, sends
    stop waiting until one goes through again, so a receiver that stopped reading
    costs one wait, not one per message.
    """

    def __init__(self, path: str, first_wait_s: float = 0.0, room_wait_s: float = 0.0) -> None:
        self.path = path
        self.endpoint = f"{UNIX_SCHEME}://{path}"
        self._first_wait_s = first_wait_s
        self._room_wait_s = room_wait_s
        self._heard_once = False
        self._congested = False
        self._sock: Optional[socket.socket] = None

    def _connected(self) -> socket.socket:
        # Connected, so a full receiver queue can be waited on with poll().
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _drop_connection(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send_once(self, data: bytes) -> str:
        for attempt in (0, 1):
            try:
                self._connected().send(data)
                return SENT
            except (FileNotFoundError, ConnectionRefusedError):
                # No socket file, or the receiver we were connected to is gone: a new
                # one may be bound at the path now, so connect again once.
                self._drop_connection()
                if attempt:
                    return UNHEARD
            except BlockingIOError:
                return DROPPED
            except OSError as exc:
                self._drop_connection()
                if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EPROTOTYPE):
                    if attempt:
                        return UNHEARD
                    continue
                if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                    return DROPPED
                raise
        return UNHEARD

    def _wait_for_room(self, data: bytes) -> str:
        deadline = time.monotonic() + self._room_wait_s
        status = DROPPED
        while status == DROPPED and self._sock is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            poller = select.poll()
            poller.register(self._sock, select.POLLOUT)
            poller.poll(max(1, int(remaining * 1000)))
            status = self._send_once(data)
        return status

    def _wait_for_receiver(self, data: bytes) -> str:
        deadline = time.monotonic() + self._first_wait_s
        waiter = threading.Event()
        status = UNHEARD
        while status == UNHEARD and time.monotonic() < deadline:
            waiter.wait(RECEIVER_POLL_S)  # nothing to wait on but the path appearing
            status = self._send_once(data)
        if status == UNHEARD:
            log.warning("nobody bound at %s after %.1f s: messages are sent to nobody", self.endpoint, self._first_wait_s)
        return status

    def send(self, text: str) -> str:
        data = text.encode("utf-8")
        if len(data) > MAX_DATAGRAM:
            log.error("message of %d bytes is larger than a datagram visualbase reads", len(data))
            return DROPPED
        status = self._send_once(data)
        if status == UNHEARD and not self._heard_once and self._first_wait_s > 0:
            self._heard_once = True  # wait once only
            status = self._wait_for_receiver(data)
        if status == DROPPED and self._room_wait_s > 0 and not self._congested:
            status = self._wait_for_room(data)
            self._congested = status == DROPPED
        if status == SENT:
            self._heard_once = True
            self._congested = False
        return status

    def close(self) -> None:
        self._drop_connection()


def bind_datagram_socket(path: str, rcvbuf: int = RECEIVE_BUFFER) -> socket.socket:
    """A Unix datagram socket bound at ``path`` (a stale file there removed first, as
    visualbase's receivers do), for reading messages of up to MAX_DATAGRAM bytes."""
    if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    return sock


def open_text_transport(
    address: str, topic: bytes = b"msg", subscriber_wait_s: float = 1.0, what: str = "TRIG", unix: bool = True
) -> "ZmqTextTransport | UnixDatagramTransport":
    """The transport for ``address``: ``unix:///path`` or a ZeroMQ address."""
    parsed = parse_address(address, what, unix=unix)
    if parsed.scheme == UNIX_SCHEME:
        return UnixDatagramTransport(parsed.path)
    return ZmqTextTransport(parsed.text, topic, subscriber_wait_s, what)


__all__ = [
    "SENT",
    "UNHEARD",
    "DROPPED",
    "BindError",
    "TextTransport",
    "ZmqTextTransport",
    "UnixDatagramTransport",
    "open_text_transport",
    "bind_datagram_socket",
]
