"""Frames scaled once to the analysis ("detect") size; the full frame is kept for clips.

Every model resizes its input to a small fixed size anyway (face 128-192 px, pose
256, hands 192-224), so analysing a 1920x1080 frame costs pixels that never reach a
model: the colour conversion, the models' own resize and the quality measures all
scale with the frame. One `INTER_AREA` resize at ingest pays that once.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from facemoment.core.types import Frame


def detect_image(image: np.ndarray, width: int) -> np.ndarray:
    """`image` scaled to `width` pixels across, keeping its aspect ratio.

    Unchanged (the same array) when `width` is 0 or the image is not wider.
    """
    h, w = image.shape[:2]
    if width <= 0 or w <= width:
        return image
    height = max(1, int(round(h * width / w)))
    return cv2.resize(image, (int(width), height), interpolation=cv2.INTER_AREA)


def at_detect_size(frame: Frame, width: int) -> Frame:
    """The frame for analysis at `width`; its full-resolution image stays on it for clips."""
    scaled = detect_image(frame.image, width)
    if scaled is frame.image:
        return frame
    return dataclasses.replace(frame, image=scaled, full=frame.record_image)
