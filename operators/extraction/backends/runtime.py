"""Shared plumbing for ONNX model backends: where models live, sessions, errors, NMS.

Every backend resolves and opens its files in its constructor, so a missing or
unusable model stops the program at start-up with a message that names the file,
where it is expected and which bundled (MediaPipe) backend works without it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# InsightFace keeps its packs in <root>/models/<pack>/ with root ~/.insightface.
INSIGHTFACE_HOME_ENV = "INSIGHTFACE_HOME"
DEFAULT_INSIGHTFACE_ROOT = Path("~/.insightface")
MODEL_DIR_ENV = "FACEMOMENT_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("~/.facemoment/models")

FACE_FALLBACK = "set FACEMOMENT__EXTRACT__FACE_BACKEND=mediapipe to use the bundled MediaPipe face detector"
POSE_FALLBACK = "leave the pose model unset to use the bundled MediaPipe Pose extractor"
EXPRESSION_FALLBACK = (
    "leave the expression model unset to use the landmark-based expression of the MediaPipe face extractor"
)


class ModelNotFoundError(FileNotFoundError):
    """A model file or pack that is not where it was looked for."""


class ModelLoadError(RuntimeError):
    """A model file that exists but cannot be used (corrupt, wrong kind, missing dependency)."""


# ---------------------------------------------------------------- locations


def model_dir(kind: str = "facemoment") -> Path:
    """Directory models of `kind` are looked up in.

    - ``insightface``: ``$INSIGHTFACE_HOME/models`` or ``~/.insightface/models``
      (InsightFace's own layout: one sub-directory per pack, e.g. ``buffalo_l``);
    - anything else: ``$FACEMOMENT_MODEL_DIR`` or ``~/.facemoment/models``.
    """
    if kind == "insightface":
        root = os.environ.get(INSIGHTFACE_HOME_ENV)
        return (Path(root) if root else DEFAULT_INSIGHTFACE_ROOT).expanduser() / "models"
    configured = os.environ.get(MODEL_DIR_ENV)
    return (Path(configured) if configured else DEFAULT_MODEL_DIR).expanduser()


def insightface_pack_candidates(pack: str, root: Optional[PathLike] = None) -> List[Path]:
    """Directories that may hold `pack`, most specific first.

    With `root` only ``root/pack``. Otherwise ``model_dir("insightface")/pack`` and,
    when INSIGHTFACE_HOME is set, also ``$INSIGHTFACE_HOME/pack`` for people who
    point the variable at the models directory itself.
    """
    if root is not None:
        return [Path(root).expanduser() / pack]
    candidates = [model_dir("insightface") / pack]
    home = os.environ.get(INSIGHTFACE_HOME_ENV)
    if home:
        candidates.append(Path(home).expanduser() / pack)
    return candidates


def resolve_model_file(path: PathLike, what: str, fallback: str) -> Path:
    """An existing model file: `path` as given, or relative to ``model_dir()``.

    Raises ModelNotFoundError naming every place looked at, the directory to put
    the file in and the fallback.
    """
    given = Path(path).expanduser()
    candidates = [given]
    if not given.is_absolute():
        candidates.append(model_dir() / given)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where_to_put = f"put the file at {given} or in {model_dir()} (${MODEL_DIR_ENV})"
    raise ModelNotFoundError(missing_message(what, candidates, where_to_put, fallback))


def missing_message(what: str, looked_at: Sequence[Path], where_to_put: str, fallback: str) -> str:
    places = ", ".join(str(p) for p in looked_at)
    return f"{what} not found (looked at: {places}); {where_to_put}; or {fallback}"


# ---------------------------------------------------------------- sessions


def choose_providers(available: Sequence[str], prefer_gpu: bool = True) -> List[str]:
    """Execution providers to ask for, best first: CUDA when offered and wanted, then CPU."""
    if prefer_gpu and GPU_PROVIDER in available:
        return [GPU_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def create_session(
    path: PathLike, prefer_gpu: bool = True, fallback: str = FACE_FALLBACK
) -> Tuple[Any, str]:
    """An onnxruntime session on `path` and the provider it really runs on.

    A missing file raises ModelNotFoundError, an unreadable one ModelLoadError;
    both name the file and `fallback`.
    """
    import onnxruntime as ort

    model = Path(path)
    if not model.is_file():
        raise ModelNotFoundError(missing_message("ONNX model", [model], "put the file there", fallback))
    providers = choose_providers(ort.get_available_providers(), prefer_gpu)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings would repeat per session
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        raise ModelLoadError(
            f"cannot load ONNX model {model}: {exc}. Replace the file with a valid export, or {fallback}"
        ) from exc
    # CUDA may be listed yet fail to initialise; onnxruntime then runs on CPU.
    provider = session.get_providers()[0]
    log.info("onnxruntime provider for %s: %s", model.name, provider)
    return session, provider


def input_hw(session: Any) -> Optional[Tuple[int, int]]:
    """The (height, width) of the session's first input when fixed, else None."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        return None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return int(h), int(w)
    return None


# ---------------------------------------------------------------- images and boxes


def as_bgr(image: Any) -> np.ndarray:
    """A uint8 (h, w, 3) BGR view of a grey or BGR image; ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}".rstrip())
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0:
        return image
    raise ValueError(f"expected an image of shape (h, w) or (h, w, 3), got {image.shape}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[int]:
    """Indices kept by greedy non-maximum suppression over (x1, y1, x2, y2) boxes."""
    if len(boxes) == 0:
        return []
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return keep
