"""One typed configuration for the whole dataflow.

Precedence, lowest first:

1. the defaults below (the seed design's numbers),
2. the presets named in ``FACEMOMENT_PRESET`` (comma separated, applied in order),
3. a TOML file named by ``FACEMOMENT_CONFIG`` (its own ``preset = ...`` key counts as 2),
4. environment variables: the public names in ``ENV_NAMES`` and, for every other
   field, ``FACEMOMENT__<SECTION>__<FIELD>`` (e.g. ``FACEMOMENT__FUSION__COOLDOWN_SEC=3``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, get_args, get_origin, get_type_hints

from facemoment.core.addresses import AddressError, parse_address
from facemoment.core.records import LEVEL_NAMES


class ConfigError(ValueError):
    """A configuration value, file or preset that cannot be used."""


# Every extractor the registry (operators/extraction/registry.py) can build, in the default order.
KNOWN_EXTRACTORS = ("face", "pose", "gesture", "quality")


@dataclass
class SourceConfig:
    # tcp://host:port (visualbase publisher), a video file, a recording, a camera
    # index, or "sample" (the built-in sample video).
    source: str = "tcp://127.0.0.1:5555"
    stream_id: str = "cam0"
    # Further streams as "stream_id=source" pairs, for several cameras in one flow.
    extra: List[str] = field(default_factory=list)
    # Recordings: replay paced at the recorded speed instead of as fast as possible.
    realtime: bool = False
    # Partitions per stream, split by frame id, so every worker extracts its own
    # frames without receiving pixels from another (0: one per worker of the run).
    shares: int = 0
    # Sample file sources at this rate (None: every frame).
    fps: Optional[float] = None
    # ZMQ sources: after frames have started, end after this long without one.
    idle_timeout_s: Optional[float] = None
    # ZMQ sources: buffered frames between the socket and extraction.
    buffer_frames: int = 8
    # skip_oldest | skip_intermediate | keyframe_only
    drop_strategy: str = "skip_oldest"
    keyframe_interval: int = 3
    progress: bool = False
    # ZMQ sources: the largest frame message taken (a 4K BGR frame is 24.9 MB), and
    # the bytes of pixels the buffer may hold whatever its frame count.
    max_frame_mb: float = 32.0
    buffer_max_mb: float = 256.0
    # ZMQ sources: a t_src_ns more than this far ahead of the stream (beyond the
    # time that passed) is rejected and counted (0: no check).
    max_time_jump_s: float = 60.0
    # Observations from OBS publishers instead of frames (extractors run elsewhere):
    # "[stream_id=]tcp://host:port" entries, several per stream allowed.
    obs_inputs: List[str] = field(default_factory=list)


@dataclass
class ExtractConfig:
    extractors: List[str] = field(default_factory=lambda: list(KNOWN_EXTRACTORS))
    # mediapipe (bundled, offline) | insightface (an InsightFace model pack)
    face_backend: str = "mediapipe"
    insightface_pack: str = "buffalo_l"
    # Directory holding model packs (default: $INSIGHTFACE_HOME/models or ~/.insightface/models).
    insightface_root: Optional[str] = None
    # mediapipe (bundled, offline) | yolo (YOLOv8-pose weights in pose_model)
    pose_backend: str = "mediapipe"
    pose_model: Optional[str] = None
    # An HSEmotion-style ONNX classifier; replaces the geometric expression signal.
    expression_model: Optional[str] = None
    prefer_gpu: bool = True
    max_faces: int = 2
    min_detection_confidence: float = 0.5
    # Per-frame extractor deadline in ms (the orchestrator's timeout); 0 disables.
    deadline_ms: float = 150.0
    # Executor threads per MediaPipe graph (0: MediaPipe's default, one per core).
    # Extractors already run in parallel on their own lanes (docs/algorithms.md).
    graph_threads: int = 1
    # Declared rates as "name=N" or "name=N@K": the extractor runs on frames whose
    # frame_id % N == 0 (or == K) and fusion carries its last result over the N-1 frames between (traced as
    # frame_carry). Unlisted extractors run on every frame (docs/algorithms.md).
    every: List[str] = field(default_factory=list)
    # Pose and hands wait for the frame's face result and run only when a face was
    # found: no trigger can fire without one (docs/algorithms.md, "Cascade").
    cascade: bool = False


@dataclass
class QualityConfig:
    min_blur: float = 100.0
    min_brightness: float = 50.0
    max_brightness: float = 200.0
    min_contrast: float = 40.0


@dataclass
class AlignConfig:
    window_ms: float = 100.0
    # How far (event time) an observation may be behind the newest one and still
    # count in its window.
    allowed_lateness_ms: float = 200.0
    # Live streams: after this long without a newer observation, windows close on
    # system time (a paused camera's last moments are not held back).
    idle_flush_ms: float = 1000.0


@dataclass
class GateConfig:
    open_duration_sec: float = 0.7
    close_duration_sec: float = 0.3
    min_faces: int = 1
    max_faces: int = 2
    min_confidence: float = 0.7
    max_yaw: float = 25.0
    max_pitch: float = 20.0
    min_area_ratio: float = 0.01
    max_center_distance: float = 0.4
    require_quality: bool = True


@dataclass
class FusionConfig:
    cooldown_sec: float = 2.0
    # Rules are set in event time, so every analysis rate fires alike (docs/algorithms.md,
    # "Rules in seconds"); the comments give the frame counts these were at 30 fps.
    # The same reason must win for this long; each frame counts from the one before (2 frames).
    confirm_sec: float = 0.05
    pre_sec: float = 2.0
    post_sec: float = 2.0
    label: str = "highlight"
    # Time constant of the expression EWMA (alpha 0.1 per frame).
    ewma_tau_sec: float = 0.3164
    ewma_initial_var: float = 0.01
    spike_z: float = 2.0
    spike_min_expression: float = 0.5
    spike_min_std: float = 0.05
    head_turn_deg_per_sec: float = 30.0
    head_turn_max_dt_sec: float = 0.5
    camera_gaze_threshold: float = 0.5
    camera_gaze_yaw_deg: float = 10.0
    camera_gaze_pitch_deg: float = 15.0
    passenger_yaw_deg: float = 15.0
    min_gesture_confidence: float = 0.5
    # History searched for the event start (30 frames), and how far back the start is
    # put when no onset is found (3 frames back).
    lookback_sec: float = 0.9833
    lookback_default_sec: float = 0.1
    # Wrist samples kept per wrist (15 samples).
    wave_window_sec: float = 0.4833
    wave_min_samples: int = 5
    wave_min_span_sec: float = 0.2
    wave_min_amplitude: float = 0.05
    wave_min_hz: float = 1.5
    wave_max_hz: float = 5.0
    reasons: List[str] = field(
        default_factory=lambda: [
            "expression_spike",
            "head_turn",
            "hand_wave",
            "camera_gaze",
            "passenger_interaction",
            "gesture_vsign",
            "gesture_thumbsup",
            "gesture_ok",
            "gesture_openpalm",
        ]
    )
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class OutputConfig:
    output_dir: str = "out"
    # tcp://host:port or ipc:///path (ZMQ PUB, bound here) or unix:///path (a
    # datagram socket visualbase's ingest binds).
    trig_address: Optional[str] = "tcp://127.0.0.1:5556"
    trig_topic: str = "msg"
    # When TRIG goes out: "end" once the stream reached the clip's end (what a live
    # visualbase ring buffer needs), "event" as soon as fusion decides; "auto": end
    # for live sources, event otherwise.
    trig_timing: str = "auto"
    # Publish every observation as OBS text on this ZMQ address (off when unset).
    obs_address: Optional[str] = None
    # This publisher's name in its OBS messages (default: host name and process id).
    obs_publisher: str = ""
    # Before its first OBS, how long the publisher waits for a subscriber to join.
    obs_subscriber_wait_s: float = 1.0
    clips: bool = True
    ring_buffer_sec: float = 120.0
    ring_buffer_max_mb: float = 512.0
    jpeg_quality: int = 90
    # off | minimal | normal | verbose
    trace: str = "normal"
    # Where trace.jsonl goes (default: inside output_dir).
    trace_path: Optional[str] = None
    observations: bool = False
    summary: bool = True
    # Keep (and de-duplicate against) outputs already in output_dir instead of
    # starting them anew; unset: keep them when Bytewax recovery is on.
    keep_existing: Optional[bool] = None
    # Prometheus metrics on this port (off when unset).
    metrics_port: Optional[int] = None
    metrics_addr: str = "127.0.0.1"
    # The live sync-status panel on the terminal (verbose diagnostics; off by default).
    sync_view: bool = False
    # Written (atomically, "{pid}" replaced) once the process's models are ready.
    ready_file: Optional[str] = None
    # Show the models' native INFO/WARNING lines (MediaPipe, absl, TF Lite); `--verbose`.
    native_logs: bool = False


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    preset: List[str] = field(default_factory=list)


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

# The public environment names scripts rely on.
ENV_NAMES: Dict[str, Tuple[str, str]] = {
    "FACEMOMENT_SOURCE": ("source", "source"),
    "FACEMOMENT_STREAM_ID": ("source", "stream_id"),
    "FACEMOMENT_IDLE_TIMEOUT_S": ("source", "idle_timeout_s"),
    "FACEMOMENT_TRIG_ADDRESS": ("output", "trig_address"),
    "FACEMOMENT_OBS_ADDRESS": ("output", "obs_address"),
    "FACEMOMENT_OBS_INPUTS": ("source", "obs_inputs"),
    "FACEMOMENT_TRIG_TIMING": ("output", "trig_timing"),
    "FACEMOMENT_OUTPUT_DIR": ("output", "output_dir"),
    "FACEMOMENT_TRACE": ("output", "trace"),
    "FACEMOMENT_READY_FILE": ("output", "ready_file"),
}

DROP_STRATEGIES = ("skip_oldest", "skip_intermediate", "keyframe_only")


def _section(cfg: Config, path: str) -> Any:
    obj: Any = cfg
    for part in path.split("."):
        if not hasattr(obj, part) or not dataclasses.is_dataclass(getattr(obj, part)):
            raise ConfigError(f"unknown configuration section {path!r}")
        obj = getattr(obj, part)
    return obj


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, where)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin in (list, List):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return [_coerce(v, args[0], where) for v in value]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from exc
    return value


def _set(cfg: Config, section: str, name: str, value: Any, where: str) -> None:
    if (section, name) in FRAME_ALIASES:  # a frame-counted setting of the previous release
        section, name, value = from_frames(section, name, value, where)
    target = _section(cfg, section)
    hints = get_type_hints(type(target))
    if name not in hints or dataclasses.is_dataclass(getattr(target, name)):
        raise ConfigError(f"{where}: unknown setting {section}.{name}")
    setattr(target, name, _coerce(value, hints[name], where))


from facemoment.core.config_ranges import RANGES, check_ranges  # noqa: E402  (needs the sections above)
from facemoment.core.config_aliases import FRAME_ALIASES, from_frames  # noqa: E402


def apply_preset(cfg: Config, name: str) -> None:
    name = name.strip()
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    for section, values in PRESETS[name].items():
        if section == "_remove_extractors":
            cfg.extract.extractors = [e for e in cfg.extract.extractors if e not in values["names"]]
            continue
        for key, value in values.items():
            _set(cfg, section, key, value, f"preset {name}")
    if name not in cfg.preset:
        cfg.preset.append(name)


def _apply_mapping(cfg: Config, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            _apply_mapping(cfg, value, where, path)
            continue
        if not prefix:
            if key == "preset":
                continue  # handled before the rest of the file
            raise ConfigError(f"{where}: setting {key!r} must sit inside a [section]")
        _set(cfg, prefix, key, value, where)


def validate(cfg: Config) -> Config:
    check_ranges(cfg)
    if cfg.output.trace not in LEVEL_NAMES:
        raise ConfigError(f"trace level {cfg.output.trace!r} is not one of {', '.join(LEVEL_NAMES)}")
    if cfg.source.drop_strategy not in DROP_STRATEGIES:
        raise ConfigError(f"drop strategy {cfg.source.drop_strategy!r} is not one of {', '.join(DROP_STRATEGIES)}")
    unknown = [e for e in cfg.extract.extractors if e not in KNOWN_EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown extractors {unknown}; known: {', '.join(KNOWN_EXTRACTORS)}")
    if cfg.extract.face_backend not in ("mediapipe", "insightface"):
        raise ConfigError(f"face backend {cfg.extract.face_backend!r} is not one of mediapipe, insightface")
    if cfg.extract.pose_backend not in ("mediapipe", "yolo"):
        raise ConfigError(f"pose backend {cfg.extract.pose_backend!r} is not one of mediapipe, yolo")
    if cfg.extract.pose_backend == "yolo" and not cfg.extract.pose_model:
        raise ConfigError("pose backend yolo needs extract.pose_model (FACEMOMENT__EXTRACT__POSE_MODEL=/path/yolov8n-pose.onnx)")
    if cfg.align.window_ms <= 0:
        raise ConfigError("align.window_ms must be positive")
    if cfg.align.allowed_lateness_ms < 0:
        raise ConfigError("align.allowed_lateness_ms must not be negative")
    from facemoment.core.rates import extractor_rates  # rates build on this module

    extractor_rates(cfg.extract)  # raises on a malformed entry
    if cfg.extract.graph_threads < 0:
        raise ConfigError("extract.graph_threads must not be negative")
    _validate_outputs(cfg)
    return cfg


TRIG_TIMINGS = ("auto", "end", "event")


def obs_input(entry: str, default_stream: str) -> Tuple[str, str]:
    """``"[stream_id=]address"`` -> (stream_id, address)."""
    stream_id, sep, address = entry.partition("=")
    if not sep or "://" in stream_id:
        return default_stream, entry.strip()
    return stream_id.strip() or default_stream, address.strip()


def _validate_outputs(cfg: Config) -> None:
    if cfg.output.trig_timing not in TRIG_TIMINGS:
        raise ConfigError(f"output.trig_timing {cfg.output.trig_timing!r} is not one of {', '.join(TRIG_TIMINGS)}")
    try:
        if cfg.output.trig_address:
            parse_address(cfg.output.trig_address, "TRIG", unix=True)
        if cfg.output.obs_address:
            parse_address(cfg.output.obs_address, "OBS")
        for entry in cfg.source.obs_inputs:
            parse_address(obs_input(entry, cfg.source.stream_id)[1], "OBS publisher")
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc


def load_config(
    env: Optional[Mapping[str, str]] = None,
    path: Optional[str | os.PathLike[str]] = None,
    presets: Optional[List[str]] = None,
) -> Config:
    """Build the configuration from defaults, presets, a TOML file and the environment."""
    env = os.environ if env is None else env
    cfg = Config()
    file_data: Dict[str, Any] = {}
    path = path if path is not None else env.get("FACEMOMENT_CONFIG") or None
    if path:
        try:
            file_data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc

    names: List[str] = []
    file_preset = file_data.get("preset")
    if file_preset:
        names += [file_preset] if isinstance(file_preset, str) else list(file_preset)
    if env.get("FACEMOMENT_PRESET"):
        names += env["FACEMOMENT_PRESET"].split(",")
    names += presets or []
    for name in names:
        if name.strip():
            apply_preset(cfg, name)

    _apply_mapping(cfg, file_data, f"configuration file {path}")

    for var, (section, name) in ENV_NAMES.items():
        if var in env:
            _set(cfg, section, name, env[var], var)
    for var, value in env.items():
        if var.startswith("FACEMOMENT__"):
            parts = var[len("FACEMOMENT__"):].lower().split("__")
            if len(parts) < 2:
                raise ConfigError(f"{var}: expected FACEMOMENT__SECTION__FIELD")
            _set(cfg, ".".join(parts[:-1]), parts[-1], value, var)
    return validate(cfg)


def as_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)
