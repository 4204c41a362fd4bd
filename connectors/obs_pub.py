"""OBS messages out: every observation as visualbase's OBS text, on a ZeroMQ PUB or
as datagrams to a Unix socket the fusion process binds (``unix:///path``, the seed's
``create_message_sender("uds", "/tmp/obs.sock")``; several extractors send to one).

One message per extractor per frame, as produced, plus the ``frame`` marker of
every frame (so a remote fusion knows a frame existed even when every extractor
missed it). The text is the spec's grammar with FaceMoment's extra fields
(facemoment.formats.obs, "Extended OBS"), which visualbase's parser ignores.

One partition, so exactly one process binds the address. Sends never wait except
once, bounded, for a first subscriber (a PUB drops what it sends before anyone
joined). Its send queue is large (see SEND_HWM); a subscriber that still falls
behind loses messages, which the OBS input accounts for as gaps. Over a Unix socket
the first message waits, as long, for the receiver to bind, and a send waits up to
``ROOM_WAIT_S`` for room in the receiver's queue (Linux queues only a few
datagrams per socket): the fusion's pace holds extraction back a little rather
than losing observations.

When the dataflow ends, a last ``OBS src=end frame=<last> t_ns=<last> pub=<name>``
tells a fusion reading several publishers that this one is done (visualbase's
parser reads it as an OBS of an unknown source and keeps nothing of it).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import List, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.text_transports import DROPPED, UNHEARD, TextTransport, UnixDatagramTransport, ZmqTextTransport
from facemoment.core.addresses import UNIX_SCHEME, parse_address
from facemoment.core.types import Observation
from facemoment.formats.obs import format_obs

log = logging.getLogger(__name__)

SUBSCRIBER_WAIT_S = 1.0
# Extraction hands on observations in bursts (a batch of frames at a time, five
# messages per frame); visualbase's 100 would drop most of a burst to a subscriber
# that is busy for a moment. OBS are small: 100 000 of them are a few tens of MB.
SEND_HWM = 100_000
# Over a Unix socket: how long one message may wait for room in the receiver's queue.
ROOM_WAIT_S = 5.0
END_SOURCE = "end"  # the last message of a publisher
_PART = "obs_pub"


class _ObsPubPartition(StatefulSinkPartition[Observation, None]):
    def __init__(self, address: str, topic: bytes, publisher: str, subscriber_wait_s: float) -> None:
        parsed = parse_address(address, "OBS", unix=True)
        self.transport: TextTransport
        if parsed.scheme == UNIX_SCHEME:
            self.transport = UnixDatagramTransport(parsed.path, first_wait_s=subscriber_wait_s, room_wait_s=ROOM_WAIT_S)
        else:
            self.transport = ZmqTextTransport(address, topic, subscriber_wait_s, "OBS", send_hwm=SEND_HWM)
        self.endpoint = self.transport.endpoint
        self.publisher = publisher
        self.outcomes: Counter = Counter()
        self._last: Observation = Observation(END_SOURCE, "", 0, 0)
        log.info("OBS messages published at %s", self.endpoint)

    def write_batch(self, values: List[Observation]) -> None:
        for obs in values:
            try:
                text = format_obs(obs, extended=True, publisher=self.publisher)
            except ValueError as exc:
                self.outcomes["unformattable"] += 1
                log.error("OBS not sent for %s frame %s: %s", obs.source, obs.frame_id, exc)
                continue
            status = self.transport.send(text)
            self.outcomes[status] += 1
            self._last = obs
            if status == DROPPED and self.outcomes[DROPPED] == 1:
                log.warning("OBS queue full at %s: messages are being dropped", self.endpoint)
            elif status == UNHEARD and isinstance(self.transport, UnixDatagramTransport) and self.outcomes[status] == 1:
                log.warning("nobody bound at %s: OBS messages are lost until a fusion binds it", self.endpoint)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        end = Observation(END_SOURCE, "", self._last.frame_id, self._last.t_ns)
        self.outcomes[f"end_{self.transport.send(format_obs(end, extended=True, publisher=self.publisher))}"] += 1
        log.info("OBS publisher %s: %s", self.endpoint, dict(self.outcomes))
        self.transport.close()


class ObsPubSink(FixedPartitionedSink[Observation, None]):
    """Publish `(key, Observation)` items as OBS text at a ZeroMQ `address` (bound
    here) or to `unix:///path` (a datagram socket the fusion binds).

    `publisher` names this sender in each message (``pub=``), so a fusion reading
    several publishers accounts for each one's gaps apart.
    """

    def __init__(
        self,
        address: str,
        topic: bytes = b"msg",
        publisher: str = "",
        subscriber_wait_s: float = SUBSCRIBER_WAIT_S,
    ) -> None:
        self._address = parse_address(address, "OBS", unix=True).text
        self._topic = topic
        self._publisher = publisher
        self._subscriber_wait_s = subscriber_wait_s

    def list_parts(self) -> List[str]:
        return [_PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[None]) -> _ObsPubPartition:
        return _ObsPubPartition(self._address, self._topic, self._publisher, self._subscriber_wait_s)


__all__ = ["ObsPubSink", "END_SOURCE"]
