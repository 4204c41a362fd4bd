"""The best frame of a clip as a JPEG still: the sharpest frame with the largest frontal face.

Faces are found with OpenCV's bundled frontal-face cascade, which only answers for
faces turned toward the camera, so "largest face found" already means "largest
frontal face". A frame scores face area times the square root of the face's
sharpness (variance of the Laplacian on the face); with no face in any frame, the
sharpest frame wins.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from facemoment.core.types import Trigger

log = logging.getLogger(__name__)

# Frames looked at per clip at most (evenly spread), so a long clip costs the same.
MAX_CANDIDATES = 24
# Faces are searched on a copy this wide at most.
DETECT_WIDTH = 320


@dataclass
class Still:
    frame_index: int
    score: float
    sharpness: float
    face_area_ratio: float
    image: np.ndarray


@functools.lru_cache(maxsize=1)
def _cascade() -> Optional["cv2.CascadeClassifier"]:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    return None if cascade.empty() else cascade


def sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_64F).var()) if grey.size else 0.0


def largest_face(grey: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(x, y, w, h) of the largest frontal face, in `grey`'s pixels, or None."""
    cascade = _cascade()
    if cascade is None:
        return None
    scale = min(1.0, DETECT_WIDTH / grey.shape[1])
    small = cv2.resize(grey, None, fx=scale, fy=scale) if scale < 1.0 else grey
    found = cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(found) == 0:
        return None
    x, y, w, h = max(found, key=lambda r: r[2] * r[3])
    return tuple(int(round(v / scale)) for v in (x, y, w, h))  # type: ignore[return-value]


def score_frame(image: np.ndarray) -> Tuple[float, float, float]:
    """(score, sharpness, face area ratio) of one BGR frame."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    face = largest_face(grey)
    if face is None:
        sharp = sharpness(grey)
        return 0.0, sharp, 0.0
    x, y, w, h = face
    sharp = sharpness(grey[y : y + h, x : x + w])
    area = (w * h) / float(grey.shape[0] * grey.shape[1])
    return area * math.sqrt(max(sharp, 0.0)), sharp, area


def best_still(video: Path) -> Optional[Still]:
    """The best frame of a video file, or None when no frame can be decoded."""
    cap = cv2.VideoCapture(str(video))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, math.ceil(total / MAX_CANDIDATES)) if total > 0 else 1
        best: Optional[Still] = None
        best_key: Tuple[float, float] = (-1.0, -1.0)
        index = 0
        while cap.grab():  # decode every frame, convert only the candidates
            if index % step == 0:
                ok, image = cap.retrieve()
                if ok:
                    score, sharp, area = score_frame(image)
                    key = (score, sharp)  # no face anywhere: the sharpest frame
                    if key > best_key:
                        best_key = key
                        best = Still(index, round(score, 4), round(sharp, 2), round(area, 5), image)
            index += 1
        return best
    finally:
        cap.release()


def write_still(video: Path, target: Path, quality: int = 92) -> Optional[Still]:
    """Write `video`'s best frame to `target` (JPEG); None when the video has no frame."""
    still = best_still(video)
    if still is None:
        return None
    ok, data = cv2.imencode(".jpg", still.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot encode the best frame of {video} as JPEG")
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(data.tobytes())
    tmp.replace(target)
    return still


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def still_file_name(trigger: Trigger) -> str:
    """The best frame's JPEG beside the clip: named by the trigger's key, so triggers.jsonl
    can list it when the trigger fires, before the clip exists."""
    parts = (trigger.label, trigger.stream_id, f"t{trigger.event_t_ns / 1e9:.3f}", trigger.reason)
    return "_".join(_UNSAFE.sub("_", str(p)) for p in parts) + ".jpg"


def still_for_clip(trigger: Trigger, clip: Path, clips_dir: Path) -> Dict[str, Any]:
    """The clip's best frame as a JPEG beside it, as manifest fields; a failure is recorded, never raised."""
    try:
        still = write_still(clip, clips_dir / still_file_name(trigger))
    except Exception as exc:  # noqa: BLE001 - the clip itself is fine
        log.error("best frame for %s failed: %s", trigger.key, exc)
        return {"best_frame": None, "best_frame_error": str(exc) or type(exc).__name__}
    if still is None:
        return {"best_frame": None, "best_frame_error": "the clip has no decodable frame"}
    return {
        "best_frame": still_file_name(trigger),
        "best_frame_index": still.frame_index,
        "best_frame_sharpness": still.sharpness,
        "best_frame_face_area": still.face_area_ratio,
    }
