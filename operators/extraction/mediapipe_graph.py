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

from typing import Any, Callable

import numpy as np

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
