"""Configuration: defaults from the seed, presets, file and environment precedence."""

from __future__ import annotations

import pytest

from facemoment.core.config import PRESETS, Config, ConfigError, load_config


def test_defaults_are_the_seed_numbers():
    cfg = load_config(env={})
    assert cfg.align.window_ms == 100.0
    assert cfg.extract.deadline_ms == 150.0
    # Frame counts of the seed at 30 fps, as durations (docs/algorithms.md, "Rules in seconds").
    assert cfg.fusion.cooldown_sec == 2.0 and cfg.fusion.confirm_sec == 0.05  # 2 frames
    assert cfg.fusion.gate.open_duration_sec == 0.7 and cfg.fusion.gate.close_duration_sec == 0.3
    assert cfg.fusion.ewma_tau_sec == 0.3164 and cfg.fusion.spike_z == 2.0  # α 0.1 per frame
    assert (cfg.fusion.lookback_sec, cfg.fusion.lookback_default_sec, cfg.fusion.wave_window_sec) == (0.9833, 0.1, 0.4833)
    assert cfg.source.source == "tcp://127.0.0.1:5555"
    assert cfg.output.trig_address == "unix:///tmp/trig.sock"


@pytest.mark.parametrize(
    "preset, window, deadline",
    [("realtime", 100.0, 150.0), ("batch", 200.0, 0.0), ("low_latency", 50.0, 80.0)],
)
def test_sync_presets(preset, window, deadline):
    cfg = load_config(env={"FACEMOMENT_PRESET": preset})
    assert cfg.align.window_ms == window
    assert cfg.extract.deadline_ms == deadline
    assert ("gesture" in cfg.extract.extractors) is (preset != "low_latency")
    assert cfg.preset == [preset]


def test_low_latency_keeps_face_and_quality():
    assert load_config(env={}).extract.extractors == ["face", "pose", "gesture", "quality"]
    cfg = load_config(env={"FACEMOMENT__EXTRACT__EXTRACTORS": "face,quality,gesture", "FACEMOMENT_PRESET": "low_latency"})
    # Environment beats presets: an explicit extractor list is kept as given.
    assert cfg.extract.extractors == ["face", "quality", "gesture"]
    cfg = load_config(env={"FACEMOMENT_PRESET": "low_latency"}, presets=None)
    # The seed's live preview: face and quality only.
    assert cfg.extract.extractors == ["face", "quality"]


def test_sensitivity_presets():
    hi = load_config(env={"FACEMOMENT_PRESET": "high_sensitivity"}).fusion
    assert (hi.spike_z, hi.head_turn_deg_per_sec, hi.confirm_sec, hi.cooldown_sec) == (1.5, 20.0, 0.0, 1.5)
    co = load_config(env={"FACEMOMENT_PRESET": "conservative"}).fusion
    assert (co.spike_z, co.confirm_sec, co.cooldown_sec, co.gate.open_duration_sec) == (2.5, 0.0833, 3.0, 1.0)


def test_the_frame_counted_settings_of_the_previous_release_convert_at_30_fps(tmp_path):
    from facemoment.core.config.aliases import from_frames

    cfg = load_config(env={
        "FACEMOMENT__FUSION__CONSECUTIVE_FRAMES": "3",
        "FACEMOMENT__FUSION__EWMA_ALPHA": "0.1",
        "FACEMOMENT__FUSION__WAVE_WINDOW_FRAMES": "15",
        "FACEMOMENT__FUSION__LOOKBACK_OBSERVATIONS": "30",
        "FACEMOMENT__FUSION__LOOKBACK_DEFAULT": "3",
    }).fusion
    # The old defaults give the new defaults; 3 frames give the conservative preset's 0.0833.
    assert (cfg.confirm_sec, cfg.ewma_tau_sec, cfg.wave_window_sec, cfg.lookback_sec, cfg.lookback_default_sec) == (
        0.0833, 0.3164, 0.4833, 0.9833, 0.1
    )
    assert from_frames("fusion", "consecutive_frames", 2, "x") == ("fusion", "confirm_sec", 0.05)
    assert from_frames("fusion", "consecutive_frames", "1", "x") == ("fusion", "confirm_sec", 0.0)
    path = tmp_path / "fm.toml"
    path.write_text("[fusion]\nconsecutive_frames = 2\n")
    assert load_config(env={"FACEMOMENT_CONFIG": str(path)}).fusion.confirm_sec == 0.05


