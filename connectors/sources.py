"""Which Bytewax source serves which `FACEMOMENT_SOURCE` value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

from bytewax.inputs import Source

from facemoment.runtime import cluster, shutdown
from facemoment.runtime.preflight import configured_streams, source_kind
from facemoment.core.config import Config, ConfigError


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


def stream_specs(cfg: Config) -> List[StreamSpec]:
    """The configured streams: the main one plus `source.extra` ("id=source") entries."""
    specs = [StreamSpec(stream_id, source, classify(source)) for stream_id, source in configured_streams(cfg)]
    for spec in specs:
        if spec.kind == "file" and not Path(spec.source).exists():
            raise ConfigError(f"source {spec.source!r} is neither a tcp:// address, a camera index nor an existing file")
    return specs


def stream_shares(spec: StreamSpec, cfg: Config) -> int:
    """How many shares (partitions split by frame id) feed this stream; a camera is one."""
    if spec.kind not in ("zmq", "recording", "file", "sample"):
        return 1
    return max(1, cfg.source.shares or cluster.total_workers())


def build_source(spec: StreamSpec, cfg: Config) -> Source:
    """The frame source of one stream (frames and source records, nothing else)."""
    src = cfg.source
    shares = stream_shares(spec, cfg)

    if spec.kind == "zmq":
        from connectors.zmq_source import ZmqFrameSource

        return ZmqFrameSource(
            spec.source,
            spec.stream_id,
            idle_timeout_s=src.idle_timeout_s,
            buffer_frames=src.buffer_frames,
            drop_strategy=src.drop_strategy,
            keyframe_interval=src.keyframe_interval,
            stop_event=shutdown.STOP,
            shares=shares,
            max_frame_bytes=int(src.max_frame_mb * 1024 * 1024),
            buffer_max_bytes=int(src.buffer_max_mb * 1024 * 1024),
            max_time_jump_s=src.max_time_jump_s or None,
        )
    if spec.kind == "fifo":
        from connectors.fifo_source import FifoFrameSource

        return FifoFrameSource(
            spec.source,
            spec.stream_id,
            idle_timeout_s=src.idle_timeout_s,
            buffer_frames=src.buffer_frames,
            drop_strategy=src.drop_strategy,
            keyframe_interval=src.keyframe_interval,
            stop_event=shutdown.STOP,
            max_frame_bytes=int(src.max_frame_mb * 1024 * 1024),
            buffer_max_bytes=int(src.buffer_max_mb * 1024 * 1024),
            max_time_jump_s=src.max_time_jump_s or None,
        )
    if spec.kind == "recording":
        from connectors.replay_source import ReplaySource

        return ReplaySource(spec.source, spec.stream_id, realtime=src.realtime, shares=shares)
    if spec.kind in ("file", "sample"):
        from connectors.video_source import VideoFileSource

        return VideoFileSource(str(spec.path()), spec.stream_id, fps=src.fps, progress=src.progress, shares=shares)
    from connectors.capture_source import CaptureSource

    return CaptureSource(
        spec.source,
        spec.stream_id,
        buffer_frames=max(1, src.buffer_frames),
        stop_event=shutdown.STOP,
        drop_strategy=src.drop_strategy,
        keyframe_interval=src.keyframe_interval,
    )
