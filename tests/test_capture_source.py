"""A capture device honours the drop strategy like the ZMQ source, and reports every drop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest

from connectors.capture_source import CaptureSource
from facemoment.core.config import SourceConfig
from facemoment.core.types import Frame

FRAMES = 30


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> Path:
    """A short file read as a device: the reader thread fills the buffer faster than we take."""
    path = tmp_path_factory.mktemp("capture") / "device.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    rng = np.random.default_rng(1)
    for _ in range(FRAMES):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _drain_after_capture(source: CaptureSource) -> Tuple[List[int], List[int]]:
    part = source.build_part("step", source.stream_id, None)
    deadline = time.monotonic() + 30
    while not part._done.is_set():  # let the device run ahead of a stalled dataflow
        assert time.monotonic() < deadline, "capture never finished"
        time.sleep(0.01)
    emitted: List[int] = []
    dropped: List[int] = []
    try:
        while True:
            for item in part.next_batch():
                if isinstance(item, Frame):
                    emitted.append(item.frame_id)
                else:
                    item = item.to_dict()
                    assert item["record_type"] == "frame_drop" and item["reason"] == "backpressure"
                    assert item["strategy"] == source.drop_strategy
                    assert item["dropped_count"] == len(item["dropped_frame_ids"])
                    dropped.extend(item["dropped_frame_ids"])
    except StopIteration:
        pass
    finally:
        part.close()
    return emitted, dropped


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("skip_oldest", list(range(FRAMES - 4, FRAMES))),
        ("skip_intermediate", None),  # checked below: the oldest kept plus the newest
        ("keyframe_only", None),
    ],
)
def test_capture_honours_drop_strategy(device: Path, strategy: str, expected):
    source = CaptureSource(str(device), "cam0", SourceConfig(buffer_frames=4, drop_strategy=strategy, keyframe_interval=3))
    emitted, dropped = _drain_after_capture(source)
    # Nothing vanishes unreported.
    assert sorted(emitted + dropped) == list(range(FRAMES))
    if strategy == "skip_oldest":
        assert emitted == expected
    elif strategy == "skip_intermediate":
        assert emitted[-1] == FRAMES - 1 and len(emitted) <= 4 and emitted != list(range(FRAMES - 4, FRAMES))
    else:
        # Only keyframes pass; the rest are dropped whatever the room in the buffer.
        assert emitted and all(i % 3 == 0 for i in emitted)
        assert {i for i in range(FRAMES) if i % 3} <= set(dropped)


def test_sources_pass_the_configured_strategy():
    from connectors.sources import StreamSpec, build_source
    from facemoment.core.config import load_config

    cfg = load_config(env={"FACEMOMENT__SOURCE__DROP_STRATEGY": "keyframe_only", "FACEMOMENT__SOURCE__KEYFRAME_INTERVAL": "5"})
    spec = StreamSpec("cam0", "0", "camera")
    source = build_source(spec, cfg)
    assert isinstance(source, CaptureSource)
    assert (source.drop_strategy, source.keyframe_interval) == ("keyframe_only", 5)
