"""Everything a run sets up around the dataflow, once per process.

Both ways of running start here: `python -m bytewax.run dataflows.facemoment` (the
flow calls `start` when its first source is listed, see connectors/frames_in.py) and
the `facemoment` command (calls it before the run, then the flow's call finds it done).
Importing the dataflow module starts nothing.

What `start` does, in order: the start-up checks, the native log filter, logging,
the allocator setting for frames, the Ctrl-C/SIGTERM handler (first signal drains,
second aborts; only the main thread can install it, so under `bytewax.run`, whose
workers may run on other threads, the flow's lookup installs it: dataflows/facemoment.py),
the summary at exit, the Prometheus endpoint and the terminal sync view.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from facemoment.core.config import Config
from facemoment.core.records import Record
from facemoment.runtime import cluster, exit_status, memory, metrics, native_logs, shutdown
from facemoment.runtime.summary import print_summary_at_exit
from facemoment.runtime.sync_view import SyncView

log = logging.getLogger("facemoment")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class Handles:
    """What `start` set up in this process."""

    cfg: Config
    sync_view: Optional[SyncView] = None
    metrics_port: Optional[int] = None
    sigint_handler: bool = False  # the draining Ctrl-C handler is installed
    summary_at_exit: bool = False


_lock = threading.Lock()
_handles: Optional[Handles] = None


def start(cfg: Config, checks: Iterable[Callable[[], None]] = ()) -> Handles:
    """Set the process up for a run of `cfg`; later calls return the first call's handles.

    A failing check raises before anything is started, and a later call runs it again.
    """
    global _handles
    with _lock:
        if _handles is not None:
            return _handles
        for check in checks:
            check()
        if not cfg.output.native_logs:
            native_logs.filter_native_stderr()  # before any model loads and prints
        logging.basicConfig(level=os.environ.get("FACEMOMENT_LOG_LEVEL", "INFO"), format=LOG_FORMAT)
        memory.keep_frame_memory_flat()
        exit_status.exit_with_status_at_exit()  # registered first: runs after the summary
        handles = Handles(cfg, sigint_handler=shutdown.install_sigint_handler())
        if not handles.sigint_handler:
            log.info("Ctrl-C aborts this run (the draining handler is installed from the main thread only)")
        if cfg.output.summary:
            print_summary_at_exit(cfg)
            handles.summary_at_exit = True
        if cfg.output.metrics_port:
            handles.metrics_port = cfg.output.metrics_port + cluster.process_index()
            metrics.start_metrics_server(handles.metrics_port, cfg.output.metrics_addr)
        if cfg.output.sync_view:
            view = SyncView(cfg.align.window_ms, cfg.align.allowed_lateness_ms, cfg.extract.extractors)
            view.start()
            atexit.register(view.stop)
            handles.sync_view = view
        _handles = handles
        return handles


def current() -> Optional[Handles]:
    """The handles of this process's run, or None before `start`."""
    return _handles


def live_status(_step_id: str, record: Record) -> None:
    """A dataflow `inspect` step: the record goes to the metrics and the sync view of this run."""
    if not isinstance(record, Record):
        return  # a plain-dict record (a type not yet converted) has nothing for them
    metrics.observe_record(record)
    handles = _handles
    if handles is not None and handles.sync_view is not None:
        handles.sync_view.feed((record,))
