"""What the Bytewax run around this process looks like: workers and process index.

`python -m bytewax.run` (and `python -m bytewax.testing -p N`, which starts
`bytewax.run` processes) takes `-w`, `-i` and `-a` from its command line or from the
BYTEWAX_* environment variables; the dataflow module is imported inside that process,
so it can read the same values to split each stream into one share per worker.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional


def _bytewax_run_args(argv: Optional[List[str]] = None) -> Optional[List[str]]:
    argv = sys.argv if argv is None else argv
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return None
    return argv[1:]


def _option(args: List[str], short: str, long: str) -> Optional[str]:
    for i, arg in enumerate(args):
        if arg in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
        if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            return arg[len(short):]
    return None


def process_count(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    """Processes in the cluster (1 outside bytewax.run)."""
    env = os.environ if env is None else env
    args = _bytewax_run_args(argv)
    if args is None:
        return 1
    addresses = _option(args, "-a", "--addresses") or env.get("BYTEWAX_ADDRESSES") or ""
    return len([a for a in addresses.split(";") if a.strip()]) or 1


def total_workers(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    """Workers in the whole cluster: workers per process × processes (1 outside bytewax.run)."""
    env = os.environ if env is None else env
    args = _bytewax_run_args(argv)
    if args is None:
        return 1
    workers = _option(args, "-w", "--workers-per-process") or env.get("BYTEWAX_WORKERS_PER_PROCESS") or "1"
    return max(1, int(workers)) * process_count(argv, env)


def process_index(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> int:
    env = os.environ if env is None else env
    args = _bytewax_run_args(argv)
    if args is None:
        return 0
    value = _option(args, "-i", "--process-id") or env.get("BYTEWAX_PROCESS_ID") or "0"
    return int(value)


def recovery_directory(argv: Optional[List[str]] = None, env: Optional[dict] = None) -> Optional[str]:
    """The Bytewax recovery directory of this run, if recovery is on."""
    env = os.environ if env is None else env
    args = _bytewax_run_args(argv)
    if args is None:
        return None
    return _option(args, "-r", "--recovery-directory") or env.get("BYTEWAX_RECOVERY_DIRECTORY") or None
