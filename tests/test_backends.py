"""Model backends on tiny ONNX models built here with the real models' input/output contracts."""

from __future__ import annotations

import logging
import math
import sys
import types
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from operators.extraction.backends import runtime  # noqa: E402
from operators.extraction.backends.expression_onnx import CLASSES_7, CLASSES_8, ExpressionModel  # noqa: E402
from operators.extraction.backends.insightface_pack import (  # noqa: E402
    NOSE_LINE_TILT_DEG,
    InsightFaceFaceBackend,
    Landmark3D68,
    head_pose_from_68,
)
from operators.extraction.backends.runtime import (  # noqa: E402
    ModelLoadError,
    ModelNotFoundError,
    choose_providers,
    create_session,
    model_dir,
    nms,
)
from operators.extraction.backends.scrfd import SCRFD, estimate_pose_from_5pts, letterbox_blob  # noqa: E402
from operators.extraction.backends.yolo_pose import YoloPoseBackend, hand_raised  # noqa: E402
from tests.onnx_builders import (  # noqa: E402
    PlantedFace,
    PlantedPerson,
    constant_model,
    expression_model,
    landmark_68_model,
    scrfd_model,
    scrfd_outputs,
    yolo_pose_model,
)

FACE_FALLBACK_HINT = "FACEMOMENT__EXTRACT__FACE_BACKEND=mediapipe"


# ---------------------------------------------------------------- geometry helpers


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Ry(yaw) Rx(pitch) Rz(roll): columns are the face's right, down and back axes."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


# Average frontal face for the 5 keypoints, in inter-eye distances (x right, y down, z away).
FACE_5 = np.array(
    [[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.575, -0.5], [-0.4, 1.15, 0.0], [0.4, 1.15, 0.0]]
)


def project_5(yaw: float, pitch: float, roll: float, centre=(200.0, 150.0), scale=40.0) -> np.ndarray:
    pts = (rotation(yaw, pitch, roll) @ FACE_5.T).T
    return pts[:, :2] * scale + np.asarray(centre)


def canonical_68() -> np.ndarray:
    """68 points with the ones the pose uses placed like a level face; the rest filler."""
    rng = np.random.default_rng(7)
    p = np.column_stack([rng.uniform(-0.8, 0.8, 68), rng.uniform(-0.3, 1.4, 68), rng.uniform(0.0, 0.3, 68)])
    p[36], p[39], p[42], p[45] = (-0.7, 0, 0.25), (-0.25, 0, 0.15), (0.25, 0, 0.15), (0.7, 0, 0.25)
    bridge_to_base = 0.85
    p[27] = (0.0, -0.05, 0.0)
    p[33] = (0.0, -0.05 + bridge_to_base, -bridge_to_base * math.tan(math.radians(NOSE_LINE_TILT_DEG)))
    p[30] = (0.0, 0.6, -0.45)
    return p


def image_68(yaw: float, pitch: float, roll: float, centre: Tuple[float, float], scale: float) -> np.ndarray:
    pts = (rotation(yaw, pitch, roll) @ canonical_68().T).T * scale
    pts[:, 0] += centre[0]
    pts[:, 1] += centre[1]
    return pts


def to_crop_units(points: np.ndarray, bbox, size: int = 192, flip_depth: bool = False) -> np.ndarray:
    """Image-pixel landmarks as 1k3d68 reports them for the crop around `bbox`."""
    x1, y1, x2, y2 = bbox
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    factor = size / (max(x2 - x1, y2 - y1) * 1.5) / (size / 2)
    out = np.column_stack([(points[:, 0] - cx) * factor, (points[:, 1] - cy) * factor, points[:, 2] * factor])
    if flip_depth:
        out[:, 2] = -out[:, 2]
    return out


# ---------------------------------------------------------------- runtime


