"""`facemoment debug SOURCE -o out.mp4 [--show]`: see what FaceMoment sees.

Every frame of any source (a video file, a recording, a camera, a URL, `sample`, or a
visualbase `tcp://` stream) goes through the dataflow itself, and each fused frame is
drawn on: face boxes with yaw, pitch and
expression, the pose skeleton, hands with their gesture, the quality values, the
gate and its failing conditions, the candidates, and each trigger as it fires. The
annotated video is written to a file, and shown in a window where a display exists.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections import deque
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

import cv2
import numpy as np

from facemoment.core.config import Config, ConfigError, load_config
from facemoment.core.types import Frame, FrameObservations, Observation, Trigger
from operators.fusion_state import FusionState
from operators.gate_tally import Outcome

# BGR colours.
GREEN, RED, YELLOW, CYAN, WHITE, ORANGE = (80, 220, 80), (60, 60, 235), (40, 220, 240), (230, 200, 60), (255, 255, 255), (0, 140, 255)
# COCO body edges (shoulders, arms, torso, legs); the head is the face box's job.
SKELETON = ((5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))
# MediaPipe hand edges: the palm and each finger.
HAND_EDGES = tuple((a, b) for finger in ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (5, 9, 10, 11, 12), (9, 13, 14, 15, 16), (13, 17, 18, 19, 20), (0, 17)) for a, b in zip(finger, finger[1:]))
# A fired trigger's banner stays this long (event time).
BANNER_NS = 1_500_000_000
FONT = cv2.FONT_HERSHEY_SIMPLEX
WINDOW = "facemoment debug"


@dataclass
class DebugResult:
    frames: int = 0
    triggers: List[Trigger] = field(default_factory=list)
    size: Tuple[int, int] = (0, 0)
    output: Optional[Path] = None
    shown: bool = False


def _text(img: np.ndarray, text: str, org: Tuple[int, int], color=WHITE, scale: float = 0.5) -> None:
    # A dark outline keeps the text readable on any background.
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, 1, cv2.LINE_AA)


def _px(x: float, y: float, w: int, h: int) -> Tuple[int, int]:
    return int(round(x * w)), int(round(y * h))


def _usable(fo: FrameObservations, source: str) -> Optional[Observation]:
    obs = fo.observations.get(source)
    return obs if obs is not None and obs.error is None else None


def draw_faces(img: np.ndarray, fo: FrameObservations) -> None:
    h, w = img.shape[:2]
    obs = _usable(fo, "face")
    for face in obs.faces if obs else []:
        x, y, bw, bh = face.bbox
        p0, p1 = _px(x, y, w, h), _px(x + bw, y + bh, w, h)
        cv2.rectangle(img, p0, p1, GREEN, 2)
        _text(img, f"yaw {face.yaw:+.0f} pitch {face.pitch:+.0f}", (p0[0], max(12, p0[1] - 22)), GREEN)
        _text(img, f"expr {face.expression:.2f} conf {face.confidence:.2f}", (p0[0], max(24, p0[1] - 6)), GREEN)


def draw_poses(img: np.ndarray, fo: FrameObservations) -> None:
    h, w = img.shape[:2]
    obs = _usable(fo, "pose")
    for person in obs.poses if obs else []:
        points = person.keypoints
        for a, b in SKELETON:
            if a < len(points) and b < len(points) and min(points[a][2], points[b][2]) >= 0.5:
                cv2.line(img, _px(points[a][0], points[a][1], w, h), _px(points[b][0], points[b][1], w, h), CYAN, 2)
        for x, y, conf in points[5:]:
            if conf >= 0.5:
                cv2.circle(img, _px(x, y, w, h), 3, CYAN, -1)
        if person.hand_raised:
            _text(img, "hand raised", _px(points[0][0], points[0][1], w, h), CYAN)


def draw_hands(img: np.ndarray, fo: FrameObservations) -> None:
    h, w = img.shape[:2]
    obs = _usable(fo, "gesture")
    for hand in obs.hands if obs else []:
        pts = [_px(p[0], p[1], w, h) for p in hand.landmarks]
        for a, b in HAND_EDGES:
            if a < len(pts) and b < len(pts):
                cv2.line(img, pts[a], pts[b], ORANGE, 1)
        for p in pts:
            cv2.circle(img, p, 2, ORANGE, -1)
        if pts:
            label = hand.handedness if hand.gesture == "none" else f"{hand.handedness} {hand.gesture} {hand.gesture_confidence:.2f}"
            _text(img, label, (min(pts)[0], max(12, min(p[1] for p in pts) - 6)), ORANGE)


def _failing(conditions: Mapping[str, Mapping[str, Any]]) -> List[str]:
    return [name for name, c in conditions.items() if not c.get("pass")]


def draw_status(img: np.ndarray, fo: FrameObservations, outcome: Outcome, banner: Optional[Trigger], fired: int) -> None:
    h, w = img.shape[:2]
    quality = _usable(fo, "quality")
    lines: List[Tuple[str, Tuple[int, int, int]]] = []
    if quality is not None:
        s = quality.signals
        ok = s.get("quality_gate", 0) >= 0.5
        lines.append((f"quality {'ok' if ok else 'LOW'}: blur {s.get('blur', 0):.0f} brightness {s.get('brightness', 0):.0f} "
                      f"contrast {s.get('contrast', 0):.0f}", GREEN if ok else RED))
    gate_open = bool(outcome.gate_open)
    failing = _failing(outcome.conditions) if outcome.face_observed else ["no face observation"]
    gate = "gate OPEN" if gate_open else "gate closed"
    if failing:
        gate += " (failing: " + ", ".join(failing) + ")"
    elif not gate_open:
        gate += " (conditions hold, opening)"
    lines.append((gate, GREEN if gate_open else RED))
    candidates = outcome.candidates
    lines.append(("candidates: " + (", ".join(candidates) if candidates else "none"), YELLOW))
    lines.append((f"decision: {outcome.decision}   frame {fo.frame_id}  t {fo.t_ns / 1e9:.2f} s  triggers {fired}", WHITE))
    if fo.missing:
        lines.append(("missing: " + ", ".join(fo.missing), RED))
    y = h - 10 - 18 * (len(lines) - 1)
    for text, color in lines:
        _text(img, text, (8, y), color)
        y += 18
    if banner is not None:
        text = f"TRIGGER {banner.reason} {banner.score:.2f}"
        cv2.rectangle(img, (0, 0), (w - 1, 34), RED, -1)
        _text(img, text, (10, 24), WHITE, 0.75)
        cv2.rectangle(img, (0, 0), (w - 1, h - 1), RED, 4)


def annotate(image: np.ndarray, fo: FrameObservations, outcome: Outcome, banner: Optional[Trigger], fired: int) -> np.ndarray:
    img = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    draw_poses(img, fo)
    draw_hands(img, fo)
    draw_faces(img, fo)
    draw_status(img, fo, outcome, banner, fired)
    return img


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("win32", "darwin")


def debug_config(cfg: Config, source: str, work_dir: Path, idle_timeout_s: Optional[float]) -> Config:
    """The run's settings for looking: every extractor on every frame, no TRIG sent,
    no clips; the flow's own files go to `work_dir`."""
    cfg = copy.deepcopy(cfg)
    cfg.source.source = source
    cfg.cameras.clear()  # the source named here is the camera
    cfg.source.shares = 1
    if source.startswith(("tcp://", "ipc://")) and idle_timeout_s is not None:
        cfg.source.idle_timeout_s = idle_timeout_s
    cfg.extract.deadline_ms = 0.0  # this is for looking, not for keeping up
    cfg.output.trig_address = None
    cfg.output.clips = False
    cfg.output.obs_address = None
    cfg.output.metrics_port = None
    cfg.output.sync_view = False
    cfg.output.trace = "off"
    cfg.output.trace_path = None
    cfg.output.output_dir = str(work_dir)
    return cfg


