"""Named partial configurations, applied over the defaults and under everything else."""

from __future__ import annotations

from typing import Any, Dict

from facemoment.core.config.assign import set_value
from facemoment.core.config.errors import ConfigError
from facemoment.core.config.sections import Config

# Presets as partial configurations (section -> field -> value).
PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "realtime": {
        "align": {"window_ms": 100.0},
        "extract": {"deadline_ms": 150.0},
    },
    # The seed's batch setting allows 1 s per frame; a batch run never drops, so it
    # waits for every extractor instead (deadline off) and never sheds frames.
    "batch": {
        "align": {"window_ms": 200.0, "allowed_lateness_ms": 5000.0},
        # Full fidelity: every extractor on every frame.
        "extract": {"deadline_ms": 0.0, "every": []},
        "source": {"buffer_frames": 0},
    },
    "low_latency": {
        "align": {"window_ms": 50.0, "allowed_lateness_ms": 80.0},
        "extract": {"deadline_ms": 80.0},
        # The seed's live preview runs face and quality only.
        "_remove_extractors": {"names": ["gesture", "pose"]},
    },
    # Declared rates for a live stream on few cores: pose on even frames, hands on odd
    # ones, so every frame carries one of the two heavy models, never both (waves and
    # gestures can fire a frame or few later; docs/algorithms.md).
    "lean": {
        "extract": {"every": ["pose=2", "gesture=2@1"]},
    },
    # Several cameras on one box: the CPU budget on (empty cameras only look for
    # someone; under load, rates drop to their floors before a frame goes unanalysed).
    # The budget keeps each camera's extraction within its deadline, so a camera whose
    # items stop for half a second has stopped sending: its last window closes then,
    # and a moment on its last frames is decided within a second.
    # Each camera with riders within 0.4 cores of extraction: with what every camera's
    # frames cost before a model runs, under half a core.
    "park": {
        # Many cameras, mostly empty: an empty camera looks for a rider at 5 fps while
        # something moves (found within 0.2 s), as NVRs analyse their detect streams.
        "budget": {"mode": "on", "camera_cores": 0.4, "idle_fps": 5.0},
        "align": {"idle_flush_ms": 500.0},
    },
    "high_sensitivity": {
        "fusion": {
            "spike_z": 1.5,
            "head_turn_deg_per_sec": 20.0,
            "confirm_sec": 0.0,
            "cooldown_sec": 1.5,
        },
    },
    "conservative": {
        "fusion": {"spike_z": 2.5, "confirm_sec": 0.0833, "cooldown_sec": 3.0},
        "fusion.gate": {"open_duration_sec": 1.0},
    },
}


def apply_preset(cfg: Config, name: str) -> None:
    name = name.strip()
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name[:80]!r}; known: {', '.join(sorted(PRESETS))}")
    for section, values in PRESETS[name].items():
        if section == "_remove_extractors":
            cfg.extract.extractors = [e for e in cfg.extract.extractors if e not in values["names"]]
            continue
        for key, value in values.items():
            set_value(cfg, section, key, value, f"preset {name}")
    if name not in cfg.preset:
        cfg.preset.append(name)