def test_choose_providers_prefers_cuda_only_when_available_and_wanted():
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(both) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(both, prefer_gpu=False) == ["CPUExecutionProvider"]
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_create_session_runs_on_cpu_here_and_logs_the_provider_once(tmp_path, caplog):
    path = constant_model(tmp_path / "tiny.onnx", [1, 3, 8, 8], [("out", np.ones((1, 2)))])
    caplog.set_level(logging.INFO, logger="operators.extraction.backends.runtime")
    session, provider = create_session(path)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert provider == "CPUExecutionProvider"
    assert session.get_providers()[0] == provider
    lines = [r.getMessage() for r in caplog.records if "onnxruntime provider" in r.getMessage()]
    assert lines == [f"onnxruntime provider for tiny.onnx: {provider}"]
    out = session.run(None, {"input.1": np.zeros((1, 3, 8, 8), np.float32)})[0]
    assert out.tolist() == [[1.0, 1.0]]


def test_create_session_asks_for_cuda_when_onnxruntime_lists_it(tmp_path, monkeypatch):
    path = constant_model(tmp_path / "tiny.onnx", [1, 3, 8, 8], [("out", np.ones((1, 2)))])
    requested: List[List[str]] = []
    real_session = onnxruntime.InferenceSession
    really_available = onnxruntime.get_available_providers()

    def recording_session(model, sess_options=None, providers=None):
        requested.append(list(providers))
        # This build may have no CUDA: ask for what it has, as onnxruntime's own fallback would.
        usable = [p for p in providers if p in really_available]
        return real_session(model, sess_options=sess_options, providers=usable)

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    _, provider = create_session(path)
    assert requested == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    if "CUDAExecutionProvider" not in really_available:
        assert provider == "CPUExecutionProvider"  # what the session really runs on
    create_session(path, prefer_gpu=False)
    assert requested[-1] == ["CPUExecutionProvider"]


def test_create_session_names_a_missing_or_corrupt_file(tmp_path):
    missing = tmp_path / "nothing.onnx"
    with pytest.raises(ModelNotFoundError) as err:
        create_session(missing)
    assert str(missing) in str(err.value) and FACE_FALLBACK_HINT in str(err.value)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError) as err:
        create_session(corrupt)
    assert str(corrupt) in str(err.value) and FACE_FALLBACK_HINT in str(err.value)


def test_model_dirs_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.delenv("FACEMOMENT_MODEL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_dir("insightface") == tmp_path / "home" / ".insightface" / "models"
    assert model_dir() == tmp_path / "home" / ".facemoment" / "models"
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "if"))
    monkeypatch.setenv("FACEMOMENT_MODEL_DIR", str(tmp_path / "fm"))
    assert model_dir("insightface") == tmp_path / "if" / "models"
    assert model_dir() == tmp_path / "fm"


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.55])
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 3, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4) == []


# ---------------------------------------------------------------- SCRFD

IMAGE_W, IMAGE_H = 320, 240  # letterboxed into 160x160 at scale 0.5, content 160x120
DET_HW = (160, 160)
FACE_A = PlantedFace(
    stride=8, row=5, col=7, anchor=1, score=0.9, box=(40, 20, 72, 64),
    keypoints=np.array([[50, 35], [62, 35], [56, 45], [51, 55], [61, 55]], np.float32),
)
FACE_A_DUPLICATE = PlantedFace(
    stride=16, row=3, col=3, score=0.7, box=(42, 22, 74, 62),
    keypoints=np.array([[51, 36], [63, 36], [57, 46], [52, 56], [62, 56]], np.float32),
)
FACE_B = PlantedFace(
    stride=32, row=2, col=4, anchor=1, score=0.8, box=(110, 40, 150, 90),
    keypoints=np.array([[120, 55], [138, 55], [129, 65], [121, 78], [137, 78]], np.float32),
)
FACE_WEAK = PlantedFace(stride=8, row=10, col=12, score=0.3, box=(86, 70, 106, 92))
PLANTED = [FACE_A, FACE_A_DUPLICATE, FACE_B, FACE_WEAK]


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8)


def test_letterbox_blob_keeps_aspect_pads_bottom_right_and_normalizes_rgb():
    bgr = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in BGR
    blob, scale = letterbox_blob(bgr, (160, 160))
    assert blob.shape == (1, 3, 160, 160) and blob.dtype == np.float32
    assert scale == pytest.approx(0.5)
    assert np.allclose(blob[0, 0, :120], (255 - 127.5) / 128)  # R channel first
    assert np.allclose(blob[0, 2, :120], -127.5 / 128)
    assert np.allclose(blob[0, :, 120:], -127.5 / 128)  # padding below the image


