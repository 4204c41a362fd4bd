"""Extractor registry, input checks shared by extractors, and a per-thread cache.

MediaPipe graphs are not safe to share between threads and Bytewax workers are
threads, so `get_extractor` hands every (thread, name) pair its own instance.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from typing import Any, Dict, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

from facemoment.config import Config, ConfigError
from facemoment.types import Frame, Observation

IMPLEMENTED = ("face", "quality")
NOT_YET_AVAILABLE = ("pose", "gesture")


@runtime_checkable
class Extractor(Protocol):
    name: str

    def extract(self, frame: Frame) -> Observation: ...

    def close(self) -> None: ...


def quiet_native_logs() -> None:
    """Ask MediaPipe's C++ logging (glog, TF Lite) for warnings and errors only.

    Takes effect when called before MediaPipe is first imported; explicit settings
    in the environment win. A few one-time lines that absl prints before its
    logging is initialised cannot be silenced this way.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Extractor modules import MediaPipe after this module, so quieten it up front.
quiet_native_logs()


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


def _config_section(name: str, cfg: Config) -> Any:
    return cfg.quality if name == "quality" else cfg.extract


def build_extractor(name: str, cfg: Config) -> Extractor:
    """A new extractor for `name`, configured from `cfg`."""
    # Imported here so that using only the quality extractor never loads MediaPipe.
    if name == "face":
        from operators.face import FaceExtractor

        return FaceExtractor(cfg.extract)
    if name == "quality":
        from operators.quality import QualityExtractor

        return QualityExtractor(cfg.quality)
    if name in NOT_YET_AVAILABLE:
        raise ConfigError(f"extractor {name!r} is not available yet; available: {', '.join(IMPLEMENTED)}")
    raise ConfigError(f"unknown extractor {name!r}; available: {', '.join(IMPLEMENTED)}")


_cache_lock = threading.Lock()
# (thread ident, name) -> (extractor, copy of the config section it was built from)
_cache: Dict[Tuple[int, str], Tuple[Extractor, Any]] = {}


def get_extractor(name: str, cfg: Config) -> Extractor:
    """The calling thread's own extractor for `name`, built on first use.

    A cached instance built from a different configuration section is closed and
    replaced, so a changed config never runs with stale settings.
    """
    key = (threading.get_ident(), name)
    section = _config_section(name, cfg)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[1] == section:
            return cached[0]
        stale = cached[0] if cached is not None else None
        extractor = build_extractor(name, cfg)
        _cache[key] = (extractor, copy.deepcopy(section))
    if stale is not None:
        stale.close()
    return extractor


def close_extractors() -> int:
    """Close every cached extractor of every thread; returns how many were closed.

    Call it at shutdown, once no worker is extracting any more.
    """
    with _cache_lock:
        extractors = [entry[0] for entry in _cache.values()]
        _cache.clear()
    for extractor in extractors:
        extractor.close()
    return len(extractors)
