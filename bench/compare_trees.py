"""The live latency run (5.) of two source trees, or camera layouts (10.), interleaved on this machine.

    .venv/bin/python bench/compare_trees.py BASELINE_TREE [--rounds 5] [--seconds 30]
    .venv/bin/python bench/compare_trees.py BASELINE_TREE --cameras "1 empty camera,3 empty cameras"

BASELINE_TREE is a checkout of another commit (``git worktree add /tmp/base COMMIT``).
Each round runs this tree's and the baseline's latency measurement one after the
other (the order alternates), so slow and fast spells of the machine fall on both;
each run is a fresh process started in its tree, the benchmark code included. Prints
a table per run and the mean and spread of each tree's figures, and writes them as
JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

HERE = Path(__file__).resolve().parents[1]

# Run inside a tree: its own bench package measures its own dataflow.
RUN_ONE = r"""
import dataclasses, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, ".")
from bench.plan import Plan, Progress
from bench.workloads.inputs import prepare_inputs
from bench.workloads.live import measure_latency
plan = dataclasses.replace(Plan.for_mode(True), live_preset=sys.argv[2], latency_s=float(sys.argv[1]))
with tempfile.TemporaryDirectory() as tmp:
    log = Progress()
    r = measure_latency(prepare_inputs(plan, Path(tmp), log), plan, Path(tmp), log)
acc = r["accounting"]
print("RESULT " + json.dumps({"complete_fps": r["complete_fps"], "fused_fps": r["fused_fps"],
      "timeouts": sum(acc["timeouts_by_extractor"].values()), "shed": sum(acc["dropped_by_reason"].values())}))
"""

FIGURES = ("complete_fps", "fused_fps", "timeouts", "shed")

# Camera layouts in a tree: the flow process's cores per layout (triggers are not
# compared, so no offline reference is run), and with "1 empty camera" and "3 empty
# cameras" what each further empty camera adds.
RUN_CAMERAS = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, ".")
from bench.plan import Progress
from bench.workloads.cameras import CAMERA_FRAMES, DEFAULT_PRESET, LAYOUTS, cameras_of, run_layout, summarize_layout
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for name in sys.argv[1].split(","):
        cams = cameras_of(LAYOUTS[name], CAMERA_FRAMES)
        raw = run_layout(name, cams, DEFAULT_PRESET, Path(tmp), Progress(), clips=name.endswith("1920x1080"))
        summary = summarize_layout(name, cams, raw, {c.kind: [] for c in cams}, DEFAULT_PRESET)
        out[name] = summary["process_cpu_cores"]
if "1 empty camera" in out and "3 empty cameras" in out:
    out["each further empty camera"] = round((out["3 empty cameras"] - out["1 empty camera"]) / 2, 4)
print("RESULT " + json.dumps(out))
"""


def run_one(tree: Path, seconds: float, preset: str, cameras: str = "") -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    args = [RUN_CAMERAS, cameras] if cameras else [RUN_ONE, str(seconds), preset]
    done = subprocess.run([sys.executable, "-c", *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=seconds + 600 * (1 + cameras.count(",")))
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"the run in {tree} printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def summary(runs: List[Dict[str, Any]], figures: Sequence[str] = FIGURES) -> Dict[str, Dict[str, float]]:
    return {k: {"mean": round(statistics.mean(r[k] for r in runs), 4),
                "min": min(r[k] for r in runs), "max": max(r[k] for r in runs)} for k in figures}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="a checkout of the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0, help="stream length of each run")
    parser.add_argument("--preset", default="realtime,lean")
    parser.add_argument("--out", type=Path, help="write the runs and their summary as JSON here")
    parser.add_argument("--cameras", default="", help="compare these camera layouts of section 10 (comma-separated) "
                        "instead of the latency run: the flow process's cores per layout")
    args = parser.parse_args(argv)
    if args.cameras:
        if str(HERE) not in sys.path:  # run as a script: the bench package is this tree's
            sys.path.insert(0, str(HERE))
        from bench.workloads.cameras import LAYOUTS

        unknown = [x for x in args.cameras.split(",") if x not in LAYOUTS]
        if unknown:
            parser.error(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    trees = {"this tree": HERE, "baseline": args.baseline.resolve()}
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in trees}
    for round_no in range(args.rounds):
        order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
        for name in order:
            result = run_one(trees[name], args.seconds, args.preset, args.cameras)
            runs[name].append(result)
            print(f"round {round_no + 1} {name:9s} " + "  ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    figures = list(runs["this tree"][0]) if args.cameras else FIGURES
    result = {"preset": args.preset, "seconds": args.seconds, "cameras": args.cameras,
              "trees": {k: str(v) for k, v in trees.items()},
              "runs": runs, "summary": {name: summary(r, figures) for name, r in runs.items()}}
    for name, means in result["summary"].items():
        print(f"{name:9s} " + "  ".join(f"{k} {v['mean']} ({v['min']}-{v['max']})" for k, v in means.items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
