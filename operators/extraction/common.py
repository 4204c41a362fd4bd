"""What every extractor shares: the protocol, input checks, the guarded model call.

MediaPipe graphs are not safe to share between threads: the orchestrator gives
each extractor instance a thread of its own (operators/extraction/orchestrator.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple, TypeVar, runtime_checkable

import numpy as np

from facemoment.core.types import Frame, Observation
from facemoment.runtime.native_logs import quiet_native_env

T = TypeVar("T")


@runtime_checkable
class Extractor(Protocol):
    name: str

    def extract(self, frame: Frame) -> Observation: ...

    def close(self) -> None: ...


def quiet_native_logs() -> None:
    """glog and TF Lite: warnings and up (facemoment/runtime/native_logs.py has the whole story).

    Entry points also filter fd 2 (`filter_native_stderr`) for the lines absl prints
    regardless of these settings.
    """
    quiet_native_env()


# Extractor modules import MediaPipe after this module, so quieten it up front.
quiet_native_logs()


def single_threaded_opencv() -> None:
    """Keep OpenCV's own thread pool out of the way.

    Extraction is already parallel (a thread per extractor, a worker per share);
    OpenCV's pool on top of that busy-waits for cores it cannot get, and on two
    cores that costs more system time than the work itself.
    """
    import cv2

    cv2.setNumThreads(1)


single_threaded_opencv()


def image_problem(image: Any) -> Optional[str]:
    """Why `image` cannot be processed, or None when it is a usable uint8 grey/BGR image."""
    if image is None:
        return "frame has no image"
    if not isinstance(image, np.ndarray):
        return f"frame image is a {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8:
        return f"frame image has dtype {image.dtype}, expected uint8"
    if image.ndim not in (2, 3):
        return f"frame image has shape {image.shape}, expected (h, w) or (h, w, 3)"
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        return f"frame image has {image.shape[2]} channels, expected 1 or 3"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f"frame image is empty (shape {image.shape})"
    return None


def error_observation(source: str, frame: Any, message: str, started_ns: int) -> Observation:
    """An observation that reports a failure instead of results."""
    return Observation(
        source=source,
        stream_id=str(getattr(frame, "stream_id", "")),
        frame_id=int(getattr(frame, "frame_id", -1)),
        t_ns=int(getattr(frame, "t_src_ns", 0)),
        processing_ms=(time.perf_counter_ns() - started_ns) / 1e6,
        error=message,
    )


def frame_observation(source: str, frame: Any, started_ns: int, **fields: Any) -> Observation:
    """What `source` saw in `frame`, timed from `started_ns`."""
    return Observation(
        source=source,
        stream_id=frame.stream_id,
        frame_id=frame.frame_id,
        t_ns=frame.t_src_ns,
        processing_ms=(time.perf_counter_ns() - started_ns) / 1e6,
        **fields,
    )


def pose_observation(source: str, frame: Any, started_ns: int, poses: List[Any]) -> Observation:
    """The pose observation of a frame, whichever backend found the people."""
    signals = {"pose_count": float(len(poses)), "hand_raised": 1.0 if any(p.hand_raised for p in poses) else 0.0}
    return frame_observation(source, frame, started_ns, poses=poses, signals=signals)


# COCO keypoint indices of the arms: (wrist, shoulder) per side, the person's left first.
COCO_ARMS = ((9, 5), (10, 6))
# moments.md: both keypoints of the arm must be at least this confident.
HAND_RAISED_MIN_CONFIDENCE = 0.5


def hand_raised(keypoints: Sequence[Tuple[float, float, float]], min_confidence: float = HAND_RAISED_MIN_CONFIDENCE) -> bool:
    """A wrist above (smaller y than) its own shoulder, both confidently placed.

    `keypoints` are the 17 COCO (x, y, confidence), whichever backend found them.
    """
    for wrist, shoulder in COCO_ARMS:
        _, wy, wc = keypoints[wrist]
        _, sy, sc = keypoints[shoulder]
        if wc >= min_confidence and sc >= min_confidence and wy < sy:
            return True
    return False


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to length 1; landmarks that coincide have no direction."""
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        raise ValueError("degenerate landmarks")
    return v / n


def run_guarded(extractor: Any, frame: Any, work: Callable[[np.ndarray], T]) -> Tuple[Optional[T], Optional[Observation], int]:
    """The shared part of a model extractor's `extract`.

    Checks the frame's image, then runs `work(image)` under the extractor's lock with
    its models loaded. Returns `(result, None, started_ns)`, or `(None, error
    observation, started_ns)` for a bad image or a failing model — never raises.
    """
    started = time.perf_counter_ns()
    image = getattr(frame, "image", None)
    problem = image_problem(image)
    if problem is not None:
        return None, error_observation(extractor.name, frame, problem, started), started
    try:
        with extractor._lock:
            extractor.load()
            return work(image), None, started
    except Exception as exc:  # a failing graph must not take the dataflow down
        return None, error_observation(extractor.name, frame, f"{extractor.name} extraction failed: {exc}", started), started
