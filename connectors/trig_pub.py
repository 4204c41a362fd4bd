"""TRIG messages to visualbase, over ZeroMQ PUB or a Unix datagram socket.

One partition, so exactly one process binds the address. Each trigger goes out as
one TRIG text through the transport its address names (connectors.text_transports:
``tcp://``/``ipc://`` as the 2-part message [topic, text], ``unix:///path`` as one
datagram). The partition remembers the keys of recent triggers it sent, and with a
ledger file across restarts, so a resumed run does not ask for the same clip twice.
A key goes into the ledger once its TRIG was handed to the socket, and the
snapshot carries the TRIG texts still queued, so a run killed between taking a
trigger and sending it sends it after the restart (nothing lost; a kill in the
microseconds between a send and its ledger line is the only way to send twice).

Bytewax builds a sink partition when its first item arrives, so the socket is bound
just before the first TRIG. Sends happen on a thread of their own, so the dataflow
never waits on a socket. Every send is appended to ``sends`` (a JSONL file next to
the ledger when one is given): key, transport, status (sent | unheard | dropped) and
the wall time, which the run summary counts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.text_transports import (
    DROPPED,
    SENT,
    UNHEARD,
    BindError,
    ZmqTextTransport,
    open_text_transport,
)
from facemoment.core.addresses import parse_address
from facemoment.core.types import Trigger
from facemoment.formats.wire import format_trigger

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "unix:///tmp/trig.sock"  # visualbase ingest's default --trig-socket
SEND_HWM = 100  # visualbase's message PUB high-water mark
# Keys remembered for de-duplication; triggers come at most one per cooldown.
RECENT_KEYS = 1024
# Before the first send, how long to wait for a subscriber (ZMQ reconnects every 100 ms).
SUBSCRIBER_WAIT_S = 1.0
SENDS_FILE = "trig_sends.jsonl"

_PART = "trig_pub"

TrigBindError = BindError

# The partition's state: the keys sent or queued, and the queued TRIG texts by key.
TrigState = Dict[str, Any]


class _TrigPubPartition(StatefulSinkPartition[Trigger, TrigState]):
    def __init__(
        self,
        address: str,
        topic: bytes,
        resume_state: Optional[TrigState],
        subscriber_wait_s: float = SUBSCRIBER_WAIT_S,
        ledger: Optional[Path] = None,
        sends: Optional[Path] = None,
    ):
        self._subscriber_wait_s = subscriber_wait_s
        self.transport = open_text_transport(address, topic, subscriber_wait_s, "TRIG")
        self.endpoint: str = self.transport.endpoint
        # The ledger records each key once its TRIG went to the socket, so a restart
        # that replays past the last snapshot does not send it again.
        self._ledger = None
        self._sends = None
        state = resume_state or {}
        known = list(state.get("keys", ()))
        done = set()
        if ledger is not None:
            ledger.parent.mkdir(parents=True, exist_ok=True)
            if ledger.exists():
                done = {line for line in ledger.read_text().splitlines() if line}
                known += sorted(done - set(known))
            self._ledger = open(ledger, "a")
        if sends is not None:
            sends.parent.mkdir(parents=True, exist_ok=True)
            # A run that keeps its outputs (it has a ledger) continues the file; others start it anew.
            self._sends = open(sends, "a" if ledger is not None else "w")
        self._sent: Deque[str] = deque(known, maxlen=RECENT_KEYS)
        self._sent_set = set(self._sent)
        self.sent_count = 0  # handed to the transport (heard or not)
        self.skipped_count = 0
        self.error_count = 0  # not formatted, or dropped by a full queue
        self.outcomes: Counter = Counter()
        log.info("TRIG messages go to %s", self.endpoint)
        self._outbox: "queue.SimpleQueue[Optional[Tuple[str, str]]]" = queue.SimpleQueue()
        self._handled = threading.Condition()
        self._queued_count = 0
        self._handled_count = 0
        self._queued: Dict[str, str] = {}  # key -> TRIG text, not yet handed to the socket (guarded by _handled)
        self._sender = threading.Thread(target=self._send_loop, name="trig-pub", daemon=True)
        self._sender.start()
        for key, text in state.get("queued", ()):  # taken before the stop, never sent
            if key not in done:
                self._enqueue(key, text)

    @property
    def subscriptions(self) -> int:
        """ZeroMQ subscribers seen so far (a datagram socket has none to count)."""
        transport = self.transport
        return transport.subscribers.count if isinstance(transport, ZmqTextTransport) else 0

    def _remember(self, key: str) -> None:
        if len(self._sent) == self._sent.maxlen:
            self._sent_set.discard(self._sent[0])
        self._sent.append(key)
        self._sent_set.add(key)

    def write_batch(self, values: List[Trigger]) -> None:
        # Formatting and de-duplication happen here; the socket work (including the
        # one-time wait for a first subscriber) happens on the sender thread, so the
        # dataflow never stalls on it.
        for trigger in values:
            key = trigger.key
            if key in self._sent_set:
                self.skipped_count += 1
                continue
            try:
                text = format_trigger(trigger)
            except ValueError as exc:
                self.error_count += 1
                log.error("TRIG not sent for %s: %s", key, exc)
                continue
            self._remember(key)
            self._enqueue(key, text)

    def _enqueue(self, key: str, text: str) -> None:
        with self._handled:
            self._queued[key] = text
            self._queued_count += 1
        self._outbox.put((key, text))

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                break
            key, text = item
            try:
                status = self.transport.send(text)
            except Exception as exc:  # noqa: BLE001 - a socket error must not end the sender
                log.error("TRIG to %s failed: %s", self.endpoint, exc)
                status = DROPPED
            self.outcomes[status] += 1
            if status == DROPPED:
                self.error_count += 1
                log.warning("TRIG dropped (queue full): %s", text)
            else:
                self.sent_count += 1
                if status == UNHEARD:
                    log.warning("TRIG sent with nobody listening at %s: %s", self.endpoint, text)
                else:
                    log.info("sent %s", text)
            if self._ledger is not None:
                self._ledger.write(key + "\n")
                self._ledger.flush()
            if self._sends is not None:
                row = {"key": key, "to": self.endpoint, "status": status, "sent_at_ns": time.time_ns()}
                self._sends.write(json.dumps(row) + "\n")
                self._sends.flush()
            with self._handled:
                self._queued.pop(key, None)
                self._handled_count += 1
                self._handled.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued TRIG has been handed to the socket."""
        with self._handled:
            return self._handled.wait_for(lambda: self._handled_count >= self._queued_count, timeout_s)

    def snapshot(self) -> TrigState:
        with self._handled:
            queued = [[key, text] for key, text in self._queued.items()]
        return {"keys": list(self._sent), "queued": queued}

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=self._subscriber_wait_s + 10)
        if self._ledger is not None:  # after the sender: it writes a key once its TRIG went out
            self._ledger.close()
        self.transport.close()
        if self._sends is not None:
            self._sends.close()


