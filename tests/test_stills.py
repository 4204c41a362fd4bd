"""Best frame of each highlight: a JPEG beside the clip, listed in triggers.jsonl and clips.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from connectors.clips import CLIPS_DIR, MANIFEST_NAME, ClipSink
from facemoment.formats.stills import still_file_name
from connectors.triggers_jsonl import trigger_record
from facemoment.core.types import Trigger
from facemoment.formats import sample
from facemoment.formats.stills import best_still, largest_face

NS = 1_000_000_000


def _write(path: Path, frames) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_best_still_is_the_sharp_frame_with_the_face(tmp_path):
    face_frame = sample.render_frame(150)  # the face centred and frontal
    empty = sample.render_frame(10)  # background only, just as sharp
    frames = [cv2.GaussianBlur(face_frame, (0, 0), 4) for _ in range(12)]
    frames[3] = empty
    frames[8] = face_frame
    still = best_still(_write(tmp_path / "clip.avi", frames))
    assert still is not None and still.frame_index == 8
    assert still.face_area_ratio > 0.01 and still.image.shape == face_frame.shape
    assert largest_face(cv2.cvtColor(empty, cv2.COLOR_BGR2GRAY)) is None


def test_best_still_without_faces_is_the_sharpest_frame(tmp_path):
    frames = [cv2.GaussianBlur(sample.render_frame(5), (0, 0), 3) for _ in range(6)]
    frames[4] = sample.render_frame(5)
    still = best_still(_write(tmp_path / "clip.avi", frames))
    assert still is not None and still.frame_index == 4 and still.face_area_ratio == 0.0


def _trigger(event_s: float) -> Trigger:
    ns = int(event_s * NS)
    return Trigger("cam0", int(event_s * 30), ns, ns, "camera_gaze", 0.8, 2.0, 2.0, 1)


def test_each_clip_gets_its_best_frame_listed_in_both_files(tmp_path):
    video = sample.write_sample_video(tmp_path / "sample.mp4")
    out = tmp_path / "out"
    trigger = _trigger(5.0)
    part = ClipSink(out, {"cam0": {"path": str(video)}}).build_part("clips", "cam0", None)
    part.write_batch([trigger])
    part.close()
    entry = json.loads((out / CLIPS_DIR / MANIFEST_NAME).read_text().splitlines()[0])
    assert entry["status"] == "ok" and entry["best_frame"] == still_file_name(trigger)
    jpeg = out / CLIPS_DIR / entry["best_frame"]
    image = cv2.imread(str(jpeg))
    assert image is not None and image.shape == (480, 640, 3)
    assert entry["best_frame_face_area"] > 0.01  # the face is in the chosen frame
    # triggers.jsonl names the same file, relative to the output directory; other fields unchanged.
    plain = trigger_record(trigger)
    listed = trigger_record(trigger, stills=True)
    assert listed["best_frame"] == f"{CLIPS_DIR}/{entry['best_frame']}"
    assert {k: v for k, v in listed.items() if k not in ("best_frame", "written_at")} == {
        k: v for k, v in plain.items() if k != "written_at"
    }
    assert (out / listed["best_frame"]).exists()


def test_a_failed_clip_has_no_best_frame(tmp_path):
    out = tmp_path / "out"
    part = ClipSink(out, {"cam0": {"path": str(tmp_path / "missing.mp4")}}).build_part("clips", "cam0", None)
    part.write_batch([_trigger(5.0)])
    part.close()
    entry = json.loads((out / CLIPS_DIR / MANIFEST_NAME).read_text().splitlines()[0])
    assert entry["status"] == "failed" and entry["best_frame"] is None
    assert not list((out / CLIPS_DIR).glob("*.jpg"))
