"""ffmpeg helpers shared by the project: finding the binary, probing, cutting, encoding.

The ffmpeg comes from imageio-ffmpeg (a wheel that ships a static binary), so nothing
is needed on the system. That build has no ffprobe, so durations are read from
ffmpeg's own output.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import List, Optional, Sequence, Set, Union

# Generous: a clip or the sample takes seconds; this only stops a hung process.
DEFAULT_TIMEOUT_S = 300.0

_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_TIME_RE = re.compile(r"time=\s*(-?\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")
_FPS_RE = re.compile(r"Video:.*?(\d+(?:\.\d+)?)\s+fps")


class MediaError(RuntimeError):
    """ffmpeg is missing, failed, or a media file cannot be read."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: imageio-ffmpeg's, else `ffmpeg` on PATH."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and Path(exe).exists():
            return str(exe)
    except Exception:  # noqa: BLE001 - any failure here just means "try PATH"
        pass
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    raise MediaError("no ffmpeg found: install the imageio-ffmpeg package or put ffmpeg on PATH")


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class Background:
    """Background encodes of one owner (a clip sink): at idle CPU priority while its
    input runs, so they never take extraction's cores. Once the input has ended there
    is nothing left to yield to: `lift()` turns the running encodes and later ones back
    to normal priority, so other load on the machine cannot hold the end of the run
    (where the OS lets a process raise a child's priority; otherwise they stay idle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lifted = False
        self._pids: Set[int] = set()

    @property
    def lifted(self) -> bool:
        return self._lifted

    def lift(self) -> None:
        with self._lock:
            self._lifted = True
            pids = list(self._pids)
        for pid in pids:
            _normal_priority(pid)

    def take_thread(self) -> None:
        """Run the calling thread, and what it starts, at the encodes' priority: a clip's
        writing thread also feeds the encoder and decodes the clip again to score its
        best still, which at 1080p costs as much CPU as a second of frames arriving."""
        _lower_priority()
        self.started(threading.get_native_id())  # a thread id is a pid to the scheduler

    def started(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
            lifted = self._lifted
        if lifted:  # lifted while this one was starting at idle priority
            _normal_priority(pid)

    def ended(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)


def run_ffmpeg(
    args: Sequence[str],
    *,
    input_bytes: Optional[bytes] = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
    background: Union[bool, Background] = False,
) -> subprocess.CompletedProcess:
    """Run ffmpeg with `args` (without the binary); stderr is captured as text.

    `background` runs it on one thread at low CPU priority: clips are cut while
    extraction keeps up with a live stream, and must not take its cores. A
    `Background` says when that is over (`Background.lift`).
    """
    # -nostdin keeps ffmpeg from reading the terminal when it gets no piped input.
    stdin_flag = ["-nostdin"] if input_bytes is None else []
    cmd = [ffmpeg_exe(), "-hide_banner", *stdin_flag, *args]
    owner = background if isinstance(background, Background) else None
    if background:
        cmd[1:1] = ["-threads", "1"]
    lower = bool(background) and not (owner is not None and owner.lifted)
    try:
        proc = subprocess.Popen(
            cmd,
            preexec_fn=_lower_priority if lower else None,
            stdin=subprocess.PIPE if input_bytes is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise MediaError(f"cannot run ffmpeg ({cmd[0]}): {exc}") from exc
    if owner is not None:
        owner.started(proc.pid)
    try:
        stdout, stderr_bytes = proc.communicate(input_bytes, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise MediaError(f"ffmpeg did not finish within {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    finally:
        if owner is not None:
            owner.ended(proc.pid)
    stderr = stderr_bytes.decode("utf-8", "replace")
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise MediaError(f"ffmpeg failed (exit {proc.returncode}): {_tail(stderr)}")
    return result


def _lower_priority() -> None:
    # SCHED_IDLE: the encoder runs only on CPU time nothing else wants, so a clip cut
    # during a live stream cannot delay extraction; nice is the fallback elsewhere.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(19)
    except OSError:
        pass


def _normal_priority(pid: int) -> None:
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    except (AttributeError, OSError):
        pass  # not allowed, or it ended meanwhile: it finishes at the priority it has


@functools.lru_cache(maxsize=None)
def has_encoder(name: str) -> bool:
    """Whether this ffmpeg build has the named encoder (e.g. libx264)."""
    out = run_ffmpeg(["-encoders"]).stdout.decode("utf-8", "replace")
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.startswith(" "))


def video_encoder_args(keyint: Optional[int] = None) -> List[str]:
    """Output codec options: H.264 (yuv420p) when available, else MPEG-4 part 2."""
    if has_encoder("libx264"):
        args = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
        if keyint:
            # Fixed GOP: no scene-cut keyframes, so cuts snap to a known grid.
            args += ["-g", str(keyint), "-keyint_min", str(keyint), "-sc_threshold", "0"]
        return args
    args = ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]
    if keyint:
        args += ["-g", str(keyint)]
    return args


def video_codec_tag() -> str:
    return "h264" if has_encoder("libx264") else "mpeg4"


def _hms(match: "re.Match[str]") -> float:
    hours, minutes, seconds = match.groups()
    sign = -1.0 if hours.startswith("-") else 1.0
    return sign * (abs(int(hours)) * 3600 + int(minutes) * 60 + float(seconds))


def _require_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"media file {p} does not exist")
    if p.stat().st_size == 0:
        raise MediaError(f"media file {p} is empty")
    return p


def _decode(path: Path) -> tuple[int, float, str]:
    """Decode the first video stream: (frames, end time in s, ffmpeg's report)."""
    res = run_ffmpeg(["-v", "info", "-stats", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"], check=False)
    if res.returncode != 0:
        raise MediaError(f"cannot decode {path}: {_tail(res.stderr)}")
    # Progress lines end with \r; the last one holds the totals.
    text = res.stderr.replace("\r", "\n")
    frames = _FRAME_RE.findall(text)
    times = list(_TIME_RE.finditer(text))
    if not frames or not times:
        raise MediaError(f"cannot decode {path}: ffmpeg reported no frames")
    return int(frames[-1]), _hms(times[-1]), text


def decode_stats(path: str | os.PathLike[str]) -> tuple[int, float]:
    """Decode the whole first video stream: (frames decoded, end time in seconds).

    The end time is ffmpeg's final `time=` (10 ms resolution).
    """
    frames, end_time, _report = _decode(_require_file(path))
    return frames, end_time


def probe_frame_count(path: str | os.PathLike[str]) -> int:
    """Number of video frames in the file (by decoding it)."""
    return decode_stats(path)[0]


def probe_duration(path: str | os.PathLike[str]) -> float:
    """Duration of the file's video in seconds, exact to a frame.

    Decodes the video (meant for clips, not hour-long files), counts the frames
    and divides by the stream's frame rate. The container's `Duration:` (10 ms
    resolution, may include audio or edit-list padding) is only the fallback
    when the stream states no rate.
    """
    frames, end_time, report = _decode(_require_file(path))
    fps_match = _FPS_RE.search(report)
    if fps_match and float(fps_match.group(1)) > 0:
        return frames / float(fps_match.group(1))
    duration = _DURATION_RE.search(report)
    if duration:
        return _hms(duration)
    return end_time


def cut_copy(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    start_sec: float,
    duration_sec: float,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Cut [start, start+duration] without re-encoding, the way visualbase does.

    Stream copy starts at a keyframe, so the real span may be longer; probe the
    result for the true duration.
    """
    _require_file(src)
    if duration_sec <= 0:
        raise MediaError(f"clip duration must be positive, got {duration_sec:.3f} s")
    run_ffmpeg(
        [
            "-y",
            "-ss", f"{max(0.0, start_sec):.6f}",
            "-i", str(src),
            "-t", f"{duration_sec:.6f}",
            "-c", "copy",
            "-avoid_negative_ts", "make_zero",
            "-f", "mp4",
            str(out),
        ],
        timeout_s=timeout_s,
    )


def encode_jpeg_sequence(
    jpegs: Sequence[bytes],
    out: str | os.PathLike[str],
    fps: float,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    background: Union[bool, Background] = True,
) -> None:
    """Encode JPEG images, one per output frame at `fps`, into an mp4 file (in the
    background by default, see `run_ffmpeg`)."""
    if not jpegs:
        raise MediaError("no frames to encode")
    run_ffmpeg(
        [
            "-y",
            "-loglevel", "error",
            "-f", "image2pipe",
            "-c:v", "mjpeg",
            "-framerate", f"{fps:g}",
            "-i", "-",
            "-an",
            # yuv420p needs even sizes.
            "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            *video_encoder_args(),
            "-threads", "1",
            "-r", f"{fps:g}",
            "-f", "mp4",
            str(out),
        ],
        input_bytes=b"".join(jpegs),
        timeout_s=timeout_s,
        background=background,
    )
