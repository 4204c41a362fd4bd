"""The cameras of the multi-camera section: videos built deterministically from the sample.

- `rider`: the built-in sample (someone walks in, faces the camera for 6.6 s, leaves);
- `rider_shifted`: the same rider 5 s later in the loop (frame i shows sample frame
  (i + 150) mod 360): she is centred from the first frame, leaves, the scene stays
  empty, and she comes back in, so a camera's schedule starts occupied;
- `empty`: the sample's background with no person, where three shapes drift and the
  light slowly brightens and dims: motion without anyone to find;
- `rider_1080`: the sample scaled up to raw 1920x1080 (the 4:3 picture stretched).

A waving rider as video is not built: the gesture corpus in tests is observation-level
(no hand imagery exists among the assets to render one from), so two rider variants
stand in for it.

Each camera is an encoded video in the sample's cache (built once) and the live runs
publish its decoded frames, so the live flow and its offline reference see the same
pixels. The offline reference (the `batch` preset, every extractor on every frame) is
computed once per video and cached beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from bench.plan import REPO, SAMPLE_FRAMES, Progress
from bench.workloads.inputs import flow_env, log_tail, write_video

CORPUS_VERSION = 1
RAW_SIZE = (1920, 1080)
SHIFT_FRAMES = 150
KINDS = ("rider", "rider_shifted", "empty", "rider_1080")
# Whether a camera of this kind has someone in front of it (for the CPU targets).
OCCUPIED_KINDS = {"rider": True, "rider_shifted": True, "empty": False, "rider_1080": True}
REFERENCE_PRESET = "batch"


def _empty_frame(index: int) -> np.ndarray:
    """The sample's background with three drifting shapes and a slow change of light."""
    import cv2

    from facemoment.formats.sample import _background

    frame = _background().astype(np.float32)
    t = index / 30.0
    # Light: +-18 grey levels over a 6 s cycle.
    frame += 18.0 * np.sin(2 * np.pi * t / 6.0)
    img = np.clip(frame, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    x = int((0.1 + 0.8 * ((t / 4.0) % 1.0)) * w)
    cv2.rectangle(img, (x - 40, 300), (x + 40, 380), (30, 160, 230), -1)
    cx = int(w / 2 + 0.35 * w * np.sin(2 * np.pi * t / 5.0))
    cy = int(h / 3 + 0.15 * h * np.cos(2 * np.pi * t / 5.0))
    cv2.circle(img, (cx, cy), 45, (200, 60, 60), -1)
    y = int((0.2 + 0.6 * ((t / 7.0) % 1.0)) * h)
    cv2.ellipse(img, (w // 5, y), (60, 25), 30.0 * t, 0, 360, (40, 200, 40), -1)
    return img


def render_camera(kind: str, index: int) -> np.ndarray:
    """Frame `index` (0..359) of camera `kind`, BGR."""
    import cv2

    from facemoment.formats.sample import render_frame

    if kind == "rider":
        return render_frame(index)
    if kind == "rider_shifted":
        return render_frame((index + SHIFT_FRAMES) % SAMPLE_FRAMES)
    if kind == "empty":
        return _empty_frame(index)
    if kind == "rider_1080":
        return cv2.resize(render_frame(index), RAW_SIZE, interpolation=cv2.INTER_LINEAR)
    raise ValueError(f"unknown camera kind {kind!r}; known: {', '.join(KINDS)}")


def corpus_dir() -> Path:
    from facemoment.formats.sample import cache_dir

    path = cache_dir() / f"bench-cameras-v{CORPUS_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def camera_video(kind: str, frames: int = SAMPLE_FRAMES, where: Path | None = None) -> Path:
    """The encoded video of camera `kind` (`frames` frames), built once."""
    folder = where or corpus_dir()
    path = folder / f"{kind}-{frames}.mp4"
    if not path.exists():
        partial = path.with_suffix(".part.mp4")
        write_video(partial, [render_camera(kind, i % SAMPLE_FRAMES) for i in range(frames)])
        partial.replace(path)
    return path


def run_offline(video: Path, out_dir: Path, stream_id: str = "cam0", preset: str = REFERENCE_PRESET,
                timeout_s: float = 1800.0) -> List[Dict[str, Any]]:
    """The offline full-fidelity run on `video`: its triggers.jsonl rows."""
    from facemoment.runtime.summary import read_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    env = flow_env({
        "FACEMOMENT_SOURCE": str(video),
        "FACEMOMENT__SOURCE__STREAM_ID": stream_id,
        "FACEMOMENT_PRESET": preset,
        "FACEMOMENT__OUTPUT__CLIPS": "false",
        "FACEMOMENT_TRACE": "minimal",
        "FACEMOMENT_OUTPUT_DIR": str(out_dir),
    })
    log_path = out_dir / "flow.log"
    with open(log_path, "wb") as handle:
        code = subprocess.call([sys.executable, "-m", "bytewax.run", "dataflows.facemoment"], env=env, cwd=REPO,
                               stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s)
    if code != 0:
        raise RuntimeError(f"offline run on {video.name} exited with {code}:\n{log_tail(log_path)}")
    return read_jsonl(out_dir / "triggers.jsonl") if (out_dir / "triggers.jsonl").exists() else []


def offline_reference(video: Path, log: Progress,
                      runner: Callable[[Path, Path], List[Dict[str, Any]]] = run_offline) -> List[Dict[str, Any]]:
    """The triggers of the offline full-fidelity run on `video`, computed once and cached beside it
    (recomputed when the product's committed code changes).

    Only what matching needs is kept: reason, t_start_ns, t_end_ns, frame_id.
    """
    cached = video.with_suffix(f".{REFERENCE_PRESET}.json")
    product = product_version()
    if cached.exists():
        stored = json.loads(cached.read_text())
        if stored.get("product") == product:
            return stored["triggers"]
    log(f"cameras: offline {REFERENCE_PRESET} reference for {video.name} (computed once, cached)")
    rows = runner(video, video.parent / f"{video.stem}-{REFERENCE_PRESET}-run")
    triggers = [{k: row.get(k) for k in ("reason", "t_start_ns", "t_end_ns", "frame_id")} for row in rows]
    cached.write_text(json.dumps({"preset": REFERENCE_PRESET, "video": video.name, "product": product,
                                  "triggers": triggers}, indent=1))
    return triggers


def product_version() -> str:
    """The committed trees of the product's code: a cached reference is reused only while they are unchanged."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD:facemoment", "HEAD:operators", "HEAD:dataflows",
                              "HEAD:connectors"], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "-".join(line[:12] for line in out.stdout.split()) if out.returncode == 0 else "unknown"


def camera_size(kind: str) -> Tuple[int, int]:
    return RAW_SIZE if kind == "rider_1080" else (640, 480)
