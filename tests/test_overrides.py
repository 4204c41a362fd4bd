"""The command line builds a `Config` from its options, and hands a child process that Config."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from facemoment.core.config import Config, load_config
from facemoment.tools.overrides import child_environment, config_environment, option_settings, preset_names

from conftest import PYTHON, REPO, free_port


def test_given_options_become_settings_and_left_out_ones_do_not() -> None:
    args = argparse.Namespace(preset="batch", output_dir=None, stream_id="", idle_timeout=0.0)
    got = option_settings(
        args,
        output_dir="output.output_dir",
        stream_id="source.stream_id",
        idle_timeout="source.idle_timeout_s",
    )
    # A zero timeout is a value the user gave; None and "" are options left out.
    assert got == {"source.idle_timeout_s": 0.0}
    assert preset_names(None) is None and preset_names("batch, lean,") == ["batch", "lean"]


def test_a_preset_option_replaces_the_environment_s_presets() -> None:
    environ = {"FACEMOMENT_PRESET": "lean", "FACEMOMENT_MODEL_DIR": "/models"}
    assert config_environment(["batch"], environ) == {"FACEMOMENT_MODEL_DIR": "/models"}
    assert config_environment(None, environ) == environ


def test_the_demo_runs_lean_unless_told_otherwise() -> None:
    from facemoment.tools.cli import build_parser, demo_preset

    assert demo_preset(None, {}) == "lean"
    assert demo_preset(None, {"FACEMOMENT_PRESET": "batch"}) == "batch"
    assert demo_preset("", {"FACEMOMENT_PRESET": "batch"}) == ""  # full fidelity on request
    assert demo_preset("realtime,lean", {}) == "realtime,lean"
    assert build_parser().parse_args(["demo"]).preset is None
    assert load_config(env={"FACEMOMENT_PRESET": demo_preset(None, {})}).extract.every == ["pose=2", "gesture=2@1"]


def _captured_run(monkeypatch: pytest.MonkeyPatch, argv: List[str], environ: Dict[str, str]) -> Config:
    from facemoment.tools import cli

    for name in [k for k in list(__import__("os").environ) if k.startswith("FACEMOMENT")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    seen: List[Config] = []
    monkeypatch.setattr(cli, "_run_flow", lambda cfg, workers=1, ui=None: seen.append(cfg) or 0)
    assert cli.main(argv) == 0
    return seen[0]


def test_process_builds_its_config_from_its_options(monkeypatch, tmp_path) -> None:
    cfg = _captured_run(
        monkeypatch,
        ["process", "sample", "--preset", "batch", "--fps", "5", "--output-dir", str(tmp_path / "o"), "--trace", "off"],
        {"FACEMOMENT_PRESET": "lean", "FACEMOMENT__FUSION__COOLDOWN_SEC": "4", "FACEMOMENT_OUTPUT_DIR": "elsewhere"},
    )
    assert cfg.source.source == "sample" and cfg.source.fps == 5.0 and cfg.source.progress is True
    assert cfg.preset == ["batch"]  # --preset replaces $FACEMOMENT_PRESET
    assert cfg.extract.every == []  # lean was not applied
    assert cfg.fusion.cooldown_sec == 4.0  # the environment keeps its say over what no option sets
    assert cfg.output.output_dir == str(tmp_path / "o") and cfg.output.trace == "off"
    assert cfg.output.trig_address is None  # a file has no TRIG consumer unless asked


def test_attach_options_beat_the_environment(monkeypatch, tmp_path) -> None:
    port = free_port()
    cfg = _captured_run(
        monkeypatch,
        ["attach", "tcp://127.0.0.1:5999", "--idle-timeout", "2.5", "--trig-address", f"tcp://127.0.0.1:{port}",
         "--output-dir", str(tmp_path)],
        {"FACEMOMENT_IDLE_TIMEOUT_S": "9", "FACEMOMENT_TRIG_ADDRESS": "none"},
    )
    assert cfg.source.source == "tcp://127.0.0.1:5999" and cfg.source.idle_timeout_s == 2.5
    assert cfg.output.trig_address == f"tcp://127.0.0.1:{port}"


def test_a_child_gets_the_built_config_and_no_other_configuration_variable(tmp_path) -> None:
    cfg = load_config(env={"FACEMOMENT_PRESET": "lean"}, settings={"fusion.label": "ride", "source.fps": 10})
    environ = {"FACEMOMENT_PRESET": "batch", "FACEMOMENT__FUSION__LABEL": "other", "FACEMOMENT_SOURCE": "x.mp4",
               "FACEMOMENT_MODEL_DIR": "/models", "PATH": "/bin"}
    env = child_environment(cfg, tmp_path / "run.toml", environ)
    assert env == {"FACEMOMENT_MODEL_DIR": "/models", "PATH": "/bin", "FACEMOMENT_CONFIG": str(tmp_path / "run.toml")}
    assert load_config(env=env) == cfg


def test_the_demo_hands_the_dataflow_process_its_config(monkeypatch, tmp_path) -> None:
    from facemoment.tools import cli, daemon

    for name in [k for k in list(__import__("os").environ) if k.startswith("FACEMOMENT")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FACEMOMENT__FUSION__COOLDOWN_SEC", "3")
    handed: List[Any] = []

    class FakeFlow:
        def wait(self) -> int:
            return 0

    def start_flow(cmd: List[str], env: Dict[str, str]) -> FakeFlow:
        handed.append((cmd, env, load_config(env=env)))  # read while the file exists
        return FakeFlow()

    monkeypatch.setattr(cli, "_start_flow", start_flow)
    monkeypatch.setattr(daemon, "run_daemon", lambda *a, **k: None)
    frames, trig = free_port(), free_port()
    out = tmp_path / "demo"
    assert cli.main(["demo", "--output-dir", str(out), "--frames-port", str(frames), "--trig-port", str(trig),
                     "--preset", "batch", "--idle-timeout", "1.5"]) == 0
    (cmd, env, cfg), = handed
    assert cmd[1:4] == ["-m", "bytewax.run", "dataflows.facemoment"]
    assert not any(k.startswith("FACEMOMENT__") for k in env)
    assert cfg.source.source == f"tcp://127.0.0.1:{frames}" and cfg.output.trig_address == f"tcp://127.0.0.1:{trig}"
    assert cfg.source.idle_timeout_s == 1.5 and cfg.preset == ["batch"] and cfg.fusion.cooldown_sec == 3.0
    assert cfg.output.output_dir == str(out)
    assert not Path(env["FACEMOMENT_CONFIG"]).exists()  # removed once the run is over


def test_a_bytewax_child_runs_on_the_handed_config(flow_env, tmp_path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cfg = load_config(env={}, settings={"source.source": "sample", "output.trig_address": None})
    cfg.output.output_dir = str(a_file)  # only the child's start-up check can refuse this one
    env = child_environment(cfg, tmp_path / "run.toml", {**flow_env, "FACEMOMENT_OUTPUT_DIR": str(tmp_path)})
    proc = subprocess.run([PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"output directory {str(a_file)!r} is a file" in proc.stderr