@pytest.mark.parametrize("keypoints", [True, False])
@pytest.mark.parametrize("batch", [True, False])
def test_scrfd_decodes_planted_faces_rescales_and_suppresses_duplicates(tmp_path, keypoints, batch):
    path = scrfd_model(tmp_path / "det.onnx", DET_HW, PLANTED, keypoints=keypoints, batch=batch)
    detector = SCRFD(path)
    assert detector.has_keypoints == keypoints
    found = detector.detect(image())
    assert [round(d.score, 3) for d in found] == [0.9, 0.8]
    assert np.allclose(found[0].bbox, np.array(FACE_A.box) / 0.5, atol=1e-3)
    assert np.allclose(found[1].bbox, np.array(FACE_B.box) / 0.5, atol=1e-3)
    if keypoints:
        assert np.allclose(found[0].keypoints, FACE_A.keypoints / 0.5, atol=1e-3)
        assert np.allclose(found[1].keypoints, FACE_B.keypoints / 0.5, atol=1e-3)
    else:
        assert found[0].keypoints is None


def test_scrfd_threshold_and_nms_iou_are_applied(tmp_path):
    path = scrfd_model(tmp_path / "det.onnx", DET_HW, PLANTED)
    assert [round(d.score, 2) for d in SCRFD(path, score_threshold=0.25).detect(image())] == [0.9, 0.8, 0.3]
    assert SCRFD(path, score_threshold=0.95).detect(image()) == []
    # With suppression only for near-identical boxes the duplicate survives.
    assert len(SCRFD(path, iou_threshold=0.9).detect(image())) == 3


def test_scrfd_dynamic_input_uses_det_size_and_accepts_interleaved_outputs(tmp_path):
    order = [0, 3, 6, 1, 4, 7, 2, 5, 8]  # score/bbox/kps per stride instead of grouped
    path = scrfd_model(tmp_path / "det.onnx", DET_HW, PLANTED, dynamic_input=True, order=order)
    detector = SCRFD(path, input_size=160)
    assert detector.input_wh == (160, 160)
    found = detector.detect(image())
    assert np.allclose(found[0].bbox, np.array(FACE_A.box) * 2, atol=1e-3)
    assert np.allclose(found[0].keypoints, FACE_A.keypoints * 2, atol=1e-3)


def test_scrfd_rejects_a_model_without_the_scrfd_outputs_at_construction(tmp_path):
    path = constant_model(tmp_path / "other.onnx", [1, 3, 160, 160], [("a", np.zeros((1, 5))), ("b", np.zeros((1, 5)))])
    with pytest.raises(ModelLoadError) as err:
        SCRFD(path)
    assert str(path) in str(err.value) and FACE_FALLBACK_HINT in str(err.value)
    wrong = scrfd_outputs_with_bad_counts()
    path = constant_model(tmp_path / "bad_counts.onnx", [1, 3, 160, 160], wrong)
    with pytest.raises(ModelLoadError, match="feature map"):
        SCRFD(path)


def scrfd_outputs_with_bad_counts():
    outputs = scrfd_outputs(DET_HW, [FACE_A])
    name, value = outputs[0]
    outputs[0] = (name, value[:, :-3])  # stride 8 scores no longer fill its feature map
    name, value = outputs[3]
    outputs[3] = (name, value[:, :-3])
    name, value = outputs[6]
    outputs[6] = (name, value[:, :-3])
    return outputs


# ---------------------------------------------------------------- 5-point pose


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (25, 0, 0), (-30, 0, 0), (0, 15, 0), (0, -20, 0), (0, 0, 12)])
def test_pose_from_5pts_recovers_single_axis_rotations(yaw, pitch, roll):
    kps = project_5(yaw, pitch, roll)
    estimate = estimate_pose_from_5pts(kps, (150, 100, 250, 220))
    assert estimate == pytest.approx((yaw, pitch, roll), abs=0.5)


