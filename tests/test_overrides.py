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
