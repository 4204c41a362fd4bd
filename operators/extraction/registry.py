"""The extractor registry: which class serves each extractor name and backend."""

from __future__ import annotations

from facemoment.core.config import KNOWN_EXTRACTORS, Config, ConfigError
from operators.extraction.common import Extractor


def build_extractor(name: str, cfg: Config) -> Extractor:
    """A new extractor for `name`, configured from `cfg`.

    Production backends load their models here and raise a clear error naming the
    missing file and the offline default; `check_backends` calls this at start-up
    so such a failure stops the run before the first frame, never mid-stream.
    """
    ext = cfg.extract
    # Imported here so that using only some extractors never loads the others' models.
    if name == "face":
        if ext.face_backend == "insightface":
            from operators.extraction.backend_extractors import InsightFaceExtractor

            return InsightFaceExtractor(ext)
        from operators.extraction.face import FaceExtractor

        face = FaceExtractor(ext)
        if ext.expression_model:
            from operators.extraction.backend_extractors import ModelExpression

            return ModelExpression(face, ext)
        return face
    if name == "quality":
        from operators.extraction.quality import QualityExtractor

        return QualityExtractor(cfg.quality)
    if name == "pose":
        if ext.pose_backend == "yolo":
            from operators.extraction.backend_extractors import YoloPoseExtractor

            return YoloPoseExtractor(ext)
        from operators.extraction.pose import PoseExtractor

        return PoseExtractor(ext)
    if name == "gesture":
        from operators.extraction.gesture import GestureExtractor

        return GestureExtractor(ext, cfg.fusion)
    raise ConfigError(f"unknown extractor {name!r}; available: {', '.join(KNOWN_EXTRACTORS)}")


def check_backends(cfg: Config) -> None:
    """Load every non-default backend once, so missing weights fail the start-up."""
    ext = cfg.extract
    needs = []
    if "face" in ext.extractors and (ext.face_backend != "mediapipe" or ext.expression_model):
        needs.append("face")
    if "pose" in ext.extractors and ext.pose_backend != "mediapipe":
        needs.append("pose")
    for name in needs:
        extractor = build_extractor(name, cfg)
        extractor.close()