def test_pose_from_5pts_signs_follow_the_project_convention_and_mirroring():
    kps = project_5(20, 10, 8)
    eye_mid_x = (kps[0, 0] + kps[1, 0]) / 2
    assert kps[2, 0] > eye_mid_x  # turned toward the image's right: the nose moves right
    yaw, pitch, roll = estimate_pose_from_5pts(kps)
    assert yaw > 10 and pitch > 4 and roll > 4
    assert (yaw, pitch, roll) == pytest.approx((20, 10, 8), abs=4)
    mirrored = kps.copy()
    mirrored[:, 0] = 400 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # the image's left eye is now the other one
    m_yaw, m_pitch, m_roll = estimate_pose_from_5pts(mirrored)
    assert m_yaw == pytest.approx(-yaw, abs=1e-6)
    assert m_roll == pytest.approx(-roll, abs=1e-6)
    assert m_pitch == pytest.approx(pitch, abs=1e-6)


def test_pose_from_5pts_degenerate_keypoints_give_zeros():
    assert estimate_pose_from_5pts(np.full((5, 2), 10.0), (0, 0, 50, 50)) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------- 68-point pose


def test_local_rotation_matches_the_face_extractors_convention():
    face = pytest.importorskip("operators.extraction.face")
    for angles in [(20, -10, 5), (-35, 15, -8)]:
        assert np.allclose(rotation(*angles), face.rotation_from_angles(*angles))


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (20, -10, 5), (-35, 15, -8), (50, 5, 0)])
@pytest.mark.parametrize("flip_depth", [False, True])
def test_head_pose_from_68_recovers_the_rotation_for_either_depth_sign(yaw, pitch, roll, flip_depth):
    pts = image_68(yaw, pitch, roll, (300, 200), 60)
    if flip_depth:
        pts[:, 2] = -pts[:, 2]
    assert head_pose_from_68(pts) == pytest.approx((yaw, pitch, roll), abs=0.1)


# ---------------------------------------------------------------- InsightFace pack


def make_pack(root: Path, pack: str = "buffalo_l", det_name: str = "det_10g.onnx", faces=PLANTED) -> Path:
    # InsightFace's detector exports take any input size; det_size decides it.
    scrfd_model(root / pack / det_name, DET_HW, faces, dynamic_input=True)
    return root / pack


def test_insightface_pack_loads_and_detects_faces_with_extractor_geometry(tmp_path):
    make_pack(tmp_path)
    backend = InsightFaceFaceBackend(root=tmp_path, det_size=160)
    assert backend.detector_path.name == "det_10g.onnx" and backend.pose_source == "5 keypoints"
    faces = backend.detect(image())
    assert [f.face_id for f in faces] == [0, 1]
    a, b = faces  # left to right
    ax1, ay1, ax2, ay2 = np.array(FACE_A.box) * 2
    expected = (ax1 / IMAGE_W, ay1 / IMAGE_H, (ax2 - ax1) / IMAGE_W, (ay2 - ay1) / IMAGE_H)
    assert a.bbox == pytest.approx(expected, abs=1e-5)
    assert a.confidence == pytest.approx(0.9) and b.confidence == pytest.approx(0.8)
    assert a.area_ratio == pytest.approx(a.bbox[2] * a.bbox[3])
    cx, cy = a.center
    assert a.center_distance == pytest.approx(math.hypot(cx - 0.5, cy - 0.5))
    assert a.inside_frame and b.inside_frame
    assert (a.yaw, a.pitch, a.roll) == pytest.approx(estimate_pose_from_5pts(FACE_A.keypoints * 2), abs=1e-3)
    assert a.expression == 0.0 and b.expression == 0.0


def test_insightface_face_reaching_past_the_frame_is_clipped_and_not_inside(tmp_path):
    edge = PlantedFace(stride=16, row=4, col=9, score=0.85, box=(130, 50, 170, 80))  # x2 past 160 (image edge)
    make_pack(tmp_path, faces=[edge])
    faces = InsightFaceFaceBackend(root=tmp_path, det_size=160).detect(image())
    assert len(faces) == 1
    x, y, w, h = faces[0].bbox
    assert not faces[0].inside_frame
    assert x + w == pytest.approx(1.0) and x == pytest.approx(260 / IMAGE_W)
    assert faces[0].area_ratio == pytest.approx(w * h)


