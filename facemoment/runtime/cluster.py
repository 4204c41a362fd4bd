"""What the Bytewax run around this process looks like: workers and process index.

`python -m bytewax.run` (and `python -m bytewax.testing -p N`, which starts
`bytewax.run` processes) takes `-w`, `-i` and `-a` from its command line or from the
BYTEWAX_* environment variables; the dataflow module is imported inside that process,
so it can read the same values to split each stream into one share per worker.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Tuple


def _bytewax_run_args(argv: Optional[List[str]] = None) -> Optional[List[str]]:
    argv = sys.argv if argv is None else argv
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return None
    return argv[1:]


def inside_bytewax_run(argv: Optional[List[str]] = None) -> bool:
    """Whether this process is a `python -m bytewax.run` process."""
    return _bytewax_run_args(argv) is not None


def _option(args: List[str], short: str, long: str) -> Optional[str]:
    for i, arg in enumerate(args):
        if arg in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
        if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            return arg[len(short):]
    return None


def _run_setting(argv: Optional[List[str]], env: Optional[dict], short: str, long: str, env_name: str) -> Tuple[bool, Optional[str]]:
    """(inside `bytewax.run`?, the option from its command line or environment)."""
    args = _bytewax_run_args(argv)
    if args is None:
        return False, None
    env = os.environ if env is None else env
    return True, _option(args, short, long) or env.get(env_name) or None


def total_workers(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    """Workers in the whole cluster: workers per process × processes (1 outside bytewax.run)."""
    inside, workers = _run_setting(argv, env, "-w", "--workers-per-process", "BYTEWAX_WORKERS_PER_PROCESS")
    if not inside:
        return 1
    return max(1, int(workers or "1")) * process_count(argv, env)


def process_count(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    """Processes in the cluster (1 outside bytewax.run)."""
    _, addresses = _run_setting(argv, env, "-a", "--addresses", "BYTEWAX_ADDRESSES")
    return len([a for a in (addresses or "").split(";") if a.strip()]) or 1


def process_index(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    return int(_run_setting(argv, env, "-i", "--process-id", "BYTEWAX_PROCESS_ID")[1] or "0")


def recovery_directory(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> Optional[str]:
    """The Bytewax recovery directory of this run, if recovery is on."""
    return _run_setting(argv, env, "-r", "--recovery-directory", "BYTEWAX_RECOVERY_DIRECTORY")[1]
