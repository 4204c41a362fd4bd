"""Image quality per frame: sharpness, brightness and contrast, and the quality gate."""

from __future__ import annotations

import time
from typing import Dict

import cv2
import numpy as np

from facemoment.core.config import QualityConfig
from facemoment.core.types import Frame, Observation
from operators.extraction.common import error_observation, frame_observation, image_problem


def to_grey(image: np.ndarray) -> np.ndarray:
    """A (h, w) uint8 grey view of a grey or BGR image."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3:
        return image[:, :, 0]
    return image


def quality_metrics(grey: np.ndarray) -> Dict[str, float]:
    """blur (variance of the Laplacian), brightness (mean grey), contrast (grey std).

    The Laplacian of 8-bit grey is an integer within +-1020, exact in 16 bits, and
    OpenCV's mean and deviation accumulate in doubles: the same figures as float64
    arrays and numpy's var/std, at a seventh of the cost (every camera pays it).
    `grey` is uint8 (image_problem refused anything else)."""
    _mean, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))
    mean, std = cv2.meanStdDev(grey)
    return {
        "blur": float(lap_std[0, 0]) ** 2,
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
    }


def passes_gate(metrics: Dict[str, float], cfg: QualityConfig) -> bool:
    return (
        metrics["blur"] >= cfg.min_blur
        and cfg.min_brightness <= metrics["brightness"] <= cfg.max_brightness
        and metrics["contrast"] >= cfg.min_contrast
    )


class QualityExtractor:
    name = "quality"

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def extract(self, frame: Frame) -> Observation:
        started = time.perf_counter_ns()
        image = getattr(frame, "image", None)
        problem = image_problem(image)
        if problem is not None:
            return error_observation(self.name, frame, problem, started)
        metrics = quality_metrics(to_grey(image))
        signals = dict(metrics)
        signals["quality_gate"] = 1.0 if passes_gate(metrics, self.cfg) else 0.0
        return frame_observation(
            self.name,
            frame,
            started,
            signals=signals,
        )

    def close(self) -> None:
        """Nothing to release; present so every extractor can be closed alike."""