def test_insightface_small_packs_and_unnamed_detectors_are_found(tmp_path, monkeypatch):
    make_pack(tmp_path, pack="buffalo_s", det_name="det_500m.onnx")
    constant_model(tmp_path / "buffalo_s" / "w600k_mbf.onnx", [1, 3, 112, 112], [("emb", np.zeros((1, 512)))])
    assert InsightFaceFaceBackend("buffalo_s", root=tmp_path, det_size=160).detector_path.name == "det_500m.onnx"
    make_pack(tmp_path, pack="custom", det_name="model_7.onnx")
    constant_model(tmp_path / "custom" / "a_recognizer.onnx", [1, 3, 112, 112], [("emb", np.zeros((1, 512)))])
    assert InsightFaceFaceBackend("custom", root=tmp_path, det_size=160).detector_path.name == "model_7.onnx"
    # Without root the pack is looked up under $INSIGHTFACE_HOME/models.
    home = tmp_path / "home"
    make_pack(home / "models")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(home))
    assert InsightFaceFaceBackend(det_size=160).pack_dir == home / "models" / "buffalo_l"


def test_insightface_1k3d68_gives_the_head_pose(tmp_path):
    pack = make_pack(tmp_path)
    bbox_a = np.array(FACE_A.box) * 2  # where the detector puts face A in the image
    centre = ((bbox_a[0] + bbox_a[2]) / 2, (bbox_a[1] + bbox_a[3]) / 2)
    pts = image_68(20, -10, 5, centre, 30)
    # A constant model reports the same crop coordinates for every face.
    landmark_68_model(pack / "1k3d68.onnx", to_crop_units(pts, bbox_a, flip_depth=True))
    backend = InsightFaceFaceBackend(root=tmp_path, det_size=160)
    assert backend.pose_source == "1k3d68"
    back = backend.landmarks.landmarks(image(), bbox_a)
    assert np.allclose(back[:, :2], pts[:, :2], atol=1e-3)  # crop -> image mapping
    assert np.allclose(np.abs(back[:, 2]), np.abs(pts[:, 2]), atol=1e-3)
    faces = backend.detect(image())
    a = faces[0]
    assert (a.yaw, a.pitch, a.roll) == pytest.approx((20, -10, 5), abs=0.1)


def test_landmark_model_normalization_follows_the_graph(tmp_path):
    plain = landmark_68_model(tmp_path / "plain.onnx", np.zeros((68, 3)))
    inside = landmark_68_model(tmp_path / "inside.onnx", np.zeros((68, 3)), normalize_inside=True)
    assert (Landmark3D68(plain).mean, Landmark3D68(plain).std) == (127.5, 128.0)
    assert (Landmark3D68(inside).mean, Landmark3D68(inside).std) == (0.0, 1.0)


def test_insightface_expression_backend_fills_expression(tmp_path):
    make_pack(tmp_path)
    weights = np.zeros((3, 8), np.float32)
    weights[0, 4] = 4.0  # red -> Happiness
    weights[2, 5] = 4.0  # blue -> Neutral
    model = ExpressionModel(expression_model(tmp_path / "emo.onnx", weights))
    frame = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    frame[:, :] = (255, 0, 0)  # blue everywhere
    ax1, ay1, ax2, ay2 = (np.array(FACE_A.box) * 2).astype(int)
    frame[ay1:ay2, ax1:ax2] = (0, 0, 255)  # face A red
    faces = InsightFaceFaceBackend(root=tmp_path, det_size=160, expression=model).detect(frame)
    assert faces[0].expression > 0.9 and faces[1].expression < 0.1


def test_insightface_missing_pack_names_the_paths_and_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError) as err:
        InsightFaceFaceBackend("buffalo_l")
    message = str(err.value)
    assert str(tmp_path / "home" / "models" / "buffalo_l") in message
    assert FACE_FALLBACK_HINT in message and isinstance(err.value, FileNotFoundError)


def test_insightface_pack_without_detector_names_the_expected_file(tmp_path):
    constant_model(tmp_path / "buffalo_l" / "w600k_r50.onnx", [1, 3, 112, 112], [("emb", np.zeros((1, 512)))])
    with pytest.raises(ModelNotFoundError) as err:
        InsightFaceFaceBackend(root=tmp_path)
    assert str(tmp_path / "buffalo_l" / "det_10g.onnx") in str(err.value)
    assert FACE_FALLBACK_HINT in str(err.value)


