"""docs/architecture.md's diagram lists exactly the steps the flow runs, in their order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

from dataflows.facemoment import build_flow
from facemoment.core.config import load_config

REPO = Path(__file__).resolve().parents[1]
STEP_LINE = re.compile(r"^ │ ([a-z_]+)\s")


def diagram_steps(text: str) -> List[str]:
    """The step names that start the lines of the diagram's box."""
    block = text.split("```", 2)[1]
    return [m.group(1) for line in block.splitlines() if (m := STEP_LINE.match(line))]


def flow_steps(tmp_path: Path) -> List[str]:
    """The top-level steps of the flow with every output on."""
    # A camera analysed on its detect stream brings the input of its full stream.
    cfg = load_config(env={}, presets=["batch"], settings={
        "cameras.cam0.source": "tcp://127.0.0.1:1", "cameras.cam0.detect": "tcp://127.0.0.1:2", "cameras.cam1.source": "sample",
    })
    cfg.output.output_dir = str(tmp_path)
    cfg.output.observations = True
    cfg.output.obs_address = "tcp://127.0.0.1:1"  # only built, never bound here
    flow = build_flow(cfg)
    return [step.step_name for step in flow.substeps]


def test_the_diagram_names_every_step_of_the_flow_in_order(tmp_path):
    documented = diagram_steps((REPO / "docs" / "architecture.md").read_text())
    assert documented, "no steps found in the diagram"
    assert documented == flow_steps(tmp_path)


def test_the_comparison_notices_a_missing_step():
    text = "```\n │ frames_in   x\n │ extract   y\n```\n"
    assert diagram_steps(text) == ["frames_in", "extract"]
    assert diagram_steps(text.replace(" │ extract   y\n", "")) != ["frames_in", "extract"]
