"""The built-in sample: deterministic pixels and file, a script that matches the pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facemoment.formats import media, sample

from conftest import decode_all


def quality(image: np.ndarray) -> tuple[float, float, float]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var()), float(grey.mean()), float(grey.std())


def assert_quality_gate(image: np.ndarray, what: str) -> None:
    blur, brightness, contrast = quality(image)
    assert blur >= 100, f"{what}: variance of Laplacian {blur:.1f} < 100"
    assert 50 <= brightness <= 200, f"{what}: mean grey {brightness:.1f} outside 50-200"
    assert contrast >= 40, f"{what}: grey std {contrast:.1f} < 40"




@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    return sample.write_sample_video(tmp_path_factory.mktemp("sample") / "a.mp4")


@pytest.fixture(scope="module")
def decoded(sample_file):
    return decode_all(sample_file)


def centred_indices() -> list[int]:
    return [f.index for f in sample.sample_timeline().frames if f.phase == "centred"]


def background_indices() -> list[int]:
    return [f.index for f in sample.sample_timeline().frames if f.phase == "background"]


# ------------------------------------------------------------------ rendering


def test_render_is_deterministic_even_after_rebuilding_caches():
    indices = [0, 65, 150, 275, 359]
    first = [sample.render_frame(i) for i in indices]
    sample._background.cache_clear()
    sample._sprite.cache_clear()
    for i, image in zip(indices, first, strict=True):
        again = sample.render_frame(i)
        assert again.shape == (480, 640, 3) and again.dtype == np.uint8
        assert np.array_equal(image, again), f"frame {i} differs between renders"


def test_frames_change_only_where_the_script_moves_the_face():
    centred = centred_indices()
    assert np.array_equal(sample.render_frame(centred[0]), sample.render_frame(centred[-1]))
    bg = background_indices()
    assert np.array_equal(sample.render_frame(bg[0]), sample.render_frame(bg[-1]))
    assert not np.array_equal(sample.render_frame(bg[0]), sample.render_frame(centred[0]))


def test_render_frame_out_of_range_is_a_clear_error():
    with pytest.raises(IndexError, match="out of range"):
        sample.render_frame(sample.sample_timeline().frame_count)


# ------------------------------------------------------------------ timeline


def test_timeline_shape_and_timestamps():
    tl = sample.sample_timeline()
    assert tl.fps == sample.SAMPLE_FPS == 30
    assert tl.size == sample.SAMPLE_SIZE == (640, 480)
    assert 11 * 30 <= tl.frame_count <= 13 * 30
    for f in tl.frames:
        assert f.t_ns == round(f.index * 1e9 / 30)
    assert [p for p, _s, _e in tl.phases] == ["background", "enter", "centred", "leave", "background"]
    # Phases tile the frames without gaps.
    ends = [s for _p, s, _e in tl.phases[1:]]
    assert ends == [e for _p, _s, e in tl.phases[:-1]]
    assert tl.phases[0][1] == 0 and tl.phases[-1][2] == tl.frame_count


def test_face_absent_at_both_ends_and_centred_for_at_least_five_seconds():
    tl = sample.sample_timeline()
    assert tl.frames[0].face_box is None
    assert tl.frames[-1].face_box is None
    for f in tl.frames:
        if f.phase == "background":
            assert f.face_box is None, f"background frame {f.index} has a face box"
    (start, end), = tl.phase_spans("centred")
    assert (end - start) / tl.fps >= 5.0
    for f in tl.frames[start:end]:
        assert f.face_inside
        assert f.face_center_distance < 0.05
        x, y, w, h = f.face_box
        assert 0.01 <= w * h  # the gate's minimum face area ratio
    # Slides are brisk: each one well under a second.
    for name in ("enter", "leave"):
        for s, e in tl.phase_spans(name):
            assert 0.25 <= (e - s) / tl.fps <= 0.5


def test_t_face_centred_is_the_first_frame_meeting_the_condition():
    tl = sample.sample_timeline()
    t = sample.t_face_centred_ns()
    index = next(f.index for f in tl.frames if f.t_ns == t)

    def centred(f):
        return f.face_box is not None and f.face_inside and f.face_center_distance <= 0.4

    assert centred(tl.frames[index])
    assert not any(centred(f) for f in tl.frames[:index])
    (start, _end), = tl.phase_spans("centred")
    assert index <= start


def test_t_face_gone_is_right_after_the_last_face_frame():
    tl = sample.sample_timeline()
    t = sample.t_face_gone_ns()
    index = next(f.index for f in tl.frames if f.t_ns == t)
    assert tl.frames[index - 1].face_box is not None
    assert all(f.face_box is None for f in tl.frames[index:])
    assert t > sample.t_face_centred_ns() + 5 * 10**9


def test_face_box_is_clipped_to_the_frame_while_sliding():
    for f in sample.sample_timeline().frames:
        if f.face_box is None:
            continue
        x, y, w, h = f.face_box
        assert 0.0 <= x and 0.0 <= y and x + w <= 1.0 + 1e-9 and y + h <= 1.0 + 1e-9
        assert w > 0 and h > 0


# ------------------------------------------------------------------ pixels vs script


def test_quality_gate_holds_on_rendered_background_and_centred_frames():
    for i in (background_indices()[0], background_indices()[-1], centred_indices()[0]):
        assert_quality_gate(sample.render_frame(i), f"rendered frame {i}")


def test_quality_gate_holds_on_decoded_frames(decoded):
    for i in (0, background_indices()[-1], centred_indices()[0], centred_indices()[-1]):
        assert_quality_gate(decoded[i], f"decoded frame {i}")


def test_the_scripted_face_box_holds_the_astronauts_face():
    """The pixels inside the scripted box are the portrait's face, resized."""
    from skimage import data

    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    fx, fy, fw, fh = sample.ASTRONAUT_FACE
    face = portrait[int(fy * 512):int((fy + fh) * 512), int(fx * 512):int((fx + fw) * 512)]
    f = sample.sample_timeline().frames[centred_indices()[0]]
    x, y, w, h = f.face_box
    frame = sample.render_frame(f.index)
    crop = frame[int(y * 480):int((y + h) * 480), int(x * 640):int((x + w) * 640)]
    face = cv2.resize(face, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_AREA)
    err = np.abs(crop.astype(np.int16) - face.astype(np.int16)).mean()
    assert err < 12, f"mean abs difference {err:.1f}: the box is not on the face"
    # And the same box on a background frame is not the face.
    bg = sample.render_frame(0)[int(y * 480):int((y + h) * 480), int(x * 640):int((x + w) * 640)]
    assert np.abs(bg.astype(np.int16) - face.astype(np.int16)).mean() > 30


