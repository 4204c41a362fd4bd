"""The one source factory: which source serves which `source.source` value.

The dataflow, the command line, the frame daemon and the recorder all resolve a
source here: :func:`stream_specs` / :func:`stream_spec` classify and check it,
:func:`build_source` makes the Bytewax source that produces its frames (only
frames: read-ahead and extraction are the flow's business) and
:func:`open_reader` the plain frame reader the daemon publishes from. The
settings come from the validated `source` section (facemoment/core/config); no
source repeats their defaults or checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from bytewax.inputs import Source

from facemoment.core.config import Config, ConfigError, cameras
from facemoment.runtime import cluster, shutdown
from facemoment.runtime.preflight import source_kind

# Kinds whose frames are read from a finite file (read ahead by the flow).
FINITE_KINDS = ("recording", "file", "sample")
LIVE_KINDS = ("zmq", "fifo", "camera", "url")


@dataclass(frozen=True)
class StreamSpec:
    stream_id: str
    source: str  # the frames analysed
    kind: str  # zmq | fifo | file | recording | sample | camera | url
    # Analysed at this width (None: extract.detect_width).
    detect_width: Optional[int] = None
    # The camera's full stream, when the one analysed is its separate detect stream:
    # the live clips are encoded from it.
    record: Optional[str] = None

    @property
    def is_live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def rereads(self) -> bool:
        """A resume re-reads from a frame id (files, recordings); live input does not."""
        return self.kind in ("recording", "file", "sample")

    def path(self) -> Path:
        if self.kind == "sample":
            from facemoment.formats.sample import ensure_sample_video

            return ensure_sample_video()
        return Path(self.source)

    def clip_descriptor(self) -> Dict[str, Any]:
        if self.is_live:
            return {"live": True}
        if self.kind == "recording":
            return {"recording": str(self.path())}
        return {"path": str(self.path())}


def classify(source: str) -> str:
    return source_kind(source)


def stream_spec(stream_id: str, source: str, detect_width: Optional[int] = None, record: Optional[str] = None) -> StreamSpec:
    """One stream's spec; a file source must exist."""
    spec = StreamSpec(stream_id, source, classify(source), detect_width, record)
    if spec.kind == "file" and not Path(spec.source).exists():
        raise ConfigError(f"source {spec.source!r} is neither a tcp:// address, a camera index nor an existing file")
    if record is not None and not (spec.is_live and classify(record) in LIVE_KINDS):
        raise ConfigError(f"stream {stream_id!r}: a separate detect stream needs both it and the camera's source live (tcp://...)")
    return spec


def stream_specs(cfg: Config) -> List[StreamSpec]:
    """Every camera (core/config/cameras.py): the `[cameras.NAME]` table, or
    `source.source`, plus `source.extra`'s "id=source" entries."""
    return [stream_spec(c.stream_id, c.analysed, c.detect_width, c.record) for c in cameras(cfg)]


def record_spec(spec: StreamSpec) -> StreamSpec:
    """The camera's full stream, as a stream of its own id (it feeds the clips only)."""
    if spec.record is None:
        raise ValueError(f"stream {spec.stream_id!r} has no separate record stream")
    return StreamSpec(spec.stream_id, spec.record, classify(spec.record))


def whole_cameras(specs: List[StreamSpec], cfg: Config) -> bool:
    """More cameras than workers (`source.shares`, or the run's workers): each camera is
    read whole by one worker (its frames stay there) instead of in shares on every worker."""
    return len(specs) > (cfg.source.shares or cluster.total_workers())


def stream_shares(spec: StreamSpec, cfg: Config, whole: bool = False) -> int:
    """How many shares (partitions split by frame id) feed this stream; a camera is one."""
    if whole or spec.kind not in ("zmq",) + FINITE_KINDS:
        return 1
    return max(1, cfg.source.shares or cluster.total_workers())


def camera_shares(specs: List[StreamSpec], cfg: Config) -> Dict[str, int]:
    """Each stream's number of shares in this run (what alignment waits for)."""
    whole = whole_cameras(specs, cfg)
    return {spec.stream_id: stream_shares(spec, cfg, whole) for spec in specs}


def build_source(spec: StreamSpec, cfg: Config, shares: Optional[int] = None) -> Source:
    """The Bytewax source producing one stream's frames, with the `source` section's settings
    (`shares`: how many partitions split it; default: `stream_shares`)."""
    src = cfg.source
    shares = stream_shares(spec, cfg) if shares is None else max(1, shares)

    if spec.kind == "zmq":
        from connectors.zmq_source import ZmqFrameSource

        return ZmqFrameSource(spec.source, spec.stream_id, src, stop_event=shutdown.STOP, shares=shares)
    if spec.kind == "fifo":
        from connectors.fifo_source import FifoFrameSource

        return FifoFrameSource(spec.source, spec.stream_id, src, stop_event=shutdown.STOP)
    if spec.kind == "recording":
        from connectors.replay_source import ReplaySource

        return ReplaySource(spec.source, spec.stream_id, src, shares=shares)
    if spec.kind in FINITE_KINDS:
        from connectors.video_source import VideoFileSource

        return VideoFileSource(str(spec.path()), spec.stream_id, src, shares=shares)
    from connectors.capture_source import CaptureSource

    return CaptureSource(spec.source, spec.stream_id, src, stop_event=shutdown.STOP)


def open_reader(spec: StreamSpec, fps: Optional[float], loop: bool = False) -> Any:
    """A plain frame reader of one stream (`read()` -> (frame_id, t_ns, image) or None),
    sampled to `fps` (the `source.fps` setting): what the frame daemon publishes."""
    if spec.kind == "zmq":
        raise ConfigError(f"source {spec.source!r} is a frame publisher; a file, recording, camera, URL or 'sample' is needed")
    from facemoment.formats.frames import open_frames

    return open_frames(str(spec.path()) if spec.kind in FINITE_KINDS else spec.source, fps=fps, loop=loop)
