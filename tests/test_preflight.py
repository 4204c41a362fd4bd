"""Start-up checks: the same one-line error and exit code 2 at both entry points,
before the dataflow starts, for every way a run can be misconfigured."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from facemoment.core.config import Config, ConfigError
from facemoment.runtime import preflight

from conftest import PYTHON, REPO, busy_pub_address, free_port


def _case(tmp_path: Path, name: str) -> Tuple[Dict[str, str], List[str], str]:
    """(environment, `facemoment process` arguments, expected message) of one bad start."""
    out = tmp_path / "out"
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("these are notes, not a video\n")
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\0" * 4096)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[fusion\ncooldown_sec = 2\n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("[fusion]\ncooldown_secs = 2\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 16)
    trig_socket = f"unix://{tmp_path}/no_such_folder/trig.sock"
    cases = {
        "missing video": ({"FACEMOMENT_SOURCE": str(tmp_path / "missing.mp4")}, [str(tmp_path / "missing.mp4")], "does not exist"),
        "directory as source": ({"FACEMOMENT_SOURCE": str(tmp_path)}, [str(tmp_path)], "is a directory"),
        "not a video": ({"FACEMOMENT_SOURCE": str(not_video)}, [str(not_video)], "cannot be read as a video"),
        "damaged header": ({"FACEMOMENT_SOURCE": str(damaged)}, [str(damaged)], "cannot be read as a video"),
        "invalid toml": ({"FACEMOMENT_CONFIG": str(bad_toml)}, [], "not valid TOML"),
        "unknown key": ({"FACEMOMENT_CONFIG": str(unknown_key)}, [], "unknown setting fusion.cooldown_secs"),
        "unknown preset": ({"FACEMOMENT_PRESET": "turbo"}, ["--preset", "turbo"], "unknown preset 'turbo'"),
        "stream id with a dot": ({"FACEMOMENT_STREAM_ID": "cam.0"}, [], "source.stream_id = 'cam.0' must be a stream id"),
        "config is a directory": ({"FACEMOMENT_CONFIG": str(tmp_path)}, [], "is a directory, not a TOML file"),
        "config is binary": ({"FACEMOMENT_CONFIG": str(binary)}, [], "is not UTF-8 text"),
        "label with a space": ({"FACEMOMENT__FUSION__LABEL": "my clip"}, [], "fusion.label = 'my clip' must be one word"),
        "label with =": ({"FACEMOMENT__FUSION__LABEL": "a=b"}, [], "fusion.label = 'a=b' must be one word"),
        "nan without a range": ({"FACEMOMENT__FUSION__GATE__MAX_YAW": "nan"}, [], "fusion.gate.max_yaw = nan is out of range"),
        "trig socket folder missing": (
            {"FACEMOMENT_TRIG_ADDRESS": trig_socket}, ["--trig-address", trig_socket], "no_such_folder' does not exist"
        ),
        "output dir is a file": ({"FACEMOMENT_OUTPUT_DIR": str(a_file)}, ["--output-dir", str(a_file)], "is a file"),
        "absurd setting": ({"FACEMOMENT__FUSION__POST_SEC": "1e12"}, [], "fusion.post_sec"),
    }
    env, args, message = cases[name]
    env = {"FACEMOMENT_OUTPUT_DIR": str(out), "FACEMOMENT_TRIG_ADDRESS": "none", **env}
    return env, args, message


CASES = [
    "missing video", "directory as source", "not a video", "damaged header", "invalid toml",
    "unknown key", "unknown preset", "stream id with a dot", "output dir is a file", "absurd setting",
    "config is a directory", "config is binary", "label with a space", "label with =", "nan without a range",
    "trig socket folder missing",
]


def _one_line_error(proc: subprocess.CompletedProcess, message: str) -> str:
    assert proc.returncode == preflight.EXIT_STARTUP, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("facemoment:")]
    assert len(errors) == 1 and errors[0].startswith("facemoment: error: "), proc.stderr[-2000:]
    assert message in errors[0]
    return errors[0]


@pytest.mark.parametrize("name", CASES)
def test_both_entry_points_refuse_a_bad_start_with_the_same_line(name, flow_env, tmp_path):
    env, args, message = _case(tmp_path, name)
    bytewax_env = {**flow_env, **env}
    bytewax_env.setdefault("FACEMOMENT_SOURCE", "sample")
    by_module = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO,
                               env=bytewax_env, capture_output=True, text=True, timeout=120)
    cli_env = {**flow_env, **{k: v for k, v in env.items() if k != "FACEMOMENT_SOURCE"}}
    video = args[0] if args and not args[0].startswith("--") else "sample"
    options = args[1:] if args and not args[0].startswith("--") else args
    by_cli = subprocess.run([PYTHON, "-m", "facemoment", "process", video, *options], cwd=REPO,
                            env=cli_env, capture_output=True, text=True, timeout=120)
    assert _one_line_error(by_module, message) == _one_line_error(by_cli, message)
    assert not (tmp_path / "out" / "triggers.jsonl").exists()  # nothing started


def test_a_busy_trig_port_is_refused_at_start_not_at_the_first_trigger(flow_env, tmp_path):
    with busy_pub_address() as address:
        env = {**flow_env, "FACEMOMENT_SOURCE": "sample", "FACEMOMENT_TRIG_ADDRESS": address}
        by_module = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO,
                                   env=env, capture_output=True, text=True, timeout=120)
        by_cli = subprocess.run([PYTHON, "-m", "facemoment", "process", "sample", "--trig-address",
                                 address], cwd=REPO, env=flow_env,
                                capture_output=True, text=True, timeout=120)
    line = _one_line_error(by_module, "cannot be bound")
    assert line == _one_line_error(by_cli, "cannot be bound")


def test_check_accepts_a_good_configuration_and_creates_the_output_dir(tmp_path):
    cfg = Config()
    cfg.source.source = "tcp://127.0.0.1:5555"
    cfg.output.output_dir = str(tmp_path / "new" / "out")
    cfg.output.trig_address = f"tcp://127.0.0.1:{free_port()}"
    preflight.check(cfg)
    assert (tmp_path / "new" / "out").is_dir()


@pytest.mark.parametrize("stream_id", ["cam.0", "cam/0", "cam 0", ""])
def test_stream_ids_bytewax_cannot_take_are_refused(stream_id):
    cfg = Config()
    cfg.source.stream_id = stream_id
    with pytest.raises(ConfigError, match="stream id"):
        preflight.configured_streams(cfg)


# ------------------------------------------------------------------ exit codes


def _recording(path: Path, n: int = 40) -> List[int]:
    import numpy as np

    from facemoment.formats.recording import RecordingWriter

    with RecordingWriter(path, {"stream": "test"}) as writer:
        return [writer.append_image(i, 5_000_000_000 + i * 33_333_333,
                                    np.full((24, 32, 3), i * 5 % 256, np.uint8), "raw") for i in range(n)]


def _video(path: Path, n: int = 60) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), i * 4 % 256, np.uint8))
    writer.release()
    return path


def _both(flow_env: Dict[str, str], source: Path, out: Path) -> List[Tuple[subprocess.CompletedProcess, Path]]:
    """Both entry points on one source, outputs in out/module and out/cli."""
    env = {**flow_env, "FACEMOMENT_TRIG_ADDRESS": "none",
           "FACEMOMENT__EXTRACT__EXTRACTORS": "quality", "FACEMOMENT__OUTPUT__CLIPS": "false"}
    by_module = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO,
                               env={**env, "FACEMOMENT_SOURCE": str(source), "FACEMOMENT_OUTPUT_DIR": str(out / "module")},
                               capture_output=True, text=True, timeout=300)
    by_cli = subprocess.run([PYTHON, "-m", "facemoment", "process", str(source), "--output-dir", str(out / "cli")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return [(by_module, out / "module"), (by_cli, out / "cli")]


def test_a_recording_damaged_at_its_header_does_not_start(flow_env, tmp_path):
    path = tmp_path / "cam.fmrec"
    _recording(path)
    data = bytearray(path.read_bytes())
    data[20:30] = b"\xff" * 10  # inside the header, after the magic
    path.write_bytes(bytes(data))
    for proc, _out in _both(flow_env, path, tmp_path):
        _one_line_error(proc, "cannot be read as a recording")


@pytest.mark.parametrize("kind", ["recording", "video"])
def test_damage_part_way_exits_3_after_writing_what_was_read(kind, flow_env, tmp_path):
    if kind == "recording":
        path = tmp_path / "cam.fmrec"
        offsets = _recording(path)
        path.write_bytes(path.read_bytes()[: offsets[20] + 50])  # cut inside frame 20
    else:
        whole = _video(tmp_path / "whole.avi")
        path = tmp_path / "cut.avi"
        path.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    for proc, out in _both(flow_env, path, tmp_path):
        assert proc.returncode == 3, proc.stderr[-3000:]
        assert "facemoment: input incomplete:" in proc.stderr
        assert "FaceMoment run summary" in proc.stderr  # the summary still comes first
        trace = (out / "trace.jsonl").read_text()
        assert '"frame_extract"' in trace  # the frames before the damage were processed
        assert (out / "triggers.jsonl").exists()


def test_a_whole_file_without_a_trigger_exits_0_with_its_summary_and_outputs(flow_env, tmp_path):
    path = _video(tmp_path / "whole.avi", n=20)
    for name in ("module", "cli"):  # a previous run's trigger must not pass for this run's
        (tmp_path / name).mkdir()
        (tmp_path / name / "triggers.jsonl").write_text('{"reason": "from an earlier run"}\n')
    for proc, out in _both(flow_env, path, tmp_path):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "input incomplete" not in proc.stderr
        assert "FaceMoment run summary" in proc.stderr and "triggers: 0" in proc.stderr
        assert (out / "triggers.jsonl").read_text() == ""
        assert '"frame_extract"' in (out / "trace.jsonl").read_text()


def test_trig_and_obs_socket_folders_are_checked_at_start(tmp_path):
    cfg = Config()
    cfg.output.output_dir = str(tmp_path / "out")
    cfg.output.trig_address = f"unix://{tmp_path}/trig.sock"  # visualbase binds it later: the folder is enough
    cfg.output.obs_address = f"ipc://{tmp_path}/obs.sock"
    preflight.check_socket_folders(cfg)
    cfg.output.obs_address = f"ipc://{tmp_path}/gone/obs.sock"
    with pytest.raises(ConfigError, match=r"OBS address ipc://.*/gone/obs.sock: folder .*gone' does not exist"):
        preflight.check_socket_folders(cfg)
    cfg.output.obs_address = None
    cfg.output.trig_address = f"unix://{tmp_path}/gone/trig.sock"
    with pytest.raises(ConfigError, match="TRIG address unix://"):
        preflight.check(cfg)