def test_insightface_corrupt_detector_fails_at_construction(tmp_path):
    corrupt = tmp_path / "buffalo_l" / "det_10g.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(ModelLoadError) as err:
        InsightFaceFaceBackend(root=tmp_path)
    assert str(corrupt) in str(err.value) and FACE_FALLBACK_HINT in str(err.value)


def test_insightface_rejects_bad_images_clearly(tmp_path):
    make_pack(tmp_path)
    backend = InsightFaceFaceBackend(root=tmp_path, det_size=160)
    with pytest.raises(ValueError, match="uint8"):
        backend.detect(np.zeros((10, 10, 3), np.float32))
    assert len(backend.detect(image()[:, :, 0])) == 2  # grey frames work


# ---------------------------------------------------------------- YOLOv8-pose

POSE_IMAGE_W, POSE_IMAGE_H = 640, 480  # into 320x320: ratio 0.5, 40 px bars top and bottom


def person_keypoints(x0: float, raised: bool, wrist_conf: float = 0.9) -> np.ndarray:
    """17 normalized keypoints of a standing person around x0, shoulders at y = 0.5."""
    kp = np.zeros((17, 3))
    kp[:, 0] = x0 + np.linspace(-0.05, 0.05, 17)
    kp[:, 1] = np.linspace(0.2, 0.95, 17)
    kp[:, 2] = 0.9
    kp[5, 1] = kp[6, 1] = 0.5
    kp[9, 1] = 0.3 if raised else 0.7
    kp[10, 1] = 0.7
    kp[9, 2] = wrist_conf
    return kp


def to_yolo_input(kp: np.ndarray) -> np.ndarray:
    out = kp.copy()
    out[:, 0] = kp[:, 0] * POSE_IMAGE_W * 0.5
    out[:, 1] = kp[:, 1] * POSE_IMAGE_H * 0.5 + 40
    return out


PERSON_RAISED = person_keypoints(0.12, raised=True)
PERSON_DOWN = person_keypoints(0.75, raised=False)
PERSON_UNSURE = person_keypoints(0.5, raised=True, wrist_conf=0.3)


def planted_people() -> List[PlantedPerson]:
    return [
        PlantedPerson(100, 0.95, (80, 150, 100, 200), to_yolo_input(PERSON_RAISED)),
        PlantedPerson(101, 0.6, (84, 152, 100, 200), to_yolo_input(PERSON_RAISED)),  # duplicate
        PlantedPerson(1500, 0.7, (240, 150, 100, 200), to_yolo_input(PERSON_DOWN)),
        PlantedPerson(2000, 0.8, (160, 150, 40, 200), to_yolo_input(PERSON_UNSURE)),
        PlantedPerson(50, 0.2, (300, 300, 20, 20), to_yolo_input(PERSON_DOWN)),  # below threshold
    ]


@pytest.mark.parametrize("transposed", [False, True])
def test_yolo_pose_onnx_decodes_people_keypoints_and_raised_hands(tmp_path, transposed):
    path = yolo_pose_model(tmp_path / "pose.onnx", planted_people(), size=320, transposed=transposed)
    backend = YoloPoseBackend(path)
    poses = backend.detect(np.zeros((POSE_IMAGE_H, POSE_IMAGE_W, 3), np.uint8))
    assert [round(p.confidence, 2) for p in poses] == [0.95, 0.8, 0.7]
    assert [p.person_id for p in poses] == [0, 1, 2]
    assert [p.hand_raised for p in poses] == [True, False, False]
    for pose, expected in zip(poses, [PERSON_RAISED, PERSON_UNSURE, PERSON_DOWN]):
        assert len(pose.keypoints) == 17
        assert np.allclose(np.array(pose.keypoints), expected, atol=1e-4)


def test_yolo_pose_default_640_export_shape(tmp_path):
    people = [PlantedPerson(8000, 0.9, (320, 320, 200, 400), np.zeros((17, 3)))]
    people[0].keypoints[:, 0], people[0].keypoints[:, 1], people[0].keypoints[:, 2] = 320, 280, 0.8
    path = yolo_pose_model(tmp_path / "pose.onnx", people, size=640)
    poses = YoloPoseBackend(path).detect(np.zeros((480, 640, 3), np.uint8))  # 80 px bars top and bottom
    assert len(poses) == 1
    assert poses[0].keypoints[0] == pytest.approx((0.5, 200 / 480, 0.8), abs=1e-5)