class TrigPubSink(FixedPartitionedSink[Trigger, TrigState]):
    """Send `(stream_id, Trigger)` items as TRIG text to `address`.

    `address` is a ZeroMQ address to bind a PUB at (a wildcard port,
    `tcp://127.0.0.1:*`, is allowed; the bound endpoint is the partition's
    `endpoint`) or `unix:///path`, a datagram socket some receiver binds.
    `sends` names a JSONL file that gets one row per send.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        topic: bytes = b"msg",
        subscriber_wait_s: float = SUBSCRIBER_WAIT_S,
        ledger: Optional[str | os.PathLike[str]] = None,
        sends: Optional[str | os.PathLike[str]] = None,
    ):
        if not address:
            raise ValueError("TRIG address must not be empty (FACEMOMENT_TRIG_ADDRESS)")
        parse_address(address, "TRIG", unix=True)
        self._address = address
        self._topic = topic
        self._subscriber_wait_s = subscriber_wait_s
        self._ledger = Path(ledger) if ledger is not None else None
        self._sends = Path(sends) if sends is not None else None

    def list_parts(self) -> List[str]:
        return [_PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: Optional[TrigState]
    ) -> _TrigPubPartition:
        return _TrigPubPartition(
            self._address, self._topic, resume_state, self._subscriber_wait_s, self._ledger, self._sends
        )


__all__ = ["TrigPubSink", "TrigBindError", "DEFAULT_ADDRESS", "SENDS_FILE", "SENT", "UNHEARD", "DROPPED"]
