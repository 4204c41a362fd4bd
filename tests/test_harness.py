"""The test harness itself: a flow that outlives its timeout takes what it started with it."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import kill_tree, wait_until


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_a_launcher_kills_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    # A launcher whose child would outlive it, as `bytewax.testing -p N`'s do.
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(300)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=30)
    child = int(pid_file.read_text())
    assert _alive(child)
    kill_tree(launcher)
    assert launcher.returncode is not None
    assert wait_until(lambda: not _alive(child), timeout=30)
    assert os.getpgid(os.getpid()) != launcher.pid  # the harness's own group is untouched