class _Annotator:
    """Draws each fused frame of the flow on its image, as the flow fuses it."""

    def __init__(self, output: Optional[Path], fps: float, show: bool, max_frames: Optional[int]):
        self.result = DebugResult(output=output, shown=show)
        self._fps = fps
        self._max_frames = max_frames
        self._images: Dict[int, np.ndarray] = {}
        self._fused: Deque[Tuple[FrameObservations, Outcome, Optional[Trigger]]] = deque()
        self._writer: Optional[cv2.VideoWriter] = None
        self._banner: Optional[Trigger] = None
        self.done = False

    # The two taps sit on different steps, so either may see a frame first: a fused
    # frame waits for its image, and frames are drawn in the order they were fused.
    def on_frame(self, frame: Frame) -> None:
        if not self.done:
            self._images[frame.frame_id] = frame.image
            self._draw_ready()

    def on_fused(self, fo: FrameObservations, fusion: FusionState, trigger: Optional[Trigger]) -> None:
        if not self.done:
            self._fused.append((fo, Outcome(*fusion.outcome), trigger))
            self._draw_ready()

    def _draw_ready(self) -> None:
        while self._fused and not self.done and self._fused[0][0].frame_id in self._images:
            fo, outcome, trigger = self._fused.popleft()
            image = self._images.pop(fo.frame_id)
            for stale in [i for i in self._images if i < fo.frame_id]:
                del self._images[stale]  # frames that never reached fusion
            self._draw(image, fo, outcome, trigger)

    def _draw(self, image: np.ndarray, fo: FrameObservations, outcome: Outcome, trigger: Optional[Trigger]) -> None:
        if trigger is not None:
            self.result.triggers.append(trigger)
            self._banner = trigger
            print(f"frame {fo.frame_id} t={fo.t_ns / 1e9:.2f}s: TRIGGER {trigger.reason} score {trigger.score:.2f}", flush=True)
        if self._banner is not None and fo.t_ns - self._banner.t_ns > BANNER_NS:
            self._banner = None
        drawn = annotate(image, fo, outcome, self._banner, len(self.result.triggers))
        self._write(drawn)
        self.result.size = (drawn.shape[1], drawn.shape[0])
        self.result.frames += 1
        if self.result.shown:
            cv2.imshow(WINDOW, drawn)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self._finish()
        if self._max_frames is not None and self.result.frames >= self._max_frames:
            self._finish()

    def _write(self, drawn: np.ndarray) -> None:
        output = self.result.output
        if self._writer is None and output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            size = (drawn.shape[1], drawn.shape[0])
            self._writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), self._fps, size)
            if not self._writer.isOpened():
                raise ValueError(f"cannot write a video to {output}")
        if self._writer is not None:
            self._writer.write(drawn)

    def _finish(self) -> None:
        """Enough frames: stop reading; frames already read are fused but not drawn."""
        from facemoment.runtime import shutdown

        self.done = True
        self._images.clear()
        self._fused.clear()
        shutdown.STOP.set()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        if self.result.shown:
            cv2.destroyAllWindows()


