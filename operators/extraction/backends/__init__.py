"""Optional model backends on onnxruntime: InsightFace packs (SCRFD + 1k3d68),
YOLOv8-pose and HSEmotion-style expression classifiers.

None of their weights ship with the project. Each backend opens its files in its
constructor and raises `ModelNotFoundError` (missing) or `ModelLoadError`
(unusable) there, naming the path and the bundled MediaPipe alternative.
"""

from operators.extraction.backends.runtime import (
    ModelLoadError,
    ModelNotFoundError,
    choose_providers,
    create_session,
    model_dir,
)

__all__ = [
    "ModelLoadError",
    "ModelNotFoundError",
    "choose_providers",
    "create_session",
    "model_dir",
]