def test_a_face_detector_finds_the_face_only_where_the_script_says(decoded):
    mp = pytest.importorskip("mediapipe")
    tl = sample.sample_timeline()

    def detect(image):
        result = detector.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        boxes = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            boxes.append((b.xmin, b.ymin, b.width, b.height))
        return boxes

    def iou(a, b):
        ax, ay, aw, ah = a
        bx, by, bw, bh = b
        iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
        ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
        inter = iw * ih
        return inter / (aw * ah + bw * bh - inter)

    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        for i in (centred_indices()[0], centred_indices()[len(centred_indices()) // 2]):
            boxes = detect(decoded[i])
            assert len(boxes) == 1, f"frame {i}: {boxes}"
            assert iou(boxes[0], tl.frames[i].face_box) > 0.6
        for i in (0, background_indices()[-1]):
            assert detect(decoded[i]) == [], f"background frame {i} shows a face"


# ------------------------------------------------------------------ the file


def test_video_is_byte_identical_when_written_twice(sample_file, tmp_path):
    again = sample.write_sample_video(tmp_path / "b.mp4")
    assert sample_file.read_bytes() == again.read_bytes()


def test_video_has_every_frame_at_30_fps(sample_file, decoded):
    tl = sample.sample_timeline()
    assert len(decoded) == tl.frame_count
    assert media.probe_frame_count(sample_file) == tl.frame_count
    assert media.probe_duration(sample_file) == pytest.approx(tl.frame_count / 30, abs=1 / 30)
    # Lossy, but close to the render.
    for i in (0, centred_indices()[0]):
        diff = np.abs(decoded[i].astype(np.int16) - sample.render_frame(i).astype(np.int16)).mean()
        assert diff < 8, f"decoded frame {i} is far from the render ({diff:.1f})"


def test_ensure_sample_video_writes_once_atomically_and_reuses(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACEMOMENT_CACHE_DIR", str(cache))
    first = sample.ensure_sample_video()
    assert first.parent == cache
    assert f"v{sample.SAMPLE_VERSION}" in first.name and first.suffix == ".mp4"
    stat = first.stat()
    second = sample.ensure_sample_video()
    assert second == first
    assert second.stat().st_mtime_ns == stat.st_mtime_ns and second.stat().st_ino == stat.st_ino
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no temp files left
    assert media.probe_frame_count(first) == sample.sample_timeline().frame_count


def test_ensure_sample_video_reports_an_unusable_cache_dir(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FACEMOMENT_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(media.MediaError, match="FACEMOMENT_CACHE_DIR"):
        sample.ensure_sample_video()
