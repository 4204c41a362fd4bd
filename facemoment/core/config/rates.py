"""Declared extractor rates (`extract.every`): which frames a rated extractor runs on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

from facemoment.core.config.errors import ConfigError
from facemoment.core.config.sections import KNOWN_EXTRACTORS, ExtractConfig


@dataclass(frozen=True)
class Rate:
    """A declared extractor rate: it runs on the frames with ``frame_id % every == phase``.

    The phase lets two rated extractors take turns (pose on even frames, hands on
    odd ones), so no frame carries both costs and, with as many shares as the rate,
    each share's worker gets one of them instead of one worker getting both.
    """

    every: int
    phase: int = 0

    def due(self, frame_id: int) -> bool:
        return self.every <= 1 or frame_id % self.every == self.phase


def extractor_rates(ext: ExtractConfig) -> Dict[str, Rate]:
    """`extract.every` as {extractor: Rate} for the extractors that skip frames (N > 1)."""
    return every_rates(ext.every)


def every_rates(every: Iterable[str], where: str = "extract.every") -> Dict[str, Rate]:
    """Rate entries as {extractor: Rate} for the extractors that skip frames (N > 1).

    An entry is ``NAME=N`` (frames with ``frame_id % N == 0``) or ``NAME=N@K``
    (frames with ``frame_id % N == K``, ``0 <= K < N``).
    """
    rates: Dict[str, Rate] = {}
    for entry in every:
        name, sep, value = str(entry).partition("=")
        name = name.strip()
        every_text, at, phase_text = value.partition("@")
        try:
            rate = int(every_text)
            phase = int(phase_text) if at else 0
        except ValueError:
            rate = phase = -1
        if not sep or name not in KNOWN_EXTRACTORS or rate < 1 or not 0 <= phase < max(rate, 1):
            raise ConfigError(
                f"{where} entry {entry!r}: expected NAME=N or NAME=N@K with NAME one of "
                f"{', '.join(KNOWN_EXTRACTORS)}, N a whole number >= 1 and 0 <= K < N"
            )
        if rate > 1:
            rates[name] = Rate(rate, phase)
    return rates


def is_due(frame_id: int, rate: Optional[Rate]) -> bool:
    """Whether an extractor with this declared rate runs on this frame (None: always).

    Decided by the frame id alone, so any worker or process decides the same.
    """
    return rate is None or rate.due(frame_id)
