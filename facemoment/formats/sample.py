"""The built-in sample video: a real face that comes, stays, and goes.

The face is NASA's public-domain portrait of Eileen Collins, shipped with
scikit-image as `skimage.data.astronaut()`, so the sample needs no download. A
head-and-shoulders crop of it slides in over a seeded mosaic background (no face,
sharp and well lit for the quality gate), stays centred and frontal, then slides out.

Everything is scripted as data (`sample_timeline()`), so tests and demos know where
the face is in every frame without running a detector.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from facemoment.formats import media

log = logging.getLogger(__name__)

SAMPLE_FPS = 30
SAMPLE_SIZE = (640, 480)  # width, height
# Bump when anything below changes what the video looks like: it names the cache file.
SAMPLE_VERSION = 1
SAMPLE_SEED = 20240611
SAMPLE_KEYINT = 15  # a keyframe every 0.5 s, so stream-copy cuts land close to the asked span

# (phase name, seconds). Slides are brisk so the face is either off-centre or centred.
PHASES: Tuple[Tuple[str, float], ...] = (
    ("background", 2.0),
    ("enter", 0.4),
    ("centred", 6.6),
    ("leave", 0.4),
    ("background", 2.6),
)

# The astronaut's face in her 512x512 portrait, normalized (x, y, w, h).
ASTRONAUT_FACE = (0.347, 0.162, 0.186, 0.186)
# Head-and-shoulders crop of the portrait, in its pixels (x0, y0, x1, y1).
_CROP = (100, 0, 360, 340)
_CROP_SCALE = 1.3
_FEATHER_PX = 15
_TILE_W, _TILE_H = 64, 32  # mosaic bricks
_GROUT_PX = 2

NormBox = Tuple[float, float, float, float]


@dataclass(frozen=True)
class SampleFrame:
    """What frame `index` shows."""

    index: int
    t_ns: int
    phase: str
    # The face's box clipped to the frame, normalized; None when no part of it shows.
    face_box: Optional[NormBox]
    # Whether the whole face is inside the frame.
    face_inside: bool

    @property
    def face_center_distance(self) -> Optional[float]:
        """Face centre to frame centre, normalized Euclidean (None without a face)."""
        if self.face_box is None:
            return None
        x, y, w, h = self.face_box
        return float(np.hypot(x + w / 2.0 - 0.5, y + h / 2.0 - 0.5))


@dataclass(frozen=True)
class SampleTimeline:
    fps: int
    size: Tuple[int, int]
    frames: Tuple[SampleFrame, ...]
    # (phase name, first frame, end frame exclusive)
    phases: Tuple[Tuple[str, int, int], ...]

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    def phase_spans(self, name: str) -> Tuple[Tuple[int, int], ...]:
        return tuple((start, end) for phase, start, end in self.phases if phase == name)


def frame_t_ns(index: int) -> int:
    """Timestamp of frame `index` in the sample's time base."""
    return int(round(index * 1e9 / SAMPLE_FPS))


def _smoothstep(p: float) -> float:
    return p * p * (3.0 - 2.0 * p)


def _sprite_size() -> Tuple[int, int]:
    x0, y0, x1, y1 = _CROP
    return int(round((x1 - x0) * _CROP_SCALE)), int(round((y1 - y0) * _CROP_SCALE))


def _face_in_sprite() -> Tuple[float, float, float, float]:
    """The face box in sprite pixels (x, y, w, h)."""
    fx, fy, fw, fh = ASTRONAUT_FACE
    x0, y0, _, _ = _CROP
    return (
        (fx * 512 - x0) * _CROP_SCALE,
        (fy * 512 - y0) * _CROP_SCALE,
        fw * 512 * _CROP_SCALE,
        fh * 512 * _CROP_SCALE,
    )


def _centred_origin() -> Tuple[int, int]:
    """Sprite top-left that puts the face centre on the frame centre."""
    width, height = SAMPLE_SIZE
    sx, sy, sw, sh = _face_in_sprite()
    return int(round(width / 2.0 - (sx + sw / 2.0))), int(round(height / 2.0 - (sy + sh / 2.0)))


