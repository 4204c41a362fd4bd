"""Embedding FaceMoment in a Python program: a source in, triggers out.

    from facemoment.api import MomentDetector

    detector = MomentDetector(presets=["batch"], fusion={"cooldown_sec": 3})
    for trigger in detector.triggers("ride.mp4"):
        print(trigger.reason, trigger.score, trigger.t_start_ns, trigger.t_end_ns)

The same dataflow as `facemoment process` and `python -m bytewax.run`, run in this
process on one worker. Configuration comes from the arguments only (defaults, then
presets, then a TOML file or `Config`, then overrides): the environment is not read.
"""

from __future__ import annotations

import copy
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Union

from facemoment.core.config import Config, apply_preset, apply_settings, load_config
from facemoment.core.types import Trigger

TriggerCallback = Callable[[Trigger], None]
_DONE = object()
# One dataflow at a time per process: the sources share one stop event.
_RUN_LOCK = threading.Lock()


class MomentDetector:
    """Highlight detection on a video file, a recording, a camera or a visualbase ZMQ stream.

    :arg config: a `Config`, a TOML file path, or None for the defaults.
    :arg presets: preset names applied on top (e.g. ``["batch"]``).
    :arg output_dir: where triggers.jsonl, clips/ and trace.jsonl go (default: a new
        temporary directory, see `output_dir`).
    :arg quiet_native_logs: filter the models' native log lines off this process's
        stderr (off by default: an embedding program owns its stderr).
    :arg overrides: settings by section, ``fusion={"cooldown_sec": 3}`` or
        ``fusion__cooldown_sec=3``; ``trace="off"``, ``clips=False``,
        ``trig_address="tcp://127.0.0.1:5556"`` and ``extractors=["face", "quality"]``
        are shortcuts.
    """

    SHORTCUTS = {
        "trace": "output.trace",
        "clips": "output.clips",
        "trig_address": "output.trig_address",
        "extractors": "extract.extractors",
        "stream_id": "source.stream_id",
        "fps": "source.fps",
        "idle_timeout_s": "source.idle_timeout_s",
    }

    def __init__(
        self,
        config: Union[Config, str, os.PathLike, None] = None,
        *,
        presets: Sequence[str] = (),
        output_dir: Union[str, os.PathLike, None] = None,
        quiet_native_logs: bool = False,
        **overrides: Any,
    ) -> None:
        if isinstance(config, Config):
            cfg = copy.deepcopy(config)
            for name in presets:
                apply_preset(cfg, name)
        else:
            cfg = load_config(env={}, path=config, presets=list(presets))
        # Embedded runs publish no TRIG and print no summary unless asked.
        cfg.output.trig_address = None
        cfg.output.summary = False
        settings = {self.SHORTCUTS.get(k, k): v for k, v in overrides.items()}
        apply_settings(cfg, settings, "MomentDetector")
        self.output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="facemoment-"))
        cfg.output.output_dir = str(self.output_dir)
        self.config = cfg
        if quiet_native_logs:
            from facemoment.runtime.native_logs import filter_native_stderr

            filter_native_stderr()

    # ------------------------------------------------------------------ runs
    def process_file(self, path: Union[str, os.PathLike], on_trigger: Optional[TriggerCallback] = None) -> List[Trigger]:
        """Run a video file or recording to its end; returns every trigger (and calls `on_trigger` as each fires)."""
        if str(path) != "sample" and not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
        return self._run(str(path), on_trigger)

    def process_stream(
        self,
        source: str,
        on_trigger: Optional[TriggerCallback] = None,
        idle_timeout_s: Optional[float] = None,
    ) -> List[Trigger]:
        """Run a live source (``tcp://host:port``, a camera index, an rtsp:// URL) until it ends.

        A ZMQ stream ends `idle_timeout_s` after its last frame (if given); any live
        source ends when `stop()` is called from another thread.
        """
        return self._run(source, on_trigger, idle_timeout_s)

    def triggers(self, source: str, idle_timeout_s: Optional[float] = None) -> Iterator[Trigger]:
        """The iterator form: yields triggers as they fire; leaving the loop early stops a live source."""
        items: "queue.Queue[Any]" = queue.Queue()

        def run() -> None:
            try:
                self._run(source, items.put, idle_timeout_s)
            except BaseException as exc:  # handed to the consumer's thread
                items.put(exc)
            finally:
                items.put(_DONE)

        thread = threading.Thread(target=run, name="facemoment-api", daemon=True)
        thread.start()
        finished = False
        try:
            while True:
                item = items.get()
                if item is _DONE:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not finished:
                self.stop()  # live sources end now; a file runs to its end so its outputs are whole
            thread.join()

    def stop(self) -> None:
        """End a live source gracefully: windows flush, pending clips are written."""
        from facemoment.runtime import shutdown

        shutdown.STOP.set()

    @property
    def triggers_path(self) -> Path:
        return self.output_dir / "triggers.jsonl"

    # -------------------------------------------------------------- internals
    def _run(self, source: str, on_trigger: Optional[TriggerCallback], idle_timeout_s: Optional[float] = None) -> List[Trigger]:
        from bytewax.testing import run_main

        from dataflows.facemoment import Taps, build_flow
        from facemoment.runtime import shutdown

        cfg = copy.deepcopy(self.config)
        cfg.source.source = source
        cfg.cameras.clear()  # the source named here is the camera
        if idle_timeout_s is not None:
            cfg.source.idle_timeout_s = idle_timeout_s
        cfg.source.shares = 1
        found: List[Trigger] = []

        def collect(trigger: Trigger) -> None:
            found.append(trigger)
            if on_trigger is not None:
                on_trigger(trigger)

        with _RUN_LOCK:
            shutdown.STOP.clear()
            try:
                run_main(build_flow(cfg, taps=Taps(on_trigger=collect)))
            finally:
                shutdown.STOP.clear()  # a stop asked of this run must not end the next one in this process
        return found
