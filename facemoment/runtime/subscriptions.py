"""Counting subscribers on an XPUB socket.

An XPUB is a PUB that passes its peers' subscriptions up as messages: ``\\x01`` +
topic when a SUB subscribes, ``\\x00`` + topic when it unsubscribes (or goes
away).  SUB peers cannot tell it from a PUB, so a publisher can use it to wait for
its first subscribers without changing anything on the wire.  Set
``XPUB_VERBOSE`` on the socket to see every subscription, not only the first one
to each topic.
"""

from __future__ import annotations

import time
from typing import Optional

import zmq

SUBSCRIBE = b"\x01"
UNSUBSCRIBE = b"\x00"


class SubscriberCount:
    """The number of subscriptions on ``socket`` that receive ``topic``.

    A subscription to a prefix of ``topic`` (the empty one included) receives it.
    Read the socket's pending subscription messages with :meth:`read`; nothing
    else may read from the socket.
    """

    def __init__(self, socket: zmq.Socket, topic: bytes = b"") -> None:
        self._socket = socket
        self._topic = topic
        self.count = 0

    def read(self, timeout_ms: int = 0) -> int:
        """Take every pending subscription message, waiting up to ``timeout_ms`` for the first."""
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            message = self._socket.recv()
            if not self._topic.startswith(message[1:]):
                continue
            if message[:1] == SUBSCRIBE:
                self.count += 1
            elif message[:1] == UNSUBSCRIBE:
                self.count = max(0, self.count - 1)
        return self.count

    def wait_for(self, wanted: int, timeout: Optional[float] = None) -> bool:
        """Block until at least ``wanted`` subscriptions arrived; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.read() < wanted:
            if deadline is None:
                wait_ms = 100
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait_ms = max(1, min(100, int(remaining * 1000)))
            self.read(wait_ms)
        return True


__all__ = ["SubscriberCount", "SUBSCRIBE", "UNSUBSCRIBE"]
