"""Extractors over the production backends (InsightFace, YOLOv8-pose, an expression model).

Each wraps a backend from `operators/backends` into the extractor contract: one
stateless `extract(frame) -> Observation`, errors reported, never raised. The
backends load in the constructor, so a missing model fails at start-up.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple, TypeVar

import numpy as np

from facemoment.core.config import ExtractConfig
from facemoment.core.types import Face, Frame, Observation
from operators.extraction.common import error_observation, frame_observation, image_problem, pose_observation

T = TypeVar("T")


def _detect(name: str, frame: Frame, detect: Callable[[np.ndarray], T], backend: str) -> Tuple[Optional[T], Optional[Observation], int]:
    """`detect(image)` on a checked image: `(result, None, started_ns)`, or `(None, error
    observation, started_ns)` for a bad image or a failing backend, never raises."""
    started = time.perf_counter_ns()
    problem = image_problem(getattr(frame, "image", None))
    if problem is not None:
        return None, error_observation(name, frame, problem, started), started
    try:
        return detect(frame.image), None, started
    except Exception as exc:
        return None, error_observation(name, frame, f"{backend} failed: {exc}", started), started


def _expression_model(cfg: ExtractConfig):
    if not cfg.expression_model:
        return None
    from operators.extraction.backends.expression_onnx import ExpressionModel

    return ExpressionModel(cfg.expression_model, prefer_gpu=cfg.prefer_gpu)


class InsightFaceExtractor:
    """Faces from an InsightFace model pack (SCRFD detection, 3D landmarks for pose)."""

    name = "face"

    def __init__(self, cfg: ExtractConfig):
        from operators.extraction.backends.insightface_pack import InsightFaceFaceBackend

        self.backend = InsightFaceFaceBackend(
            pack=cfg.insightface_pack,
            root=cfg.insightface_root,
            score_threshold=cfg.min_detection_confidence,
            max_faces=None,
            expression=_expression_model(cfg),
            prefer_gpu=cfg.prefer_gpu,
        )

    def extract(self, frame: Frame) -> Observation:
        faces, failed, started = _detect(self.name, frame, self.backend.detect, "insightface")
        if failed is not None:
            return failed
        faces = _left_to_right(faces)
        return frame_observation(self.name, frame, started, faces=faces, signals={"face_count": float(len(faces))})

    def close(self) -> None:
        pass


class YoloPoseExtractor:
    """People from a user's YOLOv8-pose weights (.onnx, or .pt through ultralytics)."""

    name = "pose"

    def __init__(self, cfg: ExtractConfig):
        from operators.extraction.backends.yolo_pose import YoloPoseBackend

        self.backend = YoloPoseBackend(cfg.pose_model, prefer_gpu=cfg.prefer_gpu)

    def extract(self, frame: Frame) -> Observation:
        poses, failed, started = _detect(self.name, frame, self.backend.detect, "yolo pose")
        if failed is not None:
            return failed
        return pose_observation(self.name, frame, started, poses)

    def close(self) -> None:
        pass


class ModelExpression:
    """The MediaPipe face extractor with its expression read from an ONNX classifier."""

    name = "face"

    def __init__(self, inner, cfg: ExtractConfig):
        self.inner = inner
        self.model = _expression_model(cfg)

    def extract(self, frame: Frame) -> Observation:
        obs = self.inner.extract(frame)
        if obs.error or not obs.faces:
            return obs
        started = time.perf_counter_ns()
        h, w = frame.image.shape[:2]
        try:
            for face in obs.faces:
                x, y, bw, bh = face.bbox
                face.expression = self.model.intensity(frame.image, (x * w, y * h, (x + bw) * w, (y + bh) * h))
        except Exception as exc:
            obs.error = f"expression model failed: {exc}"
        obs.processing_ms += (time.perf_counter_ns() - started) / 1e6
        return obs

    def close(self) -> None:
        self.inner.close()


def _left_to_right(faces: List[Face]) -> List[Face]:
    ordered = sorted(faces, key=lambda f: f.bbox[0])
    for i, face in enumerate(ordered):
        face.face_id = i
    return ordered
