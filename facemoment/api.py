"""The Python API: `from facemoment.api import MomentDetector` (facemoment/tools/api.py)."""

from facemoment.tools.api import MomentDetector, TriggerCallback

__all__ = ["MomentDetector", "TriggerCallback"]
