"""The frames every measurement shares (an encoded video of the sample and its decoded frames) and the flow processes' environment."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from bench.plan import LIVE_FPS, REPO, SAMPLE_FRAMES, STREAM_ID, Plan, Progress
from facemoment.core.types import Frame


def flow_env(extra: Mapping[str, str]) -> Dict[str, str]:
    """This process's environment without FACEMOMENT/BYTEWAX settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


@dataclass
class Inputs:
    """The frames every measurement shares, as a video file and decoded in memory."""

    video: Path  # the N benchmark frames, encoded
    frames: List[Frame]  # the N frames decoded from `video`: what the dataflow sees
    sample_images: List[np.ndarray]  # the whole sample in order, for paced live streams


def bench_indices(count: int, total: int = SAMPLE_FRAMES) -> List[int]:
    """`count` sample frame indices spread evenly over the sample (all of it when count >= total)."""
    if count <= 0:
        raise ValueError(f"frame count must be positive, got {count}")
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


def write_video(path: Path, images: Sequence[np.ndarray], fps: float = LIVE_FPS) -> Path:
    """Encode BGR images to an mp4 the way the sample video is encoded."""
    from facemoment.formats import media

    height, width = images[0].shape[:2]
    cmd = [
        media.ffmpeg_exe(), "-hide_banner", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-an", *media.video_encoder_args(keyint=15), "-r", str(fps), "-f", "mp4", str(path),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for image in images:
            proc.stdin.write(np.ascontiguousarray(image).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg's exit status says why
    finally:
        proc.stdin.close()
    errors = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.wait(timeout=300) != 0:
        raise RuntimeError(f"encoding {path} failed: {errors.strip()}")
    return path


def decode_video(path: Path, stream_id: str = STREAM_ID) -> List[Frame]:
    from facemoment.formats.frames import open_frames

    reader = open_frames(str(path))
    frames = []
    try:
        while (item := reader.read()) is not None:
            frame_id, t_ns, image = item
            frames.append(Frame(stream_id, frame_id, t_ns, image))
    finally:
        reader.close()
    return frames


def prepare_inputs(plan: Plan, work: Path, log: Progress) -> Inputs:
    from facemoment.formats.sample import ensure_sample_video, render_frame

    indices = bench_indices(plan.frames)
    images = [render_frame(i) for i in indices]
    video = write_video(work / f"bench-{len(images)}.mp4", images)
    frames = decode_video(video)
    if len(frames) != len(images):
        raise RuntimeError(f"{video} decodes to {len(frames)} frames, expected {len(images)}")
    sample = [f.image for f in decode_video(ensure_sample_video())]
    log(f"inputs: {len(frames)} frames of {frames[0].width}x{frames[0].height} in {video.name}; "
        f"sample stream of {len(sample)} frames for live runs")
    return Inputs(video, frames, sample)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
