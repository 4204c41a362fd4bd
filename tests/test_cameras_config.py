"""The `[cameras.NAME]` table: parsing, validation, defaults, round trip, rates per camera."""

from __future__ import annotations

from pathlib import Path

import pytest

from facemoment.core.config import Config, ConfigError, Rate, cameras, load_config, stream_rates, to_toml

TABLE = """
preset = "batch"
[extract]
detect_width = 800
every = ["pose=2"]
[cameras.gate_a]
source = "tcp://10.0.0.8:5555"
detect = "tcp://10.0.0.8:5556"
detect_width = 480
every = ["gesture=3@1"]
[cameras.gate_b]
source = "sample"
stream_id = "b"
"""


def _load(tmp_path: Path, text: str, **kw) -> Config:
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    return load_config(env={}, path=path, **kw)


def test_a_table_names_every_camera_with_its_own_settings_and_the_rest_follows_extract(tmp_path):
    cfg = _load(tmp_path, TABLE)
    a, b = cameras(cfg)
    assert (a.stream_id, a.source, a.detect, a.detect_width, a.every) == (
        "gate_a", "tcp://10.0.0.8:5555", "tcp://10.0.0.8:5556", 480, ("gesture=3@1",))
    assert (a.analysed, a.record) == ("tcp://10.0.0.8:5556", "tcp://10.0.0.8:5555")
    # The batch preset applies before the file: extract.every is the file's.
    assert (b.stream_id, b.source, b.detect, b.detect_width, b.every) == ("b", "sample", None, 800, ("pose=2",))
    assert (b.analysed, b.record) == ("sample", None)
    rates = stream_rates(cfg)
    assert rates.of("gate_a") == {"gesture": Rate(3, 1)}
    assert rates.of("b") == {"pose": Rate(2)}
    assert rates.of("elsewhere") == {"pose": Rate(2)}  # streams not configured: extract.every


def test_the_table_round_trips_through_to_toml_and_settings(tmp_path):
    cfg = _load(tmp_path, TABLE)
    again = _load(tmp_path, to_toml(cfg))
    assert again == cfg and again.cameras == cfg.cameras
    by_settings = load_config(env={}, presets=["batch"], settings={
        "extract.detect_width": 800, "extract.every": ["pose=2"],
        "cameras.gate_a.source": "tcp://10.0.0.8:5555", "cameras.gate_a.detect": "tcp://10.0.0.8:5556",
        "cameras.gate_a.detect_width": 480, "cameras.gate_a.every": ["gesture=3@1"],
        "cameras": {"gate_b": {"source": "sample", "stream_id": "b"}},
    })
    assert by_settings == cfg
    env = load_config(env={"FACEMOMENT__CAMERAS__GATE_C__SOURCE": "sample", "FACEMOMENT__CAMERAS__GATE_C__DETECT_WIDTH": "320"})
    assert [(c.stream_id, c.detect_width) for c in cameras(env)] == [("gate_c", 320)]