def _source_fps(source: str) -> Optional[float]:
    """A file's frame rate, for the annotated video (live sources: None)."""
    if source != "sample" and not Path(source).is_file():
        return None
    from facemoment.formats.frames import open_frames

    reader = open_frames(source)
    try:
        return getattr(reader, "fps", None)
    finally:
        reader.close()


# --------------------------------------------------------------------- loop
def run_debug(
    source: str,
    output: Optional[Path],
    cfg: Config,
    show: bool = False,
    max_frames: Optional[int] = None,
    idle_timeout_s: Optional[float] = None,
) -> DebugResult:
    """Annotate every frame of `source` into `output` (and a window with `show`).

    The frames go through the dataflow itself (the same stages `python -m bytewax.run`
    runs: read-ahead, extraction, alignment, fusion with its carried results), so
    what is drawn is what a run fires.
    """
    from bytewax.testing import run_main

    from dataflows.facemoment import Taps, build_flow
    from facemoment.runtime import shutdown

    shown = show and display_available()
    if show and not shown:
        print("facemoment debug: no display here; writing the file only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="facemoment-debug-") as work:
        run_cfg = debug_config(cfg, source, Path(work), idle_timeout_s)
        annotator = _Annotator(output, _source_fps(source) or run_cfg.source.fps or 30.0, shown, max_frames)
        flow = build_flow(run_cfg, taps=Taps(on_frame=annotator.on_frame, on_fused=annotator.on_fused))
        shutdown.STOP.clear()
        try:
            run_main(flow)
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the view; what was written so far is a playable file
        finally:
            shutdown.STOP.clear()  # a stop asked of this view must not end the next run in this process
            annotator.close()
    return annotator.result


def cmd_debug(args: argparse.Namespace) -> int:
    if not args.output and not args.show:
        print("facemoment debug: give -o OUT.mp4, --show, or both", file=sys.stderr)
        return 2
    try:
        cfg = load_config(env=os.environ, presets=[p for p in (args.preset or "").split(",") if p])
        result = run_debug(args.source, Path(args.output) if args.output else None, cfg, args.show, args.max_frames, args.idle_timeout)
    except (ConfigError, ValueError) as exc:
        print(f"facemoment debug: {exc}", file=sys.stderr)
        return 2
    where = f" -> {result.output}" if result.output else ""
    print(f"facemoment debug: {result.frames} frames annotated ({result.size[0]}x{result.size[1]}), "
          f"{len(result.triggers)} triggers{where}", flush=True)
    return 0


def add_debug_args(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("debug", help="an annotated video of what the extractors and rules see")
    p.add_argument("source", help="a video file, a recording, a camera index, a URL, 'sample', or tcp://host:port")
    p.add_argument("-o", "--output", help="the annotated video to write (.mp4)")
    p.add_argument("--show", action="store_true", help="also show a live window (where a display exists; q quits)")
    p.add_argument("--preset", help="comma-separated presets, e.g. low_latency")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="tcp:// sources: end this long after the last frame")
    p.set_defaults(func=cmd_debug)
