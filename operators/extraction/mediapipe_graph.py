"""One way to build a MediaPipe (legacy `mp.solutions`) graph: quiet, sized, warmed up.

Face, pose and hands build their graphs here, so the thread sizing and the warm-up
are decided once. Each extractor already runs on a lane of its own and the lanes
of one process already fill the cores; a graph's default executor would start a
thread per core on top of that (two graphs in the face extractor: four threads),
and on two cores those wait for each other. A graph runs its calculators on
`graph_threads` executor threads instead (1 by default: one per native graph);
XNNPACK's inference on desktop Linux is single-threaded already.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import cv2
import numpy as np

from facemoment.core.config import ConfigError, ExtractConfig
from operators.extraction.common import quiet_native_logs

# Side of the blank image every graph runs once when it is built.
WARM_UP_SIZE = 64


def _size_default_executor(config: Any, threads: int) -> None:
    """Give the graph's default executor `threads` threads.

    The bundled graphs declare the default executor (name "") without options, and
    MediaPipe refuses a graph-level `num_threads` next to it, so the executor's own
    thread-pool options carry the size.
    """
    from mediapipe.framework import thread_pool_executor_pb2

    defaults = [executor for executor in config.executor if not executor.name]
    executor = defaults[0] if defaults else config.executor.add()
    if not executor.type:
        executor.type = "ThreadPoolExecutor"
    options = executor.options.Extensions[thread_pool_executor_pb2.ThreadPoolExecutorOptions.ext]
    options.num_threads = threads


def _sized(solution: type, threads: int) -> type:
    """`solution` (a SolutionBase subclass) whose graph runs on `threads` executor threads."""

    class Sized(solution):  # type: ignore[misc, valid-type]
        def _initialize_graph_interface(self, *args: Any, **kwargs: Any) -> Any:
            config = super()._initialize_graph_interface(*args, **kwargs)
            if threads > 0:
                _size_default_executor(config, threads)
            return config

    Sized.__name__ = Sized.__qualname__ = f"{solution.__name__}Sized"
    return Sized


def build_graph(solution: Callable[..., Any], threads: int = 1, **options: Any) -> Any:
    """A ready graph: `solution(**options)` on `threads` executor threads (0: MediaPipe's
    default, one per core), run once on a blank image.

    The first run sets up the inference delegates (about 0.1-0.5 s); paying it here
    keeps it out of the first frame's deadline.
    """
    quiet_native_logs()
    graph = _sized(solution, threads)(**options) if isinstance(solution, type) else solution(**options)
    graph.process(np.zeros((WARM_UP_SIZE, WARM_UP_SIZE, 3), np.uint8))
    return graph


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB copy of a BGR, grey (h, w) or single-channel (h, w, 1) image."""
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    grey = image if image.ndim == 2 else image[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)


def check_detection_confidence(cfg: ExtractConfig) -> None:
    if not 0.0 <= cfg.min_detection_confidence <= 1.0:
        raise ConfigError(
            f"extract.min_detection_confidence must lie in 0-1, got {cfg.min_detection_confidence}"
        )


class SingleGraphExtractor:
    """An extractor around one MediaPipe graph: built on first use, run under a lock.

    Subclasses check their own options, call this `__init__`, and say in
    `_build_graph` which solution to build and how.
    """

    name = ""

    def __init__(self, cfg: ExtractConfig) -> None:
        check_detection_confidence(cfg)
        self.cfg = cfg
        self._lock = threading.RLock()  # the graph must not run concurrently
        self._graph: Any = None

    def _build_graph(self) -> Any:
        raise NotImplementedError

    def load(self) -> None:
        """Build the MediaPipe graph (done on first `extract` otherwise)."""
        with self._lock:
            if self._graph is None:
                self._graph = self._build_graph()

    def close(self) -> None:
        with self._lock:
            if self._graph is not None:
                self._graph.close()
            self._graph = None
