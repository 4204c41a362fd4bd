"""Fan-out of the page's events to connected browsers, one bounded queue each.

Publishing never waits for a browser: an event that does not fit a client's queue is
dropped and counted, and that client gets a full snapshot in place of what it missed
as soon as its queue has room again. Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

# Events a slow browser may fall behind by before its events are dropped.
QUEUE_SIZE = 256

# Put in a client's queue in place of the events it lost: send a fresh snapshot.
RESYNC = ("resync", {})


@dataclass
class Client:
    id: int
    peer: str
    queue: "asyncio.Queue[Tuple[str, Dict[str, Any]]]"
    delivered: int = 0
    dropped: int = 0
    resync_due: bool = False

    def as_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "peer": self.peer, "queued": self.queue.qsize(), "delivered": self.delivered,
                "dropped": self.dropped}


@dataclass
class Hub:
    queue_size: int = QUEUE_SIZE
    clients: Dict[int, Client] = field(default_factory=dict)
    published: int = 0
    dropped_total: int = 0
    _ids: Any = field(default_factory=itertools.count)

    def connect(self, peer: str) -> Client:
        client = Client(next(self._ids) + 1, peer, asyncio.Queue(self.queue_size))
        self.clients[client.id] = client
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.pop(client.id, None)

    def publish(self, name: str, data: Dict[str, Any]) -> None:
        """Queue an event for every client; never blocks."""
        self.published += 1
        for client in list(self.clients.values()):
            if client.resync_due and client.queue.full():
                client.dropped += 1
                self.dropped_total += 1
                continue
            if client.resync_due:
                # The snapshot it will get covers this event too.
                client.resync_due = False
                client.queue.put_nowait(RESYNC)
                continue
            try:
                client.queue.put_nowait((name, data))
            except asyncio.QueueFull:
                client.dropped += 1
                self.dropped_total += 1
                client.resync_due = True

    def stats(self) -> Dict[str, Any]:
        return {
            "published": self.published,
            "dropped": self.dropped_total,
            "clients": [c.as_dict() for c in self.clients.values()],
        }

    def flush_resyncs(self) -> List[int]:
        """Give clients that lost events and now have room their snapshot marker."""
        sent = []
        for client in self.clients.values():
            if client.resync_due and not client.queue.full():
                client.resync_due = False
                client.queue.put_nowait(RESYNC)
                sent.append(client.id)
        return sent
