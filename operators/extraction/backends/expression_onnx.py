"""Expression intensity from an HSEmotion-style emotion classifier (ONNX, user supplied).

Model contract (HSEmotion's ONNX exports, e.g. enet_b0_8_best_afew.onnx at 224 px,
enet_b2_8.onnx at 260 px):

- input ``1x3xSxS``: the face crop resized to SxS, RGB, scaled to 0-1 and
  normalized with the ImageNet mean (0.485, 0.456, 0.406) and std
  (0.229, 0.224, 0.225). S comes from the model; a dynamic input uses 260 for
  EfficientNet-B2 files (``b2`` in the name) and 224 otherwise;
- output: one logit per class in HSEmotion's order, 8 classes (Anger, Contempt,
  Disgust, Fear, Happiness, Neutral, Sadness, Surprise) or 7 without Contempt;
  multi-task exports that append valence and arousal (10 values) are accepted.

Intensity = softmax probability of Happiness (plus Surprise when
`include_surprise`), so a neutral face scores near 0 and a clear smile near 1,
the same scale as the landmark-based expression of the MediaPipe extractor.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import cv2
import numpy as np

from operators.extraction.backends.runtime import (
    EXPRESSION_FALLBACK,
    ModelLoadError,
    PathLike,
    as_bgr,
    create_session,
    input_hw,
    resolve_model_file,
)

CLASSES_8 = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
CLASSES_7 = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_SIZE = 224
DEFAULT_SIZE_B2 = 260


def classes_for(outputs: int) -> Sequence[str]:
    """Class names for a model with `outputs` values per face."""
    if outputs in (8, 10):  # 10: 8 emotions + valence + arousal
        return CLASSES_8
    if outputs in (7, 9):  # 9: 7 emotions + valence + arousal
        return CLASSES_7
    raise ModelLoadError(f"an emotion classifier with {outputs} outputs is not supported (expected 7 or 8 classes)")


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = values.astype(np.float64) - float(np.max(values))
    exp = np.exp(shifted)
    return exp / exp.sum()


def _looks_like_probabilities(values: np.ndarray) -> bool:
    return bool(np.all(values >= 0.0) and np.all(values <= 1.0) and abs(float(values.sum()) - 1.0) < 1e-3)


class ExpressionModel:
    """An emotion classifier from `path`; fails in the constructor when it cannot run."""

    def __init__(self, path: PathLike, include_surprise: bool = False, prefer_gpu: bool = True) -> None:
        self.path = resolve_model_file(path, "expression model", EXPRESSION_FALLBACK)
        self.session, self.provider = create_session(self.path, prefer_gpu=prefer_gpu, fallback=EXPRESSION_FALLBACK)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{self.path} is not an image classifier: expected one 1x3xSxS input; "
                                 f"{EXPRESSION_FALLBACK}")
        fixed = input_hw(self.session)
        default = DEFAULT_SIZE_B2 if "b2" in self.path.name.lower() else DEFAULT_SIZE
        self.size = fixed[0] if fixed else default
        self.input_name = inputs[0].name
        self.include_surprise = include_surprise
        # Run a grey crop once: the output size, known only after a run for dynamic
        # exports, decides the class list before any frame arrives.
        try:
            raw = self._run(np.full((self.size, self.size, 3), 128, np.uint8))
            self.classes: Sequence[str] = classes_for(raw.size)
        except Exception as exc:
            raise ModelLoadError(f"{self.path} does not run as an emotion classifier: {exc}; "
                                 f"{EXPRESSION_FALLBACK}") from exc

    def _run(self, crop_bgr: np.ndarray) -> np.ndarray:
        resized = cv2.resize(crop_bgr, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        rgb = resized[:, :, ::-1].astype(np.float32) / 255.0
        blob = ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[np.newaxis]
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(blob, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def _crop(self, bgr: np.ndarray, bbox_px: Any) -> np.ndarray:
        h, w = bgr.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in list(bbox_px)[:4])
        ix1, iy1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        ix2, iy2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
        if ix2 <= ix1 or iy2 <= iy1:
            raise ValueError(f"face box {tuple(round(v, 1) for v in (x1, y1, x2, y2))} is outside the {w}x{h} image")
        return bgr[iy1:iy2, ix1:ix2]

    def probabilities(self, image: np.ndarray, bbox_px: Any) -> Dict[str, float]:
        """Class probabilities for the face in `bbox_px` (x1, y1, x2, y2 pixels)."""
        raw = self._run(self._crop(as_bgr(image), bbox_px))[: len(self.classes)]
        probs = raw if _looks_like_probabilities(raw) else softmax(raw)
        return {name: float(p) for name, p in zip(self.classes, probs)}

    def intensity(self, image: np.ndarray, bbox_px: Any) -> float:
        """Expression intensity 0-1 for the face in `bbox_px` (see the module doc)."""
        probs = self.probabilities(image, bbox_px)
        value = probs["Happiness"] + (probs["Surprise"] if self.include_surprise else 0.0)
        return float(min(1.0, max(0.0, value)))
