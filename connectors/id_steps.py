"""Frame-id gaps in streams whose ids advance by a step larger than one.

A visualbase proxy stream is sampled down from the camera's: a 10 fps proxy of a
30 fps camera keeps the camera's ids, which advance by about 3 (2, 3 or 4 as the
camera's timing jitters). The usual advance, the most common of the recent ones, is
the stream's step; an advance is a gap only when it rounds to two steps or more,
and the gap counts the stream's frames missing, not the camera's ids. With a step
of one this is exactly :func:`connectors.shares.frame_gap`. The first advance only
teaches the step: a gap there goes unnoticed.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Deque, List, Optional

from connectors.shares import Gap, frame_gap

# The step is the most common advance among this many recent ones.
STEP_WINDOW = 32
MAX_LISTED_IDS = 32


class IdStep:
    """A stream's usual frame-id advance, learned from its recent advances."""

    def __init__(self, recent: Optional[List[int]] = None) -> None:
        self._recent: Deque[int] = deque((int(d) for d in recent or () if int(d) > 0), maxlen=STEP_WINDOW)

    @property
    def step(self) -> Optional[int]:
        if not self._recent:
            return None
        counts = Counter(self._recent)
        # The most common advance; ties go to the smaller one.
        return min(counts, key=lambda d: (-counts[d], d))

    def recent(self) -> List[int]:
        return list(self._recent)

    def gap(self, previous: Optional[int], frame_id: int) -> Optional[Gap]:
        """The proxy frames missing before ``frame_id``; learns the advance too."""
        if previous is None or frame_id <= previous:
            return None
        step = self.step
        advance = frame_id - previous
        self._recent.append(advance)
        if step is None or step == 1:
            return frame_gap(previous, frame_id) if step == 1 else None
        missing = (advance + step // 2) // step - 1  # advances rounded to whole steps
        if missing <= 0:
            return None
        return Gap(previous + 1, frame_id - 1, missing)

    def listed(self, previous: int, gap: Gap) -> Optional[List[int]]:
        """The ids the missing proxy frames would most likely have had (small gaps only)."""
        if gap.count > MAX_LISTED_IDS:
            return None
        step = (gap.last + 1 - previous) / (gap.count + 1)
        return [previous + round(step * (k + 1)) for k in range(gap.count)]


__all__ = ["IdStep", "STEP_WINDOW"]
