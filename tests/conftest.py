"""Shared test helpers: free loopback ports, environment for dataflow subprocesses,
polling, running a source, decoding a video and writing the sample as a recording."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from facemoment.core.records import RECORD_TYPES, Record
from facemoment.runtime.loopback import free_port  # noqa: F401  (tests import it from here)


def rec(record_type: str, **fields) -> Record:
    """A typed trace record with the given fields, the others None (tests import it from here)."""
    cls = RECORD_TYPES[record_type]
    return cls(**{**{f.name: None for f in dataclasses.fields(cls)}, **fields})

REPO = Path(__file__).resolve().parents[1]


def _flow_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def flow_env(tmp_path):
    """Environment for running `python -m bytewax.run dataflows.facemoment` in a subprocess."""
    env = _flow_env()
    env["FACEMOMENT_OUTPUT_DIR"] = str(tmp_path / "out")
    return env


@pytest.fixture(scope="module")
def module_flow_env():
    return _flow_env()


PYTHON = sys.executable


def finish(procs: List[Any], timeout: float = 300) -> List[str]:
    """Each process's output once it ends; any still running when waiting fails is
    killed (with what it started, when it leads its own process group), and each must
    have exited 0."""
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_tree(proc)
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
    return outputs


def kill_tree(proc: Any) -> None:
    """Kill `proc`, and its process group when it leads one: `bytewax.testing -p N`
    starts its processes as children, which would outlive it and hold the cores."""
    import signal

    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.kill()
    proc.wait()


def run_flows(cmds: List[List[str]], env: Dict[str, str], timeout: float = 300) -> List[str]:
    """Run the commands side by side from the repository; their outputs, all exit 0."""
    import subprocess

    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        for cmd in cmds
    ]
    return finish(procs, timeout)


def run_env(flow_env: Dict[str, str], source: Any, out: Path, **settings: str) -> Dict[str, str]:
    """`flow_env` for a run on `source` writing to `out`, with no TRIG publisher;
    `settings` add variables or override these."""
    return {
        **flow_env,
        "FACEMOMENT_SOURCE": str(source),
        "FACEMOMENT_OUTPUT_DIR": str(out),
        "FACEMOMENT_TRIG_ADDRESS": "none",
        **settings,
    }


# Live runs whose results must not depend on the machine's speed: no extraction
# deadline, a source buffer that holds the whole sample (360 frames, 330 MB) however
# far extraction falls behind, and alignment that never
# calls an observation late or closes a window on system time (the stream's end
# closes the last ones). With a lossless publisher, every frame is then fused with
# every extractor's result however busy the cores are; tests assert accounting and
# trigger equality, never completeness that depends on CPU.
LOSSLESS_LIVE = {
    "FACEMOMENT__EXTRACT__DEADLINE_MS": "0",
    "FACEMOMENT__SOURCE__BUFFER_FRAMES": "0",
    "FACEMOMENT__SOURCE__BUFFER_MAX_MB": "1024",
    "FACEMOMENT__ALIGN__ALLOWED_LATENESS_MS": "3600000",
    "FACEMOMENT__ALIGN__IDLE_FLUSH_MS": "3600000",
}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a real condition until it holds or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)  # polling period
    return condition()


def run_source(
    source: Any,
    script: Optional[Callable[[], None]] = None,
    out: Optional[List[Any]] = None,
    on_error: Optional[Callable[[], None]] = None,
) -> List[Any]:
    """Everything a Bytewax source emits, through a one-step flow, into `out`.

    `script`, if given, runs on a thread of its own meanwhile (a publisher feeding
    the source; it can watch `out`). An exception in it calls `on_error` (e.g. to
    stop the source) and fails the test once the flow has ended.
    """
    import threading

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    out = [] if out is None else out
    errors: List[BaseException] = []

    def guarded() -> None:
        try:
            if script is not None:
                script()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            if on_error is not None:
                on_error()

    flow = Dataflow("source_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    thread = threading.Thread(target=guarded)
    thread.start()
    try:
        run_main(flow)
    finally:
        thread.join(30)
    assert not errors, errors
    return out


def drain(part: Any, limit: Optional[int] = None) -> List[Any]:
    """Batches from a source partition until it ends (or `limit` items were taken)."""
    items: List[Any] = []
    while limit is None or len(items) < limit:
        try:
            items += part.next_batch()
        except StopIteration:
            break
    return items


def decode_all(path: Any) -> list:
    """Every frame of a video as OpenCV decodes it (the reference)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def astronaut_bgr() -> Any:
    """scikit-image's astronaut photograph (one person, face and shoulders) in BGR."""
    import cv2
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


class BrokenGraph:
    """A MediaPipe graph stand-in whose every run fails with `message`."""

    def __init__(self, message: str) -> None:
        self.message = message

    def process(self, image: Any) -> None:
        raise RuntimeError(self.message)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def busy_pub_address() -> Iterator[str]:
    """A loopback address a ZeroMQ PUB holds for the duration, so binding it fails."""
    import zmq

    context = zmq.Context()
    holder = context.socket(zmq.PUB)
    holder.setsockopt(zmq.LINGER, 0)
    holder.bind("tcp://127.0.0.1:*")
    try:
        yield holder.getsockopt_string(zmq.LAST_ENDPOINT)
    finally:
        holder.close()
        context.term()


def write_sample_recording(path: Path, video_time_base: bool = False) -> Path:
    """The built-in sample stream as a recording, with its ids and timestamps.

    ``video_time_base``: the timestamps a publisher of the sample video sends
    instead (file positions truncated to ns, as visualbase does), 1 ns below the
    sample's own on some frames.
    """
    from facemoment.formats.frames import open_frames
    from facemoment.formats.recording import RecordingWriter
    from facemoment.formats.sample import ensure_sample_video, render_frame, sample_timeline

    frames = sample_timeline().frames
    stamps = [frame.t_ns for frame in frames]
    if video_time_base:
        with open_frames(str(ensure_sample_video())) as reader:
            stamps = [item[1] for item in iter(reader.read, None)]
        assert len(stamps) == len(frames)
    writer = RecordingWriter(path, {"address": "test"})
    for frame, t_ns in zip(frames, stamps):
        writer.append_image(frame.index, t_ns, render_frame(frame.index))
    writer.close()
    return path
