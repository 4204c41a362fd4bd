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
import socket
from typing import Optional, Protocol

import zmq

from facemoment.core.addresses import UNIX_SCHEME, parse_address
from facemoment.runtime.subscriptions import SubscriberCount

log = logging.getLogger(__name__)

SENT, UNHEARD, DROPPED = "sent", "unheard", "dropped"
SEND_HWM = 100  # visualbase's message PUB high-water mark
CLOSE_LINGER_MS = 1000  # on close, queued messages get this long to reach subscribers
MAX_DATAGRAM = 65536  # visualbase's receive size


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
    """One datagram per message to ``path``; never blocks, never raises for a missing peer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.endpoint = f"{UNIX_SCHEME}://{path}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, text: str) -> str:
        data = text.encode("utf-8")
        if len(data) > MAX_DATAGRAM:
            log.error("message of %d bytes is larger than a datagram visualbase reads", len(data))
            return DROPPED
        try:
            self._sock.sendto(data, self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            return UNHEARD  # no socket file, or nobody bound to it any more
        except BlockingIOError:
            return DROPPED  # the receiver's buffer is full
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                return UNHEARD
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                return DROPPED
            raise
        return SENT

    def close(self) -> None:
        self._sock.close()


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
]