def test_without_a_table_source_and_extra_are_the_cameras_and_extra_adds_to_a_table(tmp_path):
    cfg = load_config(env={"FACEMOMENT_SOURCE": "sample", "FACEMOMENT__SOURCE__EXTRA": "cam1=tcp://127.0.0.1:5555"})
    assert [(c.stream_id, c.source) for c in cameras(cfg)] == [("cam0", "sample"), ("cam1", "tcp://127.0.0.1:5555")]
    cfg = _load(tmp_path, TABLE + '[source]\nsource = "ignored.mp4"\nextra = ["cam9=sample"]\n')
    assert [c.stream_id for c in cameras(cfg)] == ["gate_a", "b", "cam9"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[cameras.a]\nsource = "sample"\n[cameras.b]\nsource = "sample"\nstream_id = "a"\n', "unique"),
        ('[cameras."a.b"]\nsource = "sample"\n', "letters, digits"),
        ('[cameras.a]\nsource = "sample"\nstream_id = "a/b"\n', "cameras.a.stream_id"),
        ('[cameras.a]\ndetect = "tcp://127.0.0.1:5556"\n', "cameras.a.source is not set"),
        ('[cameras.a]\n', "cameras.a.source is not set"),
        ('[cameras.a]\nsource = "sample"\ndetect_width = -1\n', "cameras.a.detect_width"),
        ('[cameras.a]\nsource = "sample"\nevery = ["nose=2"]\n', "cameras.a.every"),
        ('[cameras.a]\nsource = "sample"\nfps = 3\n', "unknown setting cameras.a.fps"),
        ('[cameras]\nsource = "sample"\n', "named entry"),
        ('cameras = "sample"\n', "inside a [section]"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        _load(tmp_path, text)


def test_the_summary_has_a_line_per_camera_from_the_trace(tmp_path):
    import json

    from facemoment.runtime.summary import summarize

    records = [
        {"record_type": "gate_tally", "stream": "gate_a", "frames": 90},
        {"record_type": "fps_summary", "stream": "gate_a", "frames_fused": 100},
        {"record_type": "fps_summary", "stream": "gate_b", "frames_fused": 40},
        {"record_type": "sync_delay", "stream": "gate_a", "frame_id": 7, "late": False, "waiting_for": ["pose"]},
        {"record_type": "frame_carry", "stream": "gate_a", "frame_id": 7, "source": "face", "from_frame_id": None, "every": 2},
        {"record_type": "frame_carry", "stream": "gate_a", "frame_id": 8, "source": "face", "from_frame_id": 7, "every": 2},
        {"record_type": "frame_drop", "stream": "gate_a", "frame_id": 9, "reason": "timeout", "extractors": ["pose"]},
        {"record_type": "frame_drop", "stream": "gate_b", "frame_id": 3, "reason": "backpressure", "dropped_frame_ids": [1, 2]},
        {"record_type": "frame_drop", "stream": "gate_b", "frame_id": 9, "reason": "backpressure", "where": "wire", "dropped_count": 5},
        {"record_type": "camera_rates", "stream": "gate_b", "frames": 40, "occupied_frames": 10, "rates_fps": {"face": 15.0, "pose": 7.5}},
        {"record_type": "camera_rates", "stream": "gate_b", "frames": 40, "occupied_frames": 30, "rates_fps": {"face": 30.0, "pose": 15.0}},
    ]
    (tmp_path / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "triggers.jsonl").write_text(json.dumps({"stream": "gate_a", "reason": "camera_gaze", "message": "TRIG"}) + "\n")
    text = summarize(tmp_path, tmp_path / "trace.jsonl")
    assert "  gate_a: 100 frames fused, 98 with every extractor (98%), 0 shed, 0 lost, 1 trigger" in text.splitlines()
    assert (
        "  gate_b: 40 frames fused, 40 with every extractor (100%), 2 shed, 5 lost, 0 triggers; "
        "occupied 75% of its frames, rates face 30, pose 15 fps"
    ) in text.splitlines()


def test_a_detect_stream_beside_a_file_is_refused_at_start(tmp_path):
    from facemoment.runtime import preflight

    cfg = load_config(env={}, settings={
        "cameras.a.source": "sample", "cameras.a.detect": "tcp://127.0.0.1:5556",
        "output.output_dir": str(tmp_path), "output.trig_address": "none",
    })
    with pytest.raises(ConfigError, match="camera 'a': a detect stream and the camera's source must both be live"):
        preflight.check(cfg)


# --- each camera's own settings reach the flow ------------------------------------


def _two_rated_cameras() -> Config:
    return load_config(env={}, settings={
        "extract.extractors": ["face", "pose"], "extract.deadline_ms": 0.0,
        "cameras.fast.source": "sample", "cameras.fast.detect_width": 320,
        "cameras.slow.source": "sample", "cameras.slow.every": ["pose=2"],
    })


def test_each_camera_is_read_at_its_own_detect_width():
    from dataflows.facemoment import read_ahead
    from connectors.sources import stream_specs
    from operators.extraction.orchestrator import SharedOrchestrator

    cfg = _two_rated_cameras()
    wrapped = read_ahead(stream_specs(cfg), cfg, SharedOrchestrator(cfg))
    assert (wrapped["fast"].detect_width, wrapped["slow"].detect_width) == (320, cfg.extract.detect_width)


def test_each_camera_runs_grouped_and_carries_by_its_own_rates():
    import numpy as np

    from facemoment.core.records import FrameCarry
    from facemoment.core.types import Frame, FrameObservations, FramePresence, Observation
    from operators.align import FrameGrouper
    from operators.extraction.orchestrator import Orchestrator
    from operators.fusion_step import Fuser

    cfg = _two_rated_cameras()
    calls = []

    class Counting:
        def __init__(self, name):
            self.name = name

        def extract(self, frame):
            calls.append((frame.stream_id, self.name, frame.frame_id))
            return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns)

        def close(self):
            pass

    orch = Orchestrator(cfg, lambda name, _cfg: Counting(name))
    try:
        frames = [Frame(cam, i, i * 33_333_333, np.zeros((4, 4, 3), np.uint8)) for cam in ("fast", "slow") for i in range(4)]
        out = orch.run(frames)
    finally:
        orch.close()
    pose = sorted((s, i) for s, name, i in calls if name == "pose")
    assert pose == [("fast", 0), ("fast", 1), ("fast", 2), ("fast", 3), ("slow", 0), ("slow", 2)]

    grouper = FrameGrouper(cfg.extract.extractors, 100.0, rates=stream_rates(cfg))
    fused = []
    for cam in ("fast", "slow"):
        items = [o for o in out if isinstance(o, (Observation, FramePresence)) and o.stream_id == cam]
        fused += [fo for fo in grouper((0, items)) if isinstance(fo, FrameObservations)]
    assert [(fo.stream_id, fo.frame_id, fo.missing, fo.not_due) for fo in fused] == [
        ("fast", i, (), ()) for i in range(4)] + [("slow", i, (), () if i % 2 == 0 else ("pose",)) for i in range(4)]

    fuser = Fuser(cfg)
    states = {}
    carries = []
    for fo in fused:
        states[fo.stream_id], records = fuser(states.get(fo.stream_id), fo)
        carries += [(r.stream, r.frame_id, r.from_frame_id) for r in records if isinstance(r, FrameCarry)]
    assert carries == [("slow", 1, 0), ("slow", 3, 2)]  # only the rated camera carries pose
    assert all("pose" in fo.observations for fo in fused)


def test_a_command_naming_its_source_runs_that_camera_alone(tmp_path):
    from facemoment.tools.debug_view import debug_config

    cfg = _load(tmp_path, TABLE)
    looked = debug_config(cfg, "sample", tmp_path, None)
    assert [(c.stream_id, c.source) for c in cameras(looked)] == [("cam0", "sample")]
    assert [c.stream_id for c in cameras(cfg)] == ["gate_a", "b"]  # the caller's configuration is left alone
