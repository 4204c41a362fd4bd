"""The "models ready" signal: a ready file written atomically once every model is
loaded, and a `models_ready` trace record at the minimal level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from facemoment.core.config import Config, load_config
from facemoment.core.records import Level, level_of
from facemoment.core.trace import level_value, wanted
from facemoment.core.types import Frame, Observation
from facemoment.runtime import readiness
from operators.extraction.orchestrator import Orchestrator


class _Slow:
    """Notes in `loaded` when its model finished loading."""

    def __init__(self, name: str, loaded: dict):
        self.name, self._loaded = name, loaded

    def load(self) -> None:
        self._loaded[self.name] = time.time_ns()

    def extract(self, frame: Frame) -> Observation:
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns)


def _orchestrator(tmp_path, trace: str = "minimal", ready_file=None):
    cfg = Config()
    cfg.extract.extractors = ["face", "pose"]
    cfg.extract.deadline_ms = 0
    cfg.output.trace = trace
    cfg.output.ready_file = ready_file
    loaded: dict = {}
    orch = Orchestrator(cfg, lambda name, _cfg: _Slow(name, loaded))
    return orch, loaded


def _frame(i: int) -> Frame:
    return Frame("cam0", i, i * 33_333_333, np.zeros((4, 4, 3), np.uint8))


def test_ready_file_is_written_after_every_model_loaded(tmp_path):
    template = str(tmp_path / "run" / "ready-{pid}.json")
    orch, loaded = _orchestrator(tmp_path, ready_file=template)
    try:
        path = tmp_path / "run" / f"ready-{os.getpid()}.json"
        info = json.loads(path.read_text())
        assert info["pid"] == os.getpid()
        assert info["extractors"] == ["face", "pose"]
        assert set(loaded) == {"face", "pose"}
        assert info["wall_ns"] >= max(loaded.values())
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
        assert readiness.read_ready_files(template) == [info]
    finally:
        orch.close()


def test_models_ready_record_comes_once_with_the_first_batch(tmp_path):
    orch, loaded = _orchestrator(tmp_path, trace="minimal")
    try:
        first = orch.run([_frame(0)])
        second = orch.run([_frame(1)])
    finally:
        orch.close()
    ready = [r.to_dict() for r in first if not isinstance(r, (Observation, dict))]
    assert len(ready) == 1
    assert ready[0]["record_type"] == "models_ready"
    assert ready[0]["pid"] == os.getpid() and ready[0]["extractors"] == ["face", "pose"]
    assert ready[0]["wall_ns"] >= max(loaded.values())
    assert all(isinstance(r, (Observation, dict)) for r in second)
    assert level_of("models_ready") == Level.MINIMAL
    assert wanted(ready[0], level_value("minimal")) and not wanted(ready[0], level_value("off"))


def test_no_record_when_the_trace_is_off_and_no_file_unless_asked(tmp_path):
    orch, _ = _orchestrator(tmp_path, trace="off")
    try:
        out = orch.run([_frame(0)])
    finally:
        orch.close()
    assert all(isinstance(r, (Observation, dict)) for r in out)
    assert list(tmp_path.iterdir()) == []


def test_read_ready_files_skips_partial_and_foreign_files(tmp_path):
    template = str(tmp_path / "ready-{pid}.json")
    (tmp_path / "ready-1.json").write_text('{"pid": 1, "wall_ns"')  # torn: never written by us, still skipped
    (tmp_path / "ready-2.json").write_text('{"pid": 2}')
    (tmp_path / "other.json").write_text('{"pid": 3, "wall_ns": 5, "extractors": []}')
    readiness.write_ready_file(template, {"pid": 4, "wall_ns": 7, "extractors": ["face"]})
    assert readiness.read_ready_files(template) == [{"pid": 4, "wall_ns": 7, "extractors": ["face"]}]


def test_wait_ready_returns_when_enough_processes_are_ready_or_they_are_gone(tmp_path):
    template = str(tmp_path / "ready-{pid}.json")

    def later():
        readiness.write_ready_file(str(tmp_path / "ready-11.json"), {"pid": 11, "wall_ns": 1, "extractors": []})

    writer = threading.Timer(0.05, later)
    writer.start()
    found = readiness.wait_ready(template, count=1, timeout_s=30)
    writer.join()
    assert [f["pid"] for f in found] == [11]
    # Waiting for two while the processes have gone returns what there is at once.
    assert [f["pid"] for f in readiness.wait_ready(template, count=2, timeout_s=30, alive=lambda: False)] == [11]


def test_the_environment_names_the_ready_file():
    cfg = load_config(env={"FACEMOMENT_READY_FILE": "/tmp/x-{pid}.json"})
    assert cfg.output.ready_file == "/tmp/x-{pid}.json"


def test_a_child_process_signals_ready_to_its_parent(tmp_path):
    template = str(tmp_path / "ready-{pid}.json")
    code = (
        "from facemoment.core.config import load_config\n"
        "from operators.extraction.orchestrator import Orchestrator\n"
        "from facemoment.core.types import Observation\n"
        "class E:\n"
        "    def extract(self, f): return None\n"
        "cfg = load_config()\n"
        "cfg.extract.extractors = ['face']\n"
        "Orchestrator(cfg, lambda n, c: E()).close()\n"
        "import sys; sys.stdin.read()\n"  # stays up until the parent has seen the file
    )
    env = dict(os.environ, FACEMOMENT_READY_FILE=template, FACEMOMENT_TRACE="off")
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE)
    try:
        found = readiness.wait_ready(template, count=1, timeout_s=120, alive=lambda: child.poll() is None)
    finally:
        child.communicate(b"", timeout=60)
    assert [f["pid"] for f in found] == [child.pid]
    assert found[0]["extractors"] == ["face"]
