"""Every setting is checked from its one declaration: type, range, choices, grammar, length."""

from __future__ import annotations

import math

import pytest

from facemoment.core.config import Config, ConfigError, load_config, to_toml, validate
from facemoment.formats.wire import format_trig, parse_trig


@pytest.mark.parametrize(
    "var, value, setting",
    [
        ("FACEMOMENT__FUSION__GATE__MAX_YAW", "nan", "fusion.gate.max_yaw"),
        ("FACEMOMENT__FUSION__HEAD_TURN_DEG_PER_SEC", "inf", "fusion.head_turn_deg_per_sec"),
        ("FACEMOMENT__QUALITY__MIN_BLUR", "-inf", "quality.min_blur"),
        ("FACEMOMENT__FUSION__SPIKE_MIN_STD", "nan", "fusion.spike_min_std"),
        ("FACEMOMENT__OUTPUT__OBS_SUBSCRIBER_WAIT_S", "inf", "output.obs_subscriber_wait_s"),
        ("FACEMOMENT_IDLE_TIMEOUT_S", "nan", "source.idle_timeout_s"),
    ],
)
def test_nan_and_infinities_are_refused_in_every_numeric_setting(var, value, setting):
    with pytest.raises(ConfigError, match=rf"^{setting} = -?(nan|inf) is out of range .*finite number"):
        load_config(env={var: value})


def test_nan_and_inf_from_a_toml_file_are_refused_too(tmp_path):
    path = tmp_path / "fm.toml"
    path.write_text("[fusion.gate]\nmax_yaw = nan\n")
    with pytest.raises(ConfigError, match="fusion.gate.max_yaw = nan"):
        load_config(env={}, path=path)
    path.write_text("[quality]\nmin_blur = -inf\n")
    with pytest.raises(ConfigError, match="quality.min_blur = -inf"):
        load_config(env={}, path=path)


def test_a_setting_set_on_the_dataclass_is_checked_as_well():
    cfg = Config()
    cfg.fusion.gate.max_yaw = math.nan
    with pytest.raises(ConfigError, match="fusion.gate.max_yaw"):
        validate(cfg)


@pytest.mark.parametrize("label", ["my clip", "a=b", "tab\there", "caf\u00e9", ""])
def test_a_label_the_trig_line_cannot_carry_is_refused_at_load(label):
    with pytest.raises(ConfigError, match="fusion.label"):
        load_config(env={}, settings={"fusion.label": label})


def test_a_label_longer_than_the_wire_bound_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        load_config(env={"FACEMOMENT__FUSION__LABEL": "x" * 10_000_000})
    assert "fusion.label is 10000000 characters long; at most 128" in str(err.value)
    assert len(str(err.value)) < 200


def test_every_label_the_rule_admits_goes_out_and_comes_back_as_a_trig_line():
    for label in ["highlight", "x" * 128, "clip-1_A.b", "!#$%&'()*+,-./:;<>?@[]^_`{|}~"]:
        cfg = load_config(env={}, settings={"fusion.label": label})
        line = format_trig(cfg.fusion.label, 1, 2, 1, 0.5, "head_turn")
        assert parse_trig(line)["label"] == label


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"output.trig_topic": "a b"}, "output.trig_topic"),
        ({"output.obs_publisher": "host 1"}, "output.obs_publisher"),
        ({"output.output_dir": "out\nput"}, "control character"),
        ({"extract.every": ["pose=2" * 20]}, r"extract.every\[0\] is 120 characters long"),
        ({"fusion.reasons": ["sneeze"]}, r"fusion.reasons\[0\] = 'sneeze' is not one of"),
        ({"source.extra": ["cam1"]}, "STREAM_ID=SOURCE"),
        ({"output.trig_timing": "later"}, "is not one of auto, end, event"),
    ],
)
def test_string_settings_follow_their_grammar(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, settings=settings)


def test_a_whole_number_setting_refuses_a_fraction_from_a_file(tmp_path):
    path = tmp_path / "fm.toml"
    path.write_text("[fusion.gate]\nmin_faces = 2.5\n")
    with pytest.raises(ConfigError, match="fusion.gate.min_faces: cannot use 2.5 as int"):
        load_config(env={}, path=path)


def test_a_configuration_written_as_toml_loads_back_equal(tmp_path):
    cfg = load_config(
        env={"FACEMOMENT_PRESET": "lean,low_latency", "FACEMOMENT_TRIG_ADDRESS": "none"},
        settings={"fusion.label": 'q"uote\\d', "source.fps": 12.5, "output.metrics_port": 9100},
    )
    path = tmp_path / "run.toml"
    path.write_text(to_toml(cfg))
    again = load_config(env={}, path=path)
    assert again == cfg
    assert again.output.trig_address is None and again.preset == ["lean", "low_latency"]
