"""Frames in: every configured stream's source as one stage (frames and source records).

`StartingSource` is how the process's run-time set-up happens when the flow starts
running rather than when its module is imported: `python -m bytewax.run` only imports
the module and runs `flow`, and the first thing a worker does is list its sources'
partitions.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import bytewax.operators as op
from bytewax.dataflow import Dataflow, operator
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition

from facemoment.core.streams import ItemsAndRecords, split_records
from facemoment.core.types import Frame
from facemoment.runtime import metrics


class StartingSource(FixedPartitionedSource[Any, Any]):
    """Wraps a source; `on_start()` (idempotent) runs before its partitions are listed or built."""

    def __init__(self, inner: FixedPartitionedSource, on_start: Callable[[], Any]):
        self.inner = inner
        self.on_start = on_start

    def list_parts(self) -> List[str]:
        self.on_start()
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Any]) -> StatefulSourcePartition:
        self.on_start()
        return self.inner.build_part(step_id, for_part, resume_state)


class CameraSet(FixedPartitionedSource[Any, Any]):
    """Several cameras' sources as one input whose partitions are theirs.

    Bytewax assigns one input's partitions to workers round-robin over their sorted
    names, while each input of its own puts a single partition on the first worker.
    So with more cameras than workers, one input over all cameras (one partition
    each) spreads whole cameras over the workers.
    """

    def __init__(self, sources: Mapping[str, FixedPartitionedSource]):
        self.sources = dict(sources)
        self._owners: Optional[Dict[str, FixedPartitionedSource]] = None

    def owners(self) -> Dict[str, FixedPartitionedSource]:
        """Partition name -> the camera source that builds it (listed when the run starts)."""
        if self._owners is None:
            owners: Dict[str, FixedPartitionedSource] = {}
            for stream_id, source in self.sources.items():
                for part in source.list_parts():
                    if part in owners:
                        raise ValueError(f"partition {part!r} of {stream_id!r} is named twice")
                    owners[part] = source
            self._owners = owners
        return self._owners

    def list_parts(self) -> List[str]:
        return list(self.owners())

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[Any]) -> StatefulSourcePartition:
        return self.owners()[for_part].build_part(step_id, for_part, resume_state)


def _count_frame(_step_id: str, frame: Frame) -> None:
    metrics.frame_in(frame.stream_id)


@operator
def frames_in(
    step_id: str,
    flow: Dataflow,
    sources: Mapping[str, Source],
    on_start: Optional[Callable[[], Any]] = None,
    count_frames: bool = False,
    kind: str = "frames",
) -> ItemsAndRecords[Frame]:
    """One input per stream (keyed by stream id), frames merged; their records apart.

    `on_start` runs once the flow starts running in this process (see StartingSource).
    `kind` names the inputs: "obs" for observation sources (OBS from remote extractors),
    whose items are observations rather than frames.
    """
    frames = []
    records = []
    for stream_id, source in sources.items():
        if on_start is not None:
            if not isinstance(source, FixedPartitionedSource):
                raise TypeError(f"source of {stream_id!r} is not a FixedPartitionedSource")
            source = StartingSource(source, on_start)
        split = split_records(f"split_{stream_id}", op.input(f"{kind}_{stream_id}", flow, source))
        frames.append(split.items)
        records.append(split.records)
    merged = op.merge("frames", *frames)
    if count_frames:
        op.inspect("metrics_in", merged, _count_frame)
    return ItemsAndRecords(merged, op.merge("records", *records))