@pytest.mark.parametrize(
    "var, value",
    [
        ("FACEMOMENT__FUSION__CONSECUTIVE_FRAMES", "0"),
        ("FACEMOMENT__FUSION__CONSECUTIVE_FRAMES", "1.5"),
        ("FACEMOMENT__FUSION__EWMA_ALPHA", "1"),
        ("FACEMOMENT__FUSION__EWMA_ALPHA", "nan"),
        ("FACEMOMENT__FUSION__WAVE_WINDOW_FRAMES", "many"),
    ],
)
def test_a_bad_old_frame_setting_names_its_replacement(var, value):
    with pytest.raises(ConfigError, match=r"is replaced by fusion\.\w+_sec \(seconds\)"):
        load_config(env={var: value})


def test_precedence_defaults_file_env(tmp_path):
    path = tmp_path / "fm.toml"
    path.write_text(
        'preset = "batch"\n'
        "[align]\nwindow_ms = 300\n"
        "[fusion]\ncooldown_sec = 5.0\n"
        "[fusion.gate]\nopen_duration_sec = 1.2\n"
        '[output]\noutput_dir = "from_file"\n'
    )
    cfg = load_config(env={"FACEMOMENT_CONFIG": str(path)})
    assert cfg.align.window_ms == 300  # file beats its preset
    assert cfg.extract.deadline_ms == 0.0  # preset from the file applies: batch waits for every extractor
    assert cfg.source.buffer_frames == 0
    assert cfg.fusion.gate.open_duration_sec == 1.2
    assert cfg.output.output_dir == "from_file"
    cfg = load_config(
        env={
            "FACEMOMENT_CONFIG": str(path),
            "FACEMOMENT_OUTPUT_DIR": "from_env",
            "FACEMOMENT__FUSION__COOLDOWN_SEC": "7",
            "FACEMOMENT__FUSION__GATE__MAX_YAW": "30",
            "FACEMOMENT_IDLE_TIMEOUT_S": "2.5",
            "FACEMOMENT_TRIG_ADDRESS": "none",
        }
    )
    assert cfg.output.output_dir == "from_env"
    assert cfg.fusion.cooldown_sec == 7.0
    assert cfg.fusion.gate.max_yaw == 30.0
    assert cfg.source.idle_timeout_s == 2.5
    assert cfg.output.trig_address is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FACEMOMENT_PRESET": "turbo"}, "unknown preset"),
        ({"FACEMOMENT_TRACE": "loud"}, "output.trace = 'loud' is not one of off, minimal"),
        ({"FACEMOMENT__FUSION__COOLDOWN_SEC": "soon"}, "cannot use"),
        ({"FACEMOMENT__FUSION__NOPE": "1"}, "unknown setting"),
        ({"FACEMOMENT__EXTRACT__EXTRACTORS": "face,nose"}, r"extract.extractors\[1\] = 'nose' is not one of face, pose"),
        ({"FACEMOMENT_CONFIG": "/nonexistent/fm.toml"}, "does not exist"),
    ],
)
def test_bad_configuration_is_a_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_every_preset_applies_cleanly():
    for name in PRESETS:
        assert name in load_config(env={"FACEMOMENT_PRESET": name}).preset
    assert isinstance(Config(), Config)


def test_a_files_preset_string_is_comma_separated_as_the_environments(tmp_path):
    path = tmp_path / "fm.toml"
    path.write_text('preset = "realtime, lean,park"\n')
    assert load_config(env={}, path=path).preset == ["realtime", "lean", "park"]
    path.write_text('preset = "realtime,parks"\n')
    with pytest.raises(ConfigError, match="unknown preset 'parks'"):
        load_config(env={}, path=path)


