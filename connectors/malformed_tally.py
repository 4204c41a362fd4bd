"""Malformed input, counted by kind and reported at most once per kind per interval.

Every live input (frames over ZeroMQ, proxy FIFOs, OBS over ZeroMQ or Unix
datagrams) meets garbage at whatever rate a peer sends it. One trace record per
message would let a flood grow the trace and the memory without bound, so each
input counts every message here and turns the counts into one
``malformed_message`` record per kind per :data:`MALFORMED_INTERVAL_S`: ``count``
is the kind's total so far, ``messages`` how many since the kind's previous record.
The memory held is one counter and one detail per kind, whatever the flood.

Not thread-safe: the input's lock guards it.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

from facemoment.core.records import MalformedMessage

# Malformed messages of one kind make at most one trace record per this interval.
MALFORMED_INTERVAL_S = 1.0
# Details are kept for the record only: a hostile message must not make them large.
MAX_DETAIL_CHARS = 200


class MalformedTally:
    """Counts per kind (``counts``, shared with the input's summary) and the records due."""

    def __init__(
        self,
        stream_id: str,
        counts: Optional[Dict[str, int]] = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = MALFORMED_INTERVAL_S,
    ) -> None:
        self.stream_id = stream_id
        self.counts: Dict[str, int] = counts if counts is not None else {}
        self._clock = clock
        self._interval_s = interval_s
        self._pending: Dict[str, List] = {}  # kind -> [messages since its last record, last detail]
        self._flushed = self._clock() - interval_s

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        pending = self._pending.setdefault(kind, [0, ""])
        pending[0] += 1
        pending[1] = detail[:MAX_DETAIL_CHARS]

    def due(self, force: bool = False) -> List[MalformedMessage]:
        """One record per kind seen since the last, if the interval passed (or ``force``)."""
        now = self._clock()
        if not self._pending or (not force and now - self._flushed < self._interval_s):
            return []
        out = [
            MalformedMessage(kind=kind, detail=detail, count=self.counts[kind], messages=messages, stream=self.stream_id)
            for kind, (messages, detail) in self._pending.items()
        ]
        self._pending = {}
        self._flushed = now
        return out


__all__ = ["MALFORMED_INTERVAL_S", "MalformedTally"]
