"""TRIG messages to visualbase over ZeroMQ PUB.

One partition, so exactly one process binds the address. Each trigger goes out as
the 2-part message [topic, TRIG text]. The partition remembers the keys of recent
triggers it sent, so a resumed run does not ask for the same clip twice.

Bytewax builds a sink partition when its first item arrives, so the socket is bound
just before the first TRIG. A PUB drops what it sends before a subscriber has
joined, so the socket is an XPUB (same wire protocol, but it sees subscriptions)
and the first send waits, bounded, for a subscriber to arrive.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Deque, List, Optional

import zmq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from facemoment.core.types import Trigger
from facemoment.runtime.preflight import bind_error

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"
SEND_HWM = 100  # visualbase's message PUB high-water mark
# On close, give queued TRIGs this long to reach subscribers.
CLOSE_LINGER_MS = 1000
# Keys remembered for de-duplication; triggers come at most one per cooldown.
RECENT_KEYS = 1024
# Before the first send, how long to wait for a subscriber (ZMQ reconnects every 100 ms).
SUBSCRIBER_WAIT_S = 1.0

_PART = "trig_pub"


class TrigBindError(RuntimeError):
    """The TRIG address cannot be bound."""


def _local_format(trigger: Trigger) -> str:
    return (
        f"TRIG label={trigger.label} t_start_ns={int(trigger.t_start_ns)} "
        f"t_end_ns={int(trigger.t_end_ns)} faces={int(trigger.face_count)} "
        f"score={float(trigger.score):.3f} reason={trigger.reason}"
    )


def trigger_message(trigger: Trigger) -> str:
    """The TRIG line for a trigger (facemoment.formats.wire's formatter when present)."""
    try:
        from facemoment.formats.wire import format_trigger
    except ImportError:
        return _local_format(trigger)
    return format_trigger(trigger)


def _bind_error(address: str, exc: zmq.ZMQError) -> TrigBindError:
    return TrigBindError(
        f"cannot bind the TRIG publisher at {address}: {exc.strerror}; "
        "set FACEMOMENT_TRIG_ADDRESS to a free address"
    )


def check_trig_address(address: str) -> None:
    """Fail fast (TrigBindError) if `address` cannot be bound right now."""
    exc = bind_error(address)
    if exc is not None:
        raise _bind_error(address, exc) from exc


class _TrigPubPartition(StatefulSinkPartition[Trigger, List[str]]):
    def __init__(
        self,
        address: str,
        topic: bytes,
        resume_state: Optional[List[str]],
        subscriber_wait_s: float = SUBSCRIBER_WAIT_S,
        ledger: Optional[Path] = None,
    ):
        self._topic = topic
        self._subscriber_wait_s = subscriber_wait_s
        self._waited = False
        self.subscriptions = 0
        # The ledger records each key before its TRIG is sent, so a restart that
        # replays past the last snapshot does not send it again.
        self._ledger = None
        known = list(resume_state or ())
        if ledger is not None:
            ledger.parent.mkdir(parents=True, exist_ok=True)
            if ledger.exists():
                known += [line for line in ledger.read_text().splitlines() if line]
            self._ledger = open(ledger, "a")
        self._sent: Deque[str] = deque(known, maxlen=RECENT_KEYS)
        self._sent_set = set(self._sent)
        self.sent_count = 0
        self.skipped_count = 0
        self.error_count = 0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        try:
            self._sock.bind(address)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            self._ctx.term()
            raise _bind_error(address, exc) from exc
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("TRIG publisher bound at %s", self.endpoint)
        self._outbox: "queue.SimpleQueue[Optional[str]]" = queue.SimpleQueue()
        self._handled = threading.Condition()
        self._queued_count = 0
        self._handled_count = 0
        self._sender = threading.Thread(target=self._send_loop, name="trig-pub", daemon=True)
        self._sender.start()

    def _remember(self, key: str) -> None:
        if len(self._sent) == self._sent.maxlen:
            self._sent_set.discard(self._sent[0])
        self._sent.append(key)
        self._sent_set.add(key)

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        while self._sock.poll(timeout_ms, zmq.POLLIN):
            message = self._sock.recv()
            if message[:1] == b"\x01":
                self.subscriptions += 1
            timeout_ms = 0

    def _await_first_subscriber(self) -> None:
        self._read_subscriptions()
        if self._waited or self.subscriptions:
            return
        self._waited = True
        self._read_subscriptions(int(self._subscriber_wait_s * 1000))
        if not self.subscriptions:
            log.warning("no TRIG subscriber at %s yet: TRIG messages are published to nobody", self.endpoint)

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
                text = trigger_message(trigger)
            except ValueError as exc:
                self.error_count += 1
                log.error("TRIG not sent for %s: %s", key, exc)
                continue
            self._remember(key)
            if self._ledger is not None:
                self._ledger.write(key + "\n")
                self._ledger.flush()
            self._queued_count += 1
            self._outbox.put(text)

    def _send_loop(self) -> None:
        while True:
            text = self._outbox.get()
            if text is None:
                break
            self._await_first_subscriber()
            try:
                # A PUB never blocks; NOBLOCK only turns "no route" oddities into errors.
                self._sock.send_multipart([self._topic, text.encode("utf-8")], flags=zmq.NOBLOCK)
                self.sent_count += 1
                log.info("sent %s", text)
            except zmq.Again:
                self.error_count += 1
                log.warning("TRIG dropped (publisher queue full): %s", text)
            with self._handled:
                self._handled_count += 1
                self._handled.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued TRIG has been handed to the socket."""
        with self._handled:
            return self._handled.wait_for(lambda: self._handled_count >= self._queued_count, timeout_s)

    def snapshot(self) -> List[str]:
        return list(self._sent)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
        self._outbox.put(None)
        self._sender.join(timeout=self._subscriber_wait_s + 10)
        self._sock.close()
        self._ctx.term()


class TrigPubSink(FixedPartitionedSink[Trigger, List[str]]):
    """Publish `(stream_id, Trigger)` items as TRIG text on a ZMQ PUB socket.

    `address` may use a wildcard port (`tcp://127.0.0.1:*`); the bound endpoint is
    the partition's `endpoint`.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        topic: bytes = b"msg",
        subscriber_wait_s: float = SUBSCRIBER_WAIT_S,
        ledger: Optional[str | os.PathLike[str]] = None,
    ):
        if not address:
            raise ValueError("TRIG address must not be empty (FACEMOMENT_TRIG_ADDRESS)")
        self._address = address
        self._topic = topic
        self._subscriber_wait_s = subscriber_wait_s
        self._ledger = Path(ledger) if ledger is not None else None

    def check_address(self) -> None:
        """Fail fast if the address is taken (the partition binds only at the first trigger)."""
        if "*" not in self._address:
            check_trig_address(self._address)

    def list_parts(self) -> List[str]:
        return [_PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: Optional[List[str]]
    ) -> _TrigPubPartition:
        return _TrigPubPartition(self._address, self._topic, resume_state, self._subscriber_wait_s, self._ledger)


__all__ = ["TrigPubSink", "TrigBindError", "check_trig_address", "trigger_message", "DEFAULT_ADDRESS"]