def _sprite_origin(phase: str, progress: float) -> Optional[Tuple[int, int]]:
    """Sprite top-left for a phase at `progress` in [0, 1); None when off screen."""
    width, _ = SAMPLE_SIZE
    sprite_w, _ = _sprite_size()
    cx, cy = _centred_origin()
    if phase == "enter":  # from beyond the left edge to the centre
        start = -sprite_w
        return int(round(start + (cx - start) * _smoothstep(progress))), cy
    if phase == "centred":
        return cx, cy
    if phase == "leave":  # from the centre out past the right edge
        return int(round(cx + (width - cx) * _smoothstep(progress))), cy
    return None


def _face_box(origin: Optional[Tuple[int, int]]) -> Tuple[Optional[NormBox], bool]:
    if origin is None:
        return None, False
    width, height = SAMPLE_SIZE
    sx, sy, sw, sh = _face_in_sprite()
    left, top = origin[0] + sx, origin[1] + sy
    right, bottom = left + sw, top + sh
    inside = left >= 0 and top >= 0 and right <= width and bottom <= height
    cl, ct = max(0.0, left), max(0.0, top)
    cr, cb = min(float(width), right), min(float(height), bottom)
    if cr <= cl or cb <= ct:
        return None, False
    return (cl / width, ct / height, (cr - cl) / width, (cb - ct) / height), inside


@functools.lru_cache(maxsize=1)
def _script() -> Tuple[Tuple[str, Optional[Tuple[int, int]]], ...]:
    """Per frame: (phase, sprite origin or None)."""
    out = []
    for phase, seconds in PHASES:
        count = int(round(seconds * SAMPLE_FPS))
        for k in range(count):
            out.append((phase, _sprite_origin(phase, k / count)))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def sample_timeline() -> SampleTimeline:
    """The sample's script: per frame phase and face box."""
    frames = []
    phases = []
    for index, (phase, origin) in enumerate(_script()):
        box, inside = _face_box(origin)
        frames.append(SampleFrame(index, frame_t_ns(index), phase, box, inside))
        if not phases or phases[-1][0] != phase or index != phases[-1][2]:
            phases.append([phase, index, index + 1])
        else:
            phases[-1][2] = index + 1
    return SampleTimeline(
        fps=SAMPLE_FPS,
        size=SAMPLE_SIZE,
        frames=tuple(frames),
        phases=tuple((p, s, e) for p, s, e in phases),
    )


def t_face_centred_ns(max_center_distance: float = 0.4) -> int:
    """Time of the first frame with the whole face inside and near the centre."""
    for frame in sample_timeline().frames:
        if frame.face_inside and frame.face_center_distance is not None:
            if frame.face_center_distance <= max_center_distance:
                return frame.t_ns
    raise AssertionError("the sample script never centres the face")


def t_face_gone_ns() -> int:
    """Time of the first frame after the face has left for good."""
    frames = sample_timeline().frames
    last = max(f.index for f in frames if f.face_box is not None)
    return frame_t_ns(last + 1)


@functools.lru_cache(maxsize=1)
def _background() -> np.ndarray:
    """A seeded brick mosaic: sharp edges and a wide spread of grey levels."""
    width, height = SAMPLE_SIZE
    rng = np.random.default_rng(SAMPLE_SEED)
    rows = height // _TILE_H + 1
    cols = width // _TILE_W + 2
    hsv = np.stack(
        [
            rng.integers(0, 180, (rows, cols)),
            rng.integers(50, 170, (rows, cols)),
            rng.integers(70, 245, (rows, cols)),
        ],
        axis=-1,
    ).astype(np.uint8)
    colours = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    canvas = np.zeros((rows * _TILE_H, cols * _TILE_W, 3), np.uint8)
    for r in range(rows):
        shift = (_TILE_W // 2) if r % 2 else 0  # running bond: every other row offset
        for c in range(cols):
            x = c * _TILE_W - shift
            x0, x1 = max(0, x), max(0, x + _TILE_W)
            canvas[r * _TILE_H:(r + 1) * _TILE_H, x0:x1] = colours[r, c]
            canvas[r * _TILE_H:(r + 1) * _TILE_H, x0:x0 + _GROUT_PX] = 45
        canvas[r * _TILE_H:r * _TILE_H + _GROUT_PX, :] = 45
    bg = np.ascontiguousarray(canvas[:height, :width])
    bg.setflags(write=False)
    return bg


@functools.lru_cache(maxsize=1)
def _sprite() -> Tuple[np.ndarray, np.ndarray]:
    """The astronaut crop (BGR float) and its soft-edged alpha mask (h, w, 1)."""
    from skimage import data

    x0, y0, x1, y1 = _CROP
    rgb = data.astronaut()[y0:y1, x0:x1]
    size = _sprite_size()
    bgr = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_AREA)
    sprite_w, sprite_h = size
    mask = np.zeros((sprite_h, sprite_w), np.float32)
    f = _FEATHER_PX
    # Feather only the sides and top; the bottom edge sits below the frame when centred.
    mask[f:, f:sprite_w - f] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=f / 2.0)
    sprite = bgr.astype(np.float32)
    alpha = mask[..., None]
    sprite.setflags(write=False)
    alpha.setflags(write=False)
    return sprite, alpha


