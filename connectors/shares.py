"""Splitting one stream into shares, one per worker, so extraction spreads out
without moving frame pixels between workers.

Share `i` of `n` carries the frames whose `frame_id % n == i`. Bytewax assigns a
source's partitions to workers round-robin over their sorted names, so `n` shares
named `STREAM/iofn` land on `n` different workers when the run has `n` workers.
"""

from __future__ import annotations

from typing import List, Tuple


def share_parts(stream_id: str, shares: int) -> List[str]:
    if shares <= 1:
        return [stream_id]
    width = len(str(shares - 1))
    return [f"{stream_id}/{i:0{width}d}of{shares}" for i in range(shares)]


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
