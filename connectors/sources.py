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

from facemoment.core.config import Config, ConfigError
from facemoment.runtime import cluster, shutdown
from facemoment.runtime.preflight import configured_streams, source_kind

# Kinds whose frames are read from a finite file (read ahead by the flow).
FINITE_KINDS = ("recording", "file", "sample")


@dataclass(frozen=True)
class StreamSpec:
    stream_id: str
    source: str
    kind: str  # zmq | fifo | file | recording | sample | camera | url

    @property
    def is_live(self) -> bool:
        return self.kind in ("zmq", "fifo", "camera", "url")

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


def stream_spec(stream_id: str, source: str) -> StreamSpec:
    """One stream's spec; a file source must exist."""
    spec = StreamSpec(stream_id, source, classify(source))
    if spec.kind == "file" and not Path(spec.source).exists():
        raise ConfigError(f"source {spec.source!r} is neither a tcp:// address, a camera index nor an existing file")
    return spec


def stream_specs(cfg: Config) -> List[StreamSpec]:
    """The configured streams: the main one plus `source.extra` ("id=source") entries."""
    return [stream_spec(stream_id, source) for stream_id, source in configured_streams(cfg)]


def stream_shares(spec: StreamSpec, cfg: Config) -> int:
    """How many shares (partitions split by frame id) feed this stream; a camera is one."""
    if spec.kind not in ("zmq",) + FINITE_KINDS:
        return 1
    return max(1, cfg.source.shares or cluster.total_workers())


def build_source(spec: StreamSpec, cfg: Config) -> Source:
    """The Bytewax source producing one stream's frames, with the `source` section's settings."""
    src = cfg.source
    shares = stream_shares(spec, cfg)

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