def render_frame(index: int) -> np.ndarray:
    """Frame `index` of the sample as a (480, 640, 3) BGR uint8 image."""
    script = _script()
    if not 0 <= index < len(script):
        raise IndexError(f"sample frame {index} out of range 0..{len(script) - 1}")
    frame = _background().copy()
    origin = script[index][1]
    if origin is None:
        return frame
    sprite, alpha = _sprite()
    height, width = frame.shape[:2]
    ox, oy = origin
    sx0, sy0 = max(0, -ox), max(0, -oy)
    fx0, fy0 = max(0, ox), max(0, oy)
    fx1 = min(width, ox + sprite.shape[1])
    fy1 = min(height, oy + sprite.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return frame
    sx1, sy1 = sx0 + (fx1 - fx0), sy0 + (fy1 - fy0)
    a = alpha[sy0:sy1, sx0:sx1]
    under = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    blended = sprite[sy0:sy1, sx0:sx1] * a + under * (1.0 - a)
    frame[fy0:fy1, fx0:fx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return frame


def _encode_args(path: Path) -> list[str]:
    width, height = SAMPLE_SIZE
    return [
        "-y",
        "-loglevel", "error",
        "-f", "rawvideo",
        "-pix_fmt", "bgr24",
        "-s", f"{width}x{height}",
        "-r", str(SAMPLE_FPS),
        "-i", "-",
        "-an",
        *media.video_encoder_args(keyint=SAMPLE_KEYINT),
        "-r", str(SAMPLE_FPS),
        # Same input, same bytes: one thread, no encoder/version tags, no metadata.
        "-threads", "1",
        "-fflags", "+bitexact",
        "-flags:v", "+bitexact",
        "-map_metadata", "-1",
        "-f", "mp4",
        str(path),
    ]


def write_sample_video(path: str | os.PathLike[str]) -> Path:
    """Render and encode the whole sample to `path` (mp4)."""
    out = Path(path)
    cmd = [media.ffmpeg_exe(), "-hide_banner", *_encode_args(out)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        assert proc.stdin is not None
        try:
            for index in range(sample_timeline().frame_count):
                proc.stdin.write(render_frame(index).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg died; its exit status and stderr say why
        finally:
            proc.stdin.close()
        code = proc.wait(timeout=media.DEFAULT_TIMEOUT_S)
        if code != 0:
            errors.seek(0)
            detail = errors.read().decode("utf-8", "replace").strip()
            raise media.MediaError(f"encoding the sample video to {out} failed (exit {code}): {detail}")
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("FACEMOMENT_CACHE_DIR") or Path.home() / ".cache" / "facemoment")


def sample_video_name() -> str:
    return f"sample-v{SAMPLE_VERSION}-{media.video_codec_tag()}.mp4"


def ensure_sample_video() -> Path:
    """The sample video file, written once into the cache directory and reused."""
    directory = cache_dir()
    target = directory / sample_video_name()
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise media.MediaError(
            f"cannot create the cache directory {directory} (set FACEMOMENT_CACHE_DIR): {exc}"
        ) from exc
    # Write next to the target and rename: readers never see a half-written file.
    fd, tmp_name = tempfile.mkstemp(prefix=".sample-", suffix=".mp4.part", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("writing the sample video to %s", target)
        write_sample_video(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
