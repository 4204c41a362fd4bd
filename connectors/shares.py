"""Splitting one stream into shares, one per worker, so extraction spreads out
without moving frame pixels between workers.

Share `i` of `n` carries the frames whose `frame_id % n == i`. Bytewax assigns a
source's partitions to workers round-robin over their sorted names, so `n` shares
named `STREAM/iofn` land on `n` different workers when the run has `n` workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


def share_parts(stream_id: str, shares: int) -> List[str]:
    if shares <= 1:
        return [stream_id]
    width = len(str(shares - 1))
    return [f"{stream_id}/{i:0{width}d}of{shares}" for i in range(shares)]


class StreamShares:
    """`list_parts` of a source that splits its one stream into `shares` partitions."""

    stream_id: str
    shares: int

    def list_parts(self) -> List[str]:
        return share_parts(self.stream_id, self.shares)


def parse_share(part: str) -> Tuple[str, int, int]:
    """(stream id, share index, share count) of a partition name."""
    stream_id, sep, share = part.rpartition("/")
    if sep and "of" in share:
        index, _, count = share.partition("of")
        if index.isdigit() and count.isdigit():
            return stream_id, int(index), int(count)
    return part, 0, 1


def in_share(frame_id: int, index: int, count: int) -> bool:
    return count <= 1 or frame_id % count == index


def ids_in_share(first: int, last: int, index: int = 0, count: int = 1) -> int:
    """How many ids in ``first..last`` (inclusive) belong to share ``index`` of ``count``.

    Arithmetic, not enumeration: a gap of 2^64 ids costs as little as a gap of one.
    """
    if last < first:
        return 0
    if count <= 1:
        return last - first + 1
    return (last - index) // count - (first - 1 - index) // count


@dataclass(frozen=True)
class Gap:
    """Frame ids missing between two received ones: a range and a count, never a list."""

    first: int  # first missing id of the stream
    last: int  # last missing id of the stream
    count: int  # how many of them belong to the share that saw the gap

    def listed(self, index: int = 0, count: int = 1, limit: int = 32) -> Optional[List[int]]:
        """The share's missing ids, only for small gaps (None beyond ``limit``)."""
        if self.count > limit:
            return None
        return [i for i in range(self.first, self.last + 1) if in_share(i, index, count)]


def frame_gap(previous: Optional[int], frame_id: int, index: int = 0, count: int = 1) -> Optional[Gap]:
    """The gap ``frame_id`` reveals after ``previous``, as the share ``index`` of ``count`` sees it.

    None when there is no previous id, when ids do not increase (a publisher
    restart, not a gap) or when none of the missing ids belong to the share.
    The one definition of a frame-id gap: sources and the recorder all use it.
    """
    if previous is None or frame_id <= previous + 1:
        return None
    missing = ids_in_share(previous + 1, frame_id - 1, index, count)
    if missing == 0:
        return None
    return Gap(previous + 1, frame_id - 1, missing)