@pytest.mark.parametrize(
    "var, value, setting",
    [
        ("FACEMOMENT__FUSION__COOLDOWN_SEC", "-5", "fusion.cooldown_sec"),
        ("FACEMOMENT__FUSION__COOLDOWN_SEC", "nan", "fusion.cooldown_sec"),
        ("FACEMOMENT__FUSION__PRE_SEC", "-3", "fusion.pre_sec"),
        ("FACEMOMENT__FUSION__POST_SEC", "1e12", "fusion.post_sec"),  # TRIG times past 2^64
        ("FACEMOMENT__ALIGN__WINDOW_MS", "nan", "align.window_ms"),
        ("FACEMOMENT__ALIGN__WINDOW_MS", "inf", "align.window_ms"),
        ("FACEMOMENT__ALIGN__ALLOWED_LATENESS_MS", "inf", "align.allowed_lateness_ms"),
        ("FACEMOMENT__ALIGN__ALLOWED_LATENESS_MS", "nan", "align.allowed_lateness_ms"),
        ("FACEMOMENT__OUTPUT__RING_BUFFER_SEC", "0", "output.ring_buffer_sec"),
        ("FACEMOMENT__OUTPUT__JPEG_QUALITY", "0", "output.jpeg_quality"),
        ("FACEMOMENT__SOURCE__MAX_FRAME_MB", "0", "source.max_frame_mb"),
        ("FACEMOMENT__SOURCE__MAX_TIME_JUMP_S", "-1", "source.max_time_jump_s"),
        ("FACEMOMENT__SOURCE__FPS", "0", "source.fps"),
        ("FACEMOMENT__EXTRACT__DEADLINE_MS", "-1", "extract.deadline_ms"),
        ("FACEMOMENT__FUSION__CONFIRM_SEC", "-0.1", "fusion.confirm_sec"),
        ("FACEMOMENT__FUSION__CONFIRM_SEC", "inf", "fusion.confirm_sec"),
        ("FACEMOMENT__FUSION__EWMA_TAU_SEC", "0", "fusion.ewma_tau_sec"),
        ("FACEMOMENT__FUSION__EWMA_TAU_SEC", "nan", "fusion.ewma_tau_sec"),
        ("FACEMOMENT__FUSION__LOOKBACK_SEC", "0", "fusion.lookback_sec"),
        ("FACEMOMENT__FUSION__LOOKBACK_DEFAULT_SEC", "-1", "fusion.lookback_default_sec"),
        ("FACEMOMENT__FUSION__WAVE_WINDOW_SEC", "0", "fusion.wave_window_sec"),
        ("FACEMOMENT__FUSION__WAVE_WINDOW_SEC", "inf", "fusion.wave_window_sec"),
    ],
)
def test_absurd_settings_are_rejected_naming_the_setting_and_its_range(var, value, setting):
    with pytest.raises(ConfigError, match=rf"{setting} = .* is out of range [\[(]"):
        load_config(env={var: value})


def test_every_setting_declares_its_rule_and_admits_its_default():
    import dataclasses

    from facemoment.core.config import validate

    def fields(section):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                yield from fields(value)
            else:
                yield f

    from facemoment.core.config.sections import TABLES

    cfg = Config()
    for f in fields(cfg):
        if f.name != "preset" and f.name not in TABLES:
            assert "rule" in f.metadata, f.name  # declared with setting(...), nowhere else
    for entry in TABLES.values():  # a table's entries: sections declared the same way
        for f in fields(entry()):
            assert "rule" in f.metadata, f.name
    validate(cfg)  # the defaults pass
    for name in PRESETS:
        validate(load_config(env={"FACEMOMENT_PRESET": name}))


def test_every_known_extractor_has_a_builder_and_nothing_else_does():
    from facemoment.core.config import KNOWN_EXTRACTORS, Config, ConfigError
    from operators.extraction.registry import build_extractor

    cfg = Config()
    assert cfg.extract.extractors == list(KNOWN_EXTRACTORS)
    for name in KNOWN_EXTRACTORS:
        extractor = build_extractor(name, cfg)  # builds; models load later, in load()
        assert hasattr(extractor, "extract"), name
        close = getattr(extractor, "close", None)
        if close is not None:
            close()
    with pytest.raises(ConfigError, match="face, pose, gesture, quality"):
        build_extractor("nose", cfg)


def test_the_configuration_modules_import_one_way():
    """Each module of the package imports only those before it in this order; no late import."""
    import ast
    from pathlib import Path

    import facemoment.core.config as package

    order = ["errors", "rules", "sections", "rates", "cameras", "floors", "validation", "aliases", "assign", "presets", "loading", "writing"]
    folder = Path(package.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(order)
    for index, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facemoment.core.config"):
                imported = node.module.split(".")[3] if node.module.count(".") >= 3 else "__init__"
                assert imported in order[:index], f"{name} imports {node.module}"
                assert node in tree.body, f"{name} imports {node.module} late"
                assert not any(alias.name.startswith("_") for alias in node.names), f"{name}: private {node.module}"