def test_hand_raised_needs_a_confident_wrist_above_its_own_shoulder():
    base = person_keypoints(0.5, raised=False)
    assert not hand_raised(base.tolist())
    right = base.copy()
    right[10, 1] = 0.4
    assert hand_raised(right.tolist())
    right[6, 2] = 0.49  # shoulder not seen well enough
    assert not hand_raised(right.tolist())
    crossed = base.copy()
    crossed[9, 1] = 0.45  # left wrist above the right shoulder's height only counts for its own side
    crossed[5, 1] = 0.4
    assert not hand_raised(crossed.tolist())


def test_yolo_pose_missing_file_names_it_and_the_fallback(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        YoloPoseBackend(tmp_path / "yolov8n-pose.onnx")
    assert str(tmp_path / "yolov8n-pose.onnx") in str(err.value) and "MediaPipe Pose" in str(err.value)


def test_yolo_pose_corrupt_or_wrong_model_fails_at_construction(tmp_path):
    corrupt = tmp_path / "pose.onnx"
    corrupt.write_bytes(np.random.default_rng(2).bytes(1000))
    with pytest.raises(ModelLoadError, match="pose.onnx"):
        YoloPoseBackend(corrupt)
    wrong = constant_model(tmp_path / "wrong.onnx", [1, 3, 320, 320], [("out", np.zeros((1, 10, 100)))])
    with pytest.raises(ModelLoadError) as err:
        YoloPoseBackend(wrong)
    assert "wrong.onnx" in str(err.value) and "MediaPipe Pose" in str(err.value)
    other = tmp_path / "pose.tflite"
    other.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"\.onnx"):
        YoloPoseBackend(other)


def test_yolo_pose_pt_without_ultralytics_says_how_to_proceed(tmp_path, monkeypatch):
    weights = tmp_path / "yolov8n-pose.pt"
    weights.write_bytes(b"not really torch")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails as when not installed
    with pytest.raises(ModelLoadError) as err:
        YoloPoseBackend(weights)
    assert "pip install ultralytics" in str(err.value) and "format=onnx" in str(err.value)


class _FakeTensor:
    def __init__(self, value):
        self.value = np.asarray(value)

    def cpu(self):
        return self

    def numpy(self):
        return self.value


def test_yolo_pose_pt_runs_through_ultralytics(tmp_path, monkeypatch):
    weights = tmp_path / "yolov8n-pose.pt"
    weights.write_bytes(b"checkpoint")
    loaded: List[str] = []
    kp_px = np.stack([PERSON_DOWN, PERSON_RAISED]) * [POSE_IMAGE_W, POSE_IMAGE_H, 1]

    class FakeYOLO:
        def __init__(self, path):
            loaded.append(path)

        def predict(self, image, conf, iou, verbose):
            assert image.shape == (POSE_IMAGE_H, POSE_IMAGE_W, 3) and conf == 0.5 and not verbose
            result = types.SimpleNamespace(
                keypoints=types.SimpleNamespace(data=_FakeTensor(kp_px)),
                boxes=types.SimpleNamespace(conf=_FakeTensor([0.6, 0.9])),
            )
            return [result]

    fake = types.ModuleType("ultralytics")
    fake.YOLO = FakeYOLO
    monkeypatch.setitem(sys.modules, "ultralytics", fake)
    backend = YoloPoseBackend(weights)
    assert loaded == [str(weights)] and backend.provider == "ultralytics"
    poses = backend.detect(np.zeros((POSE_IMAGE_H, POSE_IMAGE_W, 3), np.uint8))
    assert [p.confidence for p in poses] == pytest.approx([0.9, 0.6])
    assert [p.hand_raised for p in poses] == [True, False]
    assert np.allclose(np.array(poses[0].keypoints), PERSON_RAISED, atol=1e-6)


# ---------------------------------------------------------------- expression


def colour_frame() -> np.ndarray:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[:, :100] = (0, 0, 255)  # red (BGR)
    frame[:, 100:200] = (255, 0, 0)  # blue
    frame[:, 200:] = (0, 255, 0)  # green
    return frame


