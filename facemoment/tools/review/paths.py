"""Which files the review server may send: regular files under the output directory, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class PathRefused(Exception):
    """The requested path leaves the served directory (`..`, an absolute path, a symlink out)."""


def served_file(root: Path, relative: str) -> Optional[Path]:
    """The file `relative` names under `root`, resolved; None when there is no such file.

    Raises PathRefused when the resolved path is not inside `root`: every component,
    symlinks included, is resolved before the check, so a link pointing out is refused
    just as `../x` or `/etc/passwd` is.
    """
    base = root.resolve()
    if "\x00" in relative:
        raise PathRefused(relative)
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise PathRefused(relative)
    target = (base / candidate).resolve()
    if target != base and base not in target.parents:
        raise PathRefused(relative)
    if not target.is_file():
        return None
    # Files a writer has not finished yet (`.name.part`) are not part of the run.
    if target.name.startswith("."):
        return None
    return target
