"""What every stage of the dataflow returns: its items and its trace records.

Like Bytewax's Kafka operators return their oks and errs, each stage is one
`@operator` whose result holds two streams, so the dataflow merges the records of
all stages once, for the trace sink, instead of threading a list through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Tuple, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream

from facemoment.core.records import Record

X = TypeVar("X")


@dataclass(frozen=True)
class ItemsAndRecords(Generic[X]):
    """A stage's output: what it made, and the trace records it wrote about it."""

    items: Stream[X]
    records: Stream[Record]


def _is_record(item: Any) -> bool:
    return isinstance(item, Record)


def _value_is_record(kv: Tuple[str, Any]) -> bool:
    return isinstance(kv[1], Record)


def _value(kv: Tuple[str, Any]) -> Any:
    return kv[1]


def split_records(step_id: str, up: Stream[Any]) -> ItemsAndRecords[Any]:
    """Items and records of one mixed stream, apart."""
    split = op.branch(step_id, up, _is_record)
    return ItemsAndRecords(split.falses, split.trues)


def split_keyed_records(step_id: str, up: Stream[Tuple[str, Any]]) -> ItemsAndRecords[Tuple[str, Any]]:
    """The same for a keyed stream: items keep their key, records lose it."""
    split = op.branch(step_id, up, _value_is_record)
    return ItemsAndRecords(split.falses, op.map(f"{step_id}_records", split.trues, _value))
