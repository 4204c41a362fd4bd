"""Command-line options as FACEMOMENT_* environment overrides, the way every command passes them on."""

from __future__ import annotations

import argparse
from typing import Dict


def option_overrides(args: argparse.Namespace, **variables: str) -> Dict[str, str]:
    """`{VARIABLE: str(value)}` for every `option=VARIABLE` the user gave.

    An option left out (None) or given empty sets nothing, so the environment and
    the configuration file keep their say.
    """
    overrides: Dict[str, str] = {}
    for option, variable in variables.items():
        value = getattr(args, option)
        if value is not None and value != "":
            overrides[variable] = str(value)
    return overrides
