"""What the live sync panel costs the dataflow: the same run with the panel off and on.

    .venv/bin/python bench/sync_view_cost.py [--rounds 3]

Runs `facemoment process sample` (trace verbose, the panel's richest input) in
alternating rounds with `FACEMOMENT__OUTPUT__SYNC_VIEW` false and true, and prints the
median wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(sync_view: bool, out: Path) -> float:
    env = dict(os.environ)
    env["FACEMOMENT__OUTPUT__SYNC_VIEW"] = "true" if sync_view else "false"
    env["FACEMOMENT__OUTPUT__CLIPS"] = "false"
    cmd = [sys.executable, "-m", "facemoment", "process", "sample", "--trace", "verbose",
           "--output-dir", str(out), "--preset", "batch"]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for view in (False, True) if i % 2 == 0 else (True, False):
                times[view].append(run(view, Path(tmp) / f"{view}{i}"))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"sync panel off: {off:.2f} s (runs {[round(t, 2) for t in times[False]]})")
    print(f"sync panel on:  {on:.2f} s (runs {[round(t, 2) for t in times[True]]})")
    print(f"ratio on/off: {on / off:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
