"""The "models ready" signal a parent process can wait on.

A process's extraction models load (and warm up) when its first frames reach the
extraction step; until then a run's speed says nothing about extraction. Once every
extractor of the process is ready, the process writes a small JSON file (when
`output.ready_file` / `FACEMOMENT_READY_FILE` is set) and a `models_ready` trace
record (at the minimal level and above).

The file is written to a temporary name in the same folder and renamed into place,
so a reader sees either no file or the whole of it. A `{pid}` in the path is
replaced by the process id, so several processes of one cluster each leave their
own file (``FACEMOMENT_READY_FILE=/tmp/run/ready-{pid}.json``).
"""

from __future__ import annotations

import glob
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from facemoment.core.records import ModelsReady

ENV_NAME = "FACEMOMENT_READY_FILE"
PID_FIELD = "{pid}"


def ready_path(template: str, pid: Optional[int] = None) -> Path:
    return Path(template.replace(PID_FIELD, str(os.getpid() if pid is None else pid)))


def write_ready_file(template: str, info: Dict[str, Any]) -> Path:
    """Write `info` as JSON to the ready file, atomically; returns the path written."""
    path = ready_path(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, path)
    return path


def ready_info(extractors: Sequence[str], wall_ns: Optional[int] = None) -> Dict[str, Any]:
    """What a ready file and a `models_ready` record say."""
    return {
        "pid": os.getpid(),
        "wall_ns": time.time_ns() if wall_ns is None else wall_ns,
        "extractors": list(extractors),
    }


def read_ready_files(template: str) -> List[Dict[str, Any]]:
    """Every complete ready file matching `template` (`{pid}` matches any process)."""
    found = []
    for name in sorted(glob.glob(glob.escape(template).replace(glob.escape(PID_FIELD), "*"))):
        try:
            info = json.loads(Path(name).read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile, or not a ready file
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("wall_ns"), int):
            found.append(info)
    return found


def wait_ready(template: str, count: int = 1, timeout_s: float = 600.0, poll_s: float = 0.01,
               alive: Optional[Any] = None) -> List[Dict[str, Any]]:
    """Poll until `count` processes have written their ready file.

    Returns what was found by the deadline (fewer than `count` when it passed, or
    when `alive()` says the processes being waited for have all gone).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        gone = alive is not None and not alive()
        found = read_ready_files(template)  # read after the check: a file written just before exit counts
        if len(found) >= count or gone or time.monotonic() >= deadline:
            return found
        time.sleep(poll_s)


def announce(ready_file: Optional[str], extractors: Sequence[str]) -> ModelsReady:
    """Note that this process's models are ready: the ready file (when configured)
    and the `models_ready` record for the trace."""
    info = ready_info(extractors)
    if ready_file:
        write_ready_file(ready_file, info)
    return ModelsReady(**info)
