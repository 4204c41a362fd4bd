import argparse

from facemoment.tools.overrides import option_overrides


def test_given_options_become_overrides_and_left_out_ones_do_not() -> None:
    args = argparse.Namespace(preset="batch", output_dir=None, stream_id="", idle_timeout=0.0)
    got = option_overrides(
        args,
        preset="FACEMOMENT_PRESET",
        output_dir="FACEMOMENT_OUTPUT_DIR",
        stream_id="FACEMOMENT_STREAM_ID",
        idle_timeout="FACEMOMENT_IDLE_TIMEOUT_S",
    )
    # A zero timeout is a value the user gave; None and "" are options left out.
    assert got == {"FACEMOMENT_PRESET": "batch", "FACEMOMENT_IDLE_TIMEOUT_S": "0.0"}


def test_the_demo_runs_lean_unless_told_otherwise() -> None:
    from facemoment.core.config import load_config
    from facemoment.tools.cli import build_parser, demo_preset

    assert demo_preset(None, {}) == "lean"
    assert demo_preset(None, {"FACEMOMENT_PRESET": "batch"}) == "batch"
    assert demo_preset("", {"FACEMOMENT_PRESET": "batch"}) == ""  # full fidelity on request
    assert demo_preset("realtime,lean", {}) == "realtime,lean"
    assert build_parser().parse_args(["demo"]).preset is None
    assert load_config(env={"FACEMOMENT_PRESET": demo_preset(None, {})}).extract.every == ["pose=2", "gesture=2@1"]
