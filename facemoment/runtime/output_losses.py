"""Outputs of this process that lost data to failed writes (a full disk), for the run
summary. A trace that cannot be written cannot say so in itself: its sink reports
here as well as in a `trace_degraded` record once a write succeeds again."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class TraceLoss:
    lost_total: int  # records lost in the whole run so far
    error: str  # the last failed write's error


_lock = threading.Lock()
_trace: Dict[str, TraceLoss] = {}


def note_trace_loss(path: str, lost_total: int, error: str) -> None:
    with _lock:
        _trace[path] = TraceLoss(lost_total, error)


def trace_losses() -> Dict[str, TraceLoss]:
    """Per trace file path, what this process's sink lost."""
    with _lock:
        return dict(_trace)


def clear() -> None:
    """Forget the losses (a process that runs several flows, one after the other)."""
    with _lock:
        _trace.clear()
