"""The configuration's sections: every setting, its default and what it accepts.

Each field is declared once, with :func:`~facemoment.core.config.rules.setting`:
its default and its rule (range, choices or grammar) side by side. Sources,
extractors and sinks take these sections (or values read from them) and define no
defaults or checks of their own for the same settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from facemoment.core.config.errors import ConfigError
from facemoment.core.config.rules import (
    STREAM_ID,
    STREAM_ID_GRAMMAR,
    STREAM_ID_MAX,
    WIRE_WORD,
    WIRE_WORD_GRAMMAR,
    WIRE_WORD_MAX,
    setting,
)
from facemoment.core.records import LEVEL_NAMES

# Every extractor the registry (operators/extraction/registry.py) can build, in the default order.
KNOWN_EXTRACTORS = ("face", "pose", "gesture", "quality")
# Every reason fusion (operators/fusion_rules.py) can give a trigger.
KNOWN_REASONS = (
    "expression_spike",
    "head_turn",
    "hand_wave",
    "camera_gaze",
    "passenger_interaction",
    "gesture_vsign",
    "gesture_thumbsup",
    "gesture_ok",
    "gesture_openpalm",
)
DROP_STRATEGIES = ("skip_oldest", "skip_intermediate", "keyframe_only")
TRIG_TIMINGS = ("auto", "end", "event")
FACE_BACKENDS = ("mediapipe", "insightface")
POSE_BACKENDS = ("mediapipe", "yolo")

_DAY = 86_400.0
_HOUR_MS = 3_600_000.0


@dataclass
class SourceConfig:
    # tcp://host:port (visualbase publisher), a video file, a recording, a camera
    # index, or "sample" (the built-in sample video).
    source: str = setting("tcp://127.0.0.1:5555")
    stream_id: str = setting("cam0", pattern=STREAM_ID, grammar=STREAM_ID_GRAMMAR, max_len=STREAM_ID_MAX)
    # Further streams as "stream_id=source" pairs, for several cameras in one flow.
    extra: List[str] = setting(factory=list, pattern=r"[^=]+=.+", grammar="STREAM_ID=SOURCE")
    # Recordings: replay paced at the recorded speed instead of as fast as possible.
    realtime: bool = setting(False)
    # Partitions per stream, split by frame id, so every worker extracts its own
    # frames without receiving pixels from another (0: one per worker of the run).
    # With more cameras than that, each camera is one partition (whole cameras spread).
    shares: int = setting(0, low=0, high=1024)
    # Sample file sources at this rate (None: every frame).
    fps: Optional[float] = setting(None, low=0, low_open=True, high=1000)
    # ZMQ sources: after frames have started, end after this long without one (None: never).
    idle_timeout_s: Optional[float] = setting(None, low=0, low_open=True, high=10 * 365 * _DAY)
    # ZMQ sources: buffered frames between the socket and extraction.
    buffer_frames: int = setting(8, low=0, high=100_000)
    drop_strategy: str = setting("skip_oldest", choices=DROP_STRATEGIES)
    keyframe_interval: int = setting(3, low=1, high=100_000)
    progress: bool = setting(False)
    # ZMQ sources: the largest frame message taken (a 4K BGR frame is 24.9 MB), and
    # the bytes of pixels the buffer may hold whatever its frame count.
    max_frame_mb: float = setting(32.0, low=0, low_open=True, high=4096)
    buffer_max_mb: float = setting(256.0, low=0, low_open=True, high=65536)
    # ZMQ sources: a t_src_ns more than this far ahead of the stream (beyond the
    # time that passed) is rejected and counted (0: no check).
    max_time_jump_s: float = setting(60.0, low=0, high=365 * _DAY)
    # Observations from OBS publishers instead of frames (extractors run elsewhere):
    # "[stream_id=]tcp://host:port" entries, several per stream allowed, or
    # "[stream_id=]unix:///path", a datagram socket bound here that several send to.
    obs_inputs: List[str] = setting(factory=list)
    # OBS publishers each stream waits for (their end messages end it); 0: one per
    # address. A unix:// input is one address however many extractors send to it.
    obs_publishers: int = setting(0, low=0, high=1024)


def obs_input(entry: str, default_stream: str) -> Tuple[str, str]:
    """``"[stream_id=]address"`` -> (stream_id, address)."""
    stream_id, sep, address = entry.partition("=")
    if not sep or "://" in stream_id:
        return default_stream, entry.strip()
    return stream_id.strip() or default_stream, address.strip()


@dataclass
class ExtractConfig:
    extractors: List[str] = setting(factory=lambda: list(KNOWN_EXTRACTORS), choices=KNOWN_EXTRACTORS)
    # mediapipe (bundled, offline) | insightface (an InsightFace model pack)
    face_backend: str = setting("mediapipe", choices=FACE_BACKENDS)
    insightface_pack: str = setting("buffalo_l", pattern=r"[A-Za-z0-9_.-]+", grammar="a model pack name", max_len=255)
    # Directory holding model packs (default: $INSIGHTFACE_HOME/models or ~/.insightface/models).
    insightface_root: Optional[str] = setting(None)
    # mediapipe (bundled, offline) | yolo (YOLOv8-pose weights in pose_model)
    pose_backend: str = setting("mediapipe", choices=POSE_BACKENDS)
    pose_model: Optional[str] = setting(None)
    # An HSEmotion-style ONNX classifier; replaces the geometric expression signal.
    expression_model: Optional[str] = setting(None)
    prefer_gpu: bool = setting(True)
    max_faces: int = setting(2, low=1, high=100)
    min_detection_confidence: float = setting(0.5, low=0, high=1)
    # Per-frame extractor deadline in ms (the orchestrator's timeout); 0 disables.
    deadline_ms: float = setting(150.0, low=0, high=60_000)
    # Executor threads per MediaPipe graph (0: MediaPipe's default, one per core).
    # Extractors already run in parallel on their own lanes (docs/algorithms.md).
    graph_threads: int = setting(1, low=0, high=1024)
    # Declared rates as "name=N" or "name=N@K": the extractor runs on frames whose
    # frame_id % N == 0 (or == K) and fusion carries its last result over the N-1 frames between (traced as
    # frame_carry). Unlisted extractors run on every frame (docs/algorithms.md); rates.py reads them.
    every: List[str] = setting(factory=list, max_len=64)
    # Pose and hands wait for the frame's face result and run only when a face was
    # found: no trigger can fire without one (docs/algorithms.md, "Cascade").
    cascade: bool = setting(False)
    # Frames wider than this are analysed scaled down to it, once, as they are read;
    # clips and best stills keep the full frame (0: analyse frames as they come).
    detect_width: int = setting(640, low=0, high=16384)


BUDGET_MODES = ("auto", "on", "off")
# An extractor's floor under load: "NAME=FPS".
FLOOR_GRAMMAR = "NAME=FPS with NAME one of face, pose, gesture, quality"
FLOOR_PATTERN = r"(face|pose|gesture|quality)=(\d+(\.\d*)?|\.\d+)"


@dataclass
class BudgetConfig:
    """One CPU budget for the cameras of a process (operators/extraction/budget.py)."""

    # on | off | auto (on for live sources only: files keep every extractor).
    mode: str = setting("off", choices=BUDGET_MODES)
    # An empty camera runs face and quality this often while it sees motion...
    idle_fps: float = setting(15.0, low=0, low_open=True, high=1000)
    # ...and this often while nothing moves.
    still_fps: float = setting(2.0, low=0, low_open=True, high=1000)
    # Mean grey-level change of a 32x18 thumbnail that counts as motion, and how long it counts.
    motion_threshold: float = setting(2.0, low=0, high=255)
    motion_hold_s: float = setting(1.0, low=0, high=3600)
    # A camera stays occupied this long (event time) after face last found someone.
    occupied_hold_s: float = setting(2.0, low=0, high=3600)
    # Load: an extractor lane busy busy_high of the wall clock (over half a second), a
    # lane queue of high_water jobs per camera, or a missed deadline raises the level
    # (one more frame interval on every occupied camera's periods) at most every step_s; lanes
    # at most busy_low busy for relax_s lower it.
    high_water: int = setting(4, low=1, high=100_000)
    busy_high: float = setting(0.9, low=0, low_open=True, high=1)
    busy_low: float = setting(0.7, low=0, high=1)
    step_s: float = setting(0.5, low=0, high=3600)
    relax_s: float = setting(3.0, low=0, high=3600)
    max_level: int = setting(8, low=0, high=1000)
    # No extractor of an occupied camera goes below its floor.
    floor_fps: List[str] = setting(
        factory=lambda: ["face=10", "pose=5", "gesture=5", "quality=5"],
        pattern=FLOOR_PATTERN,
        grammar=FLOOR_GRAMMAR,
        max_len=64,
    )
    # Fusion carries a result the budget did not renew for at most this long (event time).
    max_carry_s: float = setting(1.0, low=0, high=60)
    # An occupied camera's extraction is held to this many cores (extractor seconds per
    # second of its stream) by the same levels as load, down to the floors; 0: no limit.
    camera_cores: float = setting(0.0, low=0, high=1024)


@dataclass
class QualityConfig:
    # Laplacian variance, mean brightness (0-255) and contrast (grey standard deviation).
    min_blur: float = setting(100.0, low=0, high=1e9)
    min_brightness: float = setting(50.0, low=0, high=255)
    max_brightness: float = setting(200.0, low=0, high=255)
    min_contrast: float = setting(40.0, low=0, high=255)


@dataclass
class AlignConfig:
    window_ms: float = setting(100.0, low=0, low_open=True, high=60_000)
    # How far (event time) an observation may be behind the newest one and still
    # count in its window.
    allowed_lateness_ms: float = setting(200.0, low=0, high=_HOUR_MS)
    # Live streams: after this long without a newer observation, windows close on
    # system time (a paused camera's last moments are not held back).
    idle_flush_ms: float = setting(1000.0, low=0, low_open=True, high=_HOUR_MS)


@dataclass
class GateConfig:
    open_duration_sec: float = setting(0.7, low=0, high=3600)
    close_duration_sec: float = setting(0.3, low=0, high=3600)
    min_faces: int = setting(1, low=0, high=100)
    max_faces: int = setting(2, low=1, high=100)
    min_confidence: float = setting(0.7, low=0, high=1)
    # Degrees; a head turned further than this keeps the gate shut.
    max_yaw: float = setting(25.0, low=0, high=180)
    max_pitch: float = setting(20.0, low=0, high=180)
    # Face box area over frame area, and its centre's distance from the frame's (normalised).
    min_area_ratio: float = setting(0.01, low=0, high=1)
    max_center_distance: float = setting(0.4, low=0, high=2)
    require_quality: bool = setting(True)


@dataclass
class FusionConfig:
    cooldown_sec: float = setting(2.0, low=0, high=_DAY)
    # Rules are set in event time, so every analysis rate fires alike (docs/algorithms.md,
    # "Rules in seconds"); the comments give the frame counts these were at 30 fps.
    # The same reason must win for this long; each frame counts from the one before (2 frames).
    confirm_sec: float = setting(0.05, low=0, high=60)
    pre_sec: float = setting(2.0, low=0, high=3600)
    post_sec: float = setting(2.0, low=0, high=3600)
    # The TRIG message's label: one word of its text format (rules.py, WIRE_WORD).
    label: str = setting("highlight", pattern=WIRE_WORD, grammar=WIRE_WORD_GRAMMAR, max_len=WIRE_WORD_MAX)
    # Time constant of the expression EWMA (alpha 0.1 per frame).
    ewma_tau_sec: float = setting(0.3164, low=0, low_open=True, high=3600)
    ewma_initial_var: float = setting(0.01, low=0, low_open=True, high=1e6)
    spike_z: float = setting(2.0, low=0, high=100)
    spike_min_expression: float = setting(0.5, low=0, high=1)
    spike_min_std: float = setting(0.05, low=0, high=1e6)
    head_turn_deg_per_sec: float = setting(30.0, low=0, high=36_000)
    head_turn_max_dt_sec: float = setting(0.5, low=0, low_open=True, high=3600)
    camera_gaze_threshold: float = setting(0.5, low=0, high=1)
    camera_gaze_yaw_deg: float = setting(10.0, low=0, high=180)
    camera_gaze_pitch_deg: float = setting(15.0, low=0, high=180)
    passenger_yaw_deg: float = setting(15.0, low=0, high=180)
    min_gesture_confidence: float = setting(0.5, low=0, high=1)
    # History searched for the event start (30 frames), and how far back the start is
    # put when no onset is found (3 frames back).
    lookback_sec: float = setting(0.9833, low=0, low_open=True, high=600)
    lookback_default_sec: float = setting(0.1, low=0, high=600)
    # Wrist samples kept per wrist (15 samples).
    wave_window_sec: float = setting(0.4833, low=0, low_open=True, high=60)
    wave_min_samples: int = setting(5, low=1, high=100_000)
    wave_min_span_sec: float = setting(0.2, low=0, high=3600)
    wave_min_amplitude: float = setting(0.05, low=0, high=10)
    wave_min_hz: float = setting(1.5, low=0, high=1000)
    wave_max_hz: float = setting(5.0, low=0, low_open=True, high=1000)
    reasons: List[str] = setting(factory=lambda: list(KNOWN_REASONS), choices=KNOWN_REASONS)
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class OutputConfig:
    output_dir: str = setting("out")
    # unix:///path (a datagram socket visualbase's ingest binds: its default
    # --trig-socket /tmp/trig.sock) or tcp://host:port, ipc:///path (ZMQ PUB, bound here).
    trig_address: Optional[str] = setting("unix:///tmp/trig.sock")
    # The ZMQ topic of TRIG and OBS messages (visualbase's is "msg").
    trig_topic: str = setting("msg", pattern=WIRE_WORD, grammar=WIRE_WORD_GRAMMAR, max_len=WIRE_WORD_MAX)
    # When TRIG goes out: "end" once the stream reached the clip's end (what a live
    # visualbase ring buffer needs), "event" as soon as fusion decides; "auto": end
    # for live sources, event otherwise.
    trig_timing: str = setting("auto", choices=TRIG_TIMINGS)
    # Timing "end": hold TRIG until the stream is this far past t_end, so the
    # receiver's own ingest has the clip's last frames (its proxies run behind it).
    trig_margin_ms: float = setting(0.0, low=0, high=3_600_000)
    # Send every observation as OBS text: a ZMQ address bound here, or unix:///path,
    # a datagram socket the fusion process binds (off when unset).
    obs_address: Optional[str] = setting(None)
    # This publisher's name in its OBS messages (default: host name and process id).
    obs_publisher: str = setting("", pattern=f"(?:{WIRE_WORD})?", grammar=WIRE_WORD_GRAMMAR, max_len=WIRE_WORD_MAX)
    # Before its first OBS, how long the publisher waits for a subscriber to join.
    obs_subscriber_wait_s: float = setting(1.0, low=0, high=3600)
    clips: bool = setting(True)
    ring_buffer_sec: float = setting(120.0, low=0, low_open=True, high=_DAY)
    ring_buffer_max_mb: float = setting(512.0, low=0, low_open=True, high=1_048_576)
    jpeg_quality: int = setting(90, low=1, high=100)
    trace: str = setting("normal", choices=tuple(LEVEL_NAMES))
    # Where trace.jsonl goes (default: inside output_dir).
    trace_path: Optional[str] = setting(None)
    observations: bool = setting(False)
    summary: bool = setting(True)
    # Keep (and de-duplicate against) outputs already in output_dir instead of
    # starting them anew; unset: keep them when Bytewax recovery is on.
    keep_existing: Optional[bool] = setting(None)
    # Prometheus metrics on this port (off when unset).
    metrics_port: Optional[int] = setting(None, low=1, high=65535)
    metrics_addr: str = setting("127.0.0.1", max_len=255)
    # The live sync-status panel on the terminal (verbose diagnostics; off by default).
    sync_view: bool = setting(False)
    # Written (atomically, "{pid}" replaced) once the process's models are ready.
    ready_file: Optional[str] = setting(None)
    # Show the models' native INFO/WARNING lines (MediaPipe, absl, TF Lite); `--verbose`.
    native_logs: bool = setting(False)


@dataclass
class CameraConfig:
    """One camera of a `[cameras.NAME]` table (cameras.py resolves it)."""

    # Its frames: tcp://host:port (a visualbase publisher), a video file, a recording,
    # a camera index, a FIFO or "sample". With `detect` set, the full stream clips are cut from.
    source: str = setting("")
    # Its id in triggers, clips and traces (empty: the table key).
    stream_id: str = setting("", pattern=f"(?:{STREAM_ID})?", grammar=STREAM_ID_GRAMMAR, max_len=STREAM_ID_MAX)
    # A second, low-resolution stream of the same frames (same ids and timestamps):
    # analysed instead of `source`, whose full frames feed the live clips.
    detect: Optional[str] = setting(None)
    # This camera's extract.detect_width and extract.every (unset: the extract section's).
    detect_width: Optional[int] = setting(None, low=0, high=16384)
    every: Optional[List[str]] = setting(None, max_len=64)
    # This camera's budget settings (unset: the budget section's; BUDGET_PER_CAMERA).
    idle_fps: Optional[float] = setting(None, low=0, low_open=True, high=1000)
    still_fps: Optional[float] = setting(None, low=0, low_open=True, high=1000)
    motion_threshold: Optional[float] = setting(None, low=0, high=255)
    motion_hold_s: Optional[float] = setting(None, low=0, high=3600)
    occupied_hold_s: Optional[float] = setting(None, low=0, high=3600)
    floor_fps: Optional[List[str]] = setting(None, pattern=FLOOR_PATTERN, grammar=FLOOR_GRAMMAR, max_len=64)
    camera_cores: Optional[float] = setting(None, low=0, high=1024)


# Budget settings a camera can set for itself; the load settings stay one per process.
BUDGET_PER_CAMERA = (
    "idle_fps", "still_fps", "motion_threshold", "motion_hold_s", "occupied_hold_s", "floor_fps", "camera_cores",
)


@dataclass
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # The cameras by name ([cameras.NAME] tables); empty: source.source is the camera.
    cameras: Dict[str, CameraConfig] = field(default_factory=dict)
    # The presets applied, in order (presets.py).
    preset: List[str] = field(default_factory=list)


# Settings that are tables of sections keyed by a name: their section type.
TABLES = {"cameras": CameraConfig}


def check_table_key(table: str, key: str) -> None:
    """A table entry's name: a stream id's grammar (it is the camera's default id)."""
    if not key or len(key) > STREAM_ID_MAX or not re.fullmatch(STREAM_ID, key):
        raise ConfigError(f"[{table}.{key[:80]}]: the name must be {STREAM_ID_GRAMMAR} (at most {STREAM_ID_MAX})")