RED_BOX, BLUE_BOX, GREEN_BOX = (10, 10, 90, 190), (110, 10, 190, 190), (210, 10, 290, 190)


def emotion_weights(classes) -> np.ndarray:
    weights = np.zeros((3, len(classes)), np.float32)
    weights[0, classes.index("Happiness")] = 4.0
    weights[2, classes.index("Neutral")] = 4.0
    weights[1, classes.index("Surprise")] = 4.0
    return weights


@pytest.mark.parametrize("classes,size", [(CLASSES_8, 224), (CLASSES_7, 260)])
def test_expression_intensity_is_the_happiness_probability(tmp_path, classes, size):
    path = expression_model(tmp_path / "emo.onnx", emotion_weights(classes), size=size)
    model = ExpressionModel(path)
    assert model.size == size and tuple(model.classes) == classes
    frame = colour_frame()
    assert model.intensity(frame, RED_BOX) > 0.9  # red crop reads as Happiness only if BGR became RGB
    assert model.intensity(frame, BLUE_BOX) < 0.1
    assert model.intensity(frame, GREEN_BOX) < 0.1
    probs = model.probabilities(frame, GREEN_BOX)
    assert list(probs) == list(classes) and sum(probs.values()) == pytest.approx(1.0)
    assert max(probs, key=probs.get) == "Surprise"
    assert ExpressionModel(path, include_surprise=True).intensity(frame, GREEN_BOX) > 0.9


def test_expression_crop_outside_the_image_is_a_clear_error(tmp_path):
    model = ExpressionModel(expression_model(tmp_path / "emo.onnx", emotion_weights(CLASSES_8)))
    with pytest.raises(ValueError, match="outside"):
        model.intensity(colour_frame(), (400, 10, 450, 60))


def test_expression_model_with_unknown_classes_fails_at_construction(tmp_path):
    path = expression_model(tmp_path / "emo5.onnx", np.zeros((3, 5), np.float32))
    with pytest.raises(ModelLoadError) as err:
        ExpressionModel(path)
    assert "emo5.onnx" in str(err.value) and "5 outputs" in str(err.value)


def test_expression_model_missing_or_found_in_the_model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMOMENT_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(ModelNotFoundError) as err:
        ExpressionModel("enet_b0_8_best_afew.onnx")
    assert str(tmp_path / "models" / "enet_b0_8_best_afew.onnx") in str(err.value)
    assert "MediaPipe" in str(err.value)
    expression_model(tmp_path / "models" / "enet_b0_8_best_afew.onnx", emotion_weights(CLASSES_8))
    model = ExpressionModel("enet_b0_8_best_afew.onnx")
    assert model.path == tmp_path / "models" / "enet_b0_8_best_afew.onnx"


# ---------------------------------------------------------------- real models, when installed


def _astronaut_bgr() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def test_real_insightface_pack_when_installed():
    pack = model_dir("insightface") / "buffalo_l"
    if not (pack / "det_10g.onnx").is_file():
        pytest.skip(f"no InsightFace buffalo_l pack at {pack} (weights are not shipped)")
    faces = InsightFaceFaceBackend("buffalo_l").detect(_astronaut_bgr())
    assert faces and faces[0].confidence > 0.5 and abs(faces[0].yaw) < 45


def test_real_yolo_pose_when_installed():
    path = model_dir() / "yolov8n-pose.onnx"
    if not path.is_file():
        pytest.skip(f"no YOLOv8-pose export at {path} (weights are not shipped)")
    poses = YoloPoseBackend(path).detect(_astronaut_bgr())
    assert poses and len(poses[0].keypoints) == 17


def test_real_expression_model_when_installed():
    path = model_dir() / "enet_b0_8_best_afew.onnx"
    if not path.is_file():
        pytest.skip(f"no HSEmotion model at {path} (weights are not shipped)")
    bgr = _astronaut_bgr()
    value = ExpressionModel(path).intensity(bgr, (170, 30, 300, 200))
    assert 0.0 <= value <= 1.0


def test_runtime_module_exports_the_error_types():
    assert issubclass(runtime.ModelNotFoundError, FileNotFoundError)
    assert issubclass(runtime.ModelLoadError, RuntimeError)
