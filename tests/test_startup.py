"""Importing the dataflow starts nothing; running it, by `bytewax.run` or by the CLI,
starts the same run-time set-up (live status, summary at exit) for the flow that runs."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Dict

import cv2
import pytest

from facemoment.formats.sample import render_frame

from conftest import PYTHON, REPO, busy_pub_address, free_port, run_env

# Run in a fresh interpreter: what importing the module changes in the process.
IMPORT_PROBE = textwrap.dedent(
    """
    import atexit, json, os, signal, sys, threading

    def sockets():
        fds = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    fds.add(fd)
            except OSError:
                pass
        return fds

    ours = ("facemoment", "dataflows", "connectors", "operators")
    hooks = []
    register = atexit.register
    def spy(func, *args, **kwargs):
        hooks.append(getattr(func, "__module__", "") or "")
        return register(func, *args, **kwargs)
    atexit.register = spy

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads, fds = set(threading.enumerate()), sockets()
    import dataflows.facemoment as module
    from facemoment.runtime import startup
    print(json.dumps({
        "flow": type(module.flow).__name__,
        "new_threads": sorted(t.name for t in set(threading.enumerate()) - threads),
        "handlers_changed": [int(s) for s, h in handlers.items() if signal.getsignal(s) is not h],
        "our_exit_hooks": [m for m in hooks if m.split(".")[0] in ours],
        "new_sockets": len(sockets() - fds),
        "started": startup.current() is not None,
    }))
    """
)


def test_importing_the_dataflow_starts_nothing(flow_env):
    env = dict(flow_env)
    env.update(
        {
            # Everything that starts something is switched on, and the TRIG port is taken.
            "FACEMOMENT_SOURCE": f"tcp://127.0.0.1:{free_port()}",
            "FACEMOMENT_TRIG_ADDRESS": f"tcp://127.0.0.1:{free_port()}",
            "FACEMOMENT__OUTPUT__METRICS_PORT": str(free_port()),
            "FACEMOMENT__OUTPUT__SYNC_VIEW": "true",
            "FACEMOMENT__OUTPUT__SUMMARY": "true",
            "FACEMOMENT__EXTRACT__EXTRACTORS": "quality",
        }
    )
    done = subprocess.run([PYTHON, "-c", IMPORT_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe == {
        "flow": "Dataflow",
        "new_threads": [],
        "handlers_changed": [],
        "our_exit_hooks": [],
        "new_sockets": 0,
        "started": False,
    }


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    """2.3 s of the sample around the face coming to the centre: one trigger."""
    path = tmp_path_factory.mktemp("video") / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for index in range(60, 130):
        writer.write(render_frame(index))
    writer.release()
    return path


def _env(flow_env: Dict[str, str], video: Path, out: Path) -> Dict[str, str]:
    return run_env(
        flow_env,
        video,
        out,
        FACEMOMENT__EXTRACT__EXTRACTORS="face,quality",
        FACEMOMENT__OUTPUT__CLIPS="false",
        FACEMOMENT__OUTPUT__SYNC_VIEW="true",
        FACEMOMENT__OUTPUT__SUMMARY="true",
    )


@pytest.mark.parametrize(
    "entry",
    [
        ["-m", "bytewax.run", "dataflows.facemoment"],
        ["-m", "facemoment", "run"],
    ],
    ids=["bytewax_run", "cli"],
)
def test_both_entries_show_the_live_status_of_the_flow_that_runs(flow_env, tmp_path, short_video, entry):
    out = tmp_path / "out"
    done = subprocess.run(
        [PYTHON, *entry], cwd=REPO, env=_env(flow_env, short_video, out), capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # The sync view was fed by this run's records: extractor timings and the trigger.
    assert "Sync Status" in output, output[-3000:]
    assert re.search(r"Frame \d+ \(cam0\):\s+Face ✓", output), output[-3000:]
    assert re.search(r"Triggers: 1 \(last: \w+\)", output), output[-3000:]
    assert "FaceMoment run summary" in output and "triggers: 1" in output
    assert len((out / "triggers.jsonl").read_text().splitlines()) == 1


def test_a_busy_trig_port_fails_the_bytewax_run_start(flow_env, tmp_path, short_video):
    with busy_pub_address() as address:
        env = _env(flow_env, short_video, tmp_path / "out")
        env["FACEMOMENT_TRIG_ADDRESS"] = address
        done = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert re.search(r"TRIG (publisher at|address) \S+ cannot b", done.stdout + done.stderr) or \
        "cannot bind the TRIG publisher" in done.stdout + done.stderr
    assert not (tmp_path / "out" / "triggers.jsonl").exists()


def test_failing_check_starts_nothing():
    from facemoment.core.config import Config
    from facemoment.runtime import startup

    def busy() -> None:
        raise RuntimeError("busy")

    with pytest.raises(RuntimeError, match="busy"):
        startup.start(Config(), [busy])
    assert startup.current() is None
