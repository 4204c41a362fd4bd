"""Face extractor: real MediaPipe models on real portraits shipped in installed packages."""

from __future__ import annotations

import math

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from skimage import data
from skimage.transform import PiecewiseAffineTransform, warp

from facemoment.core.config import Config, ConfigError, ExtractConfig
from facemoment.core.types import Frame
from tests.conftest import astronaut_bgr
from operators.extraction import face as face_mod
from operators.extraction.common import Extractor
from operators.extraction.registry import build_extractor, check_backends
from operators.extraction.face import (
    FaceExtractor,
    MouthShape,
    box_inside,
    box_iou,
    center_distance,
    clip_box,
    expression_from_landmarks,
    expression_intensity,
    head_pose,
    pose_from_keypoints,
    rotation_from_angles,
)

FRAME_W, FRAME_H = 640, 480


# ---------------------------------------------------------------- images


def hopper_bgr() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def texture(seed: int = 0) -> np.ndarray:
    """A 640x480 procedural texture with no face in it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    base = 110 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 25 * np.sin((xx + yy) / 23.0)
    blotches = cv2.resize(rng.normal(0, 25, (FRAME_H // 8, FRAME_W // 8, 3)), (FRAME_W, FRAME_H))
    grain = rng.normal(0, 8, (FRAME_H, FRAME_W, 3))
    image = base[..., None] + blotches + grain + np.array([10, 0, -10])
    return np.clip(image, 0, 255).astype(np.uint8)


def pasted(image: np.ndarray, scale: float) -> tuple[np.ndarray, int, int, int, int]:
    """`image` scaled and pasted at the centre of the texture; returns (frame, x0, y0, crop_top, scaled_h)."""
    frame = texture()
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    top = max(0, (h - FRAME_H) // 2)  # 512 rows at 1.0x do not fit 480: cut equally
    small = small[top : top + FRAME_H]
    h = small.shape[0]
    y0, x0 = (FRAME_H - h) // 2, (FRAME_W - w) // 2
    frame[y0 : y0 + h, x0 : x0 + w] = small
    return frame, x0, y0, top, h


def frame_of(image, frame_id: int = 7) -> Frame:
    return Frame(stream_id="cam-test", frame_id=frame_id, t_src_ns=123_456_789 + frame_id, image=image)


def gaze_score(face) -> float:
    # moments.md camera_gaze score
    return max(0.0, 1 - abs(face.yaw) / 10) * max(0.0, 1 - abs(face.pitch) / 15)


def mesh_landmarks_px(image_bgr: np.ndarray) -> np.ndarray:
    """468 landmarks in pixels straight from MediaPipe, independent of the extractor's code."""
    from mediapipe.python.solutions import face_mesh

    h, w = image_bgr.shape[:2]
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        result = mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    assert result.multi_face_landmarks, "reference mesh found no face"
    return np.array([[p.x * w, p.y * h, p.z * w] for p in result.multi_face_landmarks[0].landmark])


def rendered_turn(image: np.ndarray, points: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Re-render the face as if the head turned: move the mesh in 3D, warp the texture along."""
    centre = points.mean(axis=0)
    moved = (points - centre) @ rotation_from_angles(yaw, pitch, 0.0).T + centre
    (x0, y0), (x1, y1) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    margin = 0.6 * max(x1 - x0, y1 - y0)
    left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
    right, bottom = int(min(image.shape[1], x1 + margin)), int(min(image.shape[0], y1 + margin))
    patch = image[top:bottom, left:right]
    h, w = patch.shape[:2]
    border = [(u, v) for u in np.linspace(0, w - 1, 6) for v in (0, h - 1)]
    border += [(u, v) for v in np.linspace(0, h - 1, 6) for u in (0, w - 1)]
    src = np.vstack([points[:, :2] - (left, top), border])
    dst = np.vstack([moved[:, :2] - (left, top), border])
    # Maps output pixels back to source pixels; `from_estimate` exists from scikit-image 0.26.
    if hasattr(PiecewiseAffineTransform, "from_estimate"):
        transform = PiecewiseAffineTransform.from_estimate(dst, src)
        assert transform, transform
    else:
        transform = PiecewiseAffineTransform()
        assert transform.estimate(dst, src)
    out = image.copy()
    out[top:bottom, left:right] = warp(patch, transform, output_shape=(h, w), preserve_range=True).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def extractor():
    ex = FaceExtractor(ExtractConfig())
    ex.load()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def astronaut_obs(extractor):
    return extractor.extract(frame_of(astronaut_bgr()))


# ---------------------------------------------------------------- real images


def test_astronaut_frontal_face(astronaut_obs):
    obs = astronaut_obs
    assert obs.error is None
    assert (obs.source, obs.stream_id, obs.frame_id, obs.t_ns) == ("face", "cam-test", 7, 123_456_796)
    assert obs.processing_ms > 0
    assert obs.signals["face_count"] == 1 and len(obs.faces) == 1
    face = obs.faces[0]
    assert face.face_id == 0
    assert face.confidence > 0.8
    # The face sits in the upper middle of the portrait.
    cx, cy = face.center
    assert 0.38 < cx < 0.52 and 0.15 < cy < 0.32
    assert 0.1 < face.bbox[2] < 0.3 and 0.1 < face.bbox[3] < 0.3
    assert abs(face.yaw) < 5 and abs(face.pitch) < 6 and abs(face.roll) < 8
    assert gaze_score(face) > 0.5
    assert face.inside_frame
    assert face.area_ratio == pytest.approx(face.bbox[2] * face.bbox[3])
    assert face.center_distance == pytest.approx(math.hypot(cx - 0.5, cy - 0.5))


def test_broad_smile_scores_above_slight_smile(extractor, astronaut_obs):
    hopper = extractor.extract(frame_of(hopper_bgr()))
    assert len(hopper.faces) == 1 and hopper.faces[0].confidence > 0.8
    broad, slight = astronaut_obs.faces[0].expression, hopper.faces[0].expression
    assert broad > 0.6
    assert slight < 0.3
    assert abs(hopper.faces[0].yaw) < 5 and abs(hopper.faces[0].pitch) < 6


def test_mirrored_image_mirrors_box_and_yaw(extractor, astronaut_obs):
    mirrored = extractor.extract(frame_of(astronaut_bgr()[:, ::-1].copy()))
    assert len(mirrored.faces) == 1
    a, m = astronaut_obs.faces[0], mirrored.faces[0]
    x, y, w, h = a.bbox
    assert m.bbox[0] == pytest.approx(1 - x - w, abs=0.03)
    assert m.bbox[1] == pytest.approx(y, abs=0.03)
    assert m.bbox[2] == pytest.approx(w, abs=0.03)
    assert a.yaw * m.yaw < 0 or (abs(a.yaw) < 3 and abs(m.yaw) < 3)
    assert a.roll * m.roll < 0 or (abs(a.roll) < 3 and abs(m.roll) < 3)
    assert m.pitch == pytest.approx(a.pitch, abs=3)
    assert m.expression == pytest.approx(a.expression, abs=0.1)


def test_rendered_head_turn_gives_signed_yaw_and_pitch(extractor):
    image = astronaut_bgr()
    points = mesh_landmarks_px(image)
    right = rendered_turn(image, points, yaw=25.0, pitch=0.0)
    turned = extractor.extract(frame_of(right)).faces
    assert len(turned) == 1 and turned[0].yaw > 10  # toward the image's right
    mirrored = extractor.extract(frame_of(right[:, ::-1].copy())).faces
    assert len(mirrored) == 1 and mirrored[0].yaw < -10
    up = extractor.extract(frame_of(rendered_turn(image, points, yaw=0.0, pitch=20.0))).faces
    assert len(up) == 1 and up[0].pitch > 10 and abs(up[0].yaw) < 6


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_face_pasted_on_texture_is_found_where_it_was_pasted(extractor, astronaut_obs, scale):
    frame, x0, y0, top, _ = pasted(astronaut_bgr(), scale)
    obs = extractor.extract(frame_of(frame))
    assert obs.error is None and len(obs.faces) == 1
    face = obs.faces[0]
    assert face.confidence > 0.7
    assert abs(face.yaw) < 5 and abs(face.pitch) < 6
    # Where the astronaut's face centre lands after scaling and pasting.
    acx, acy = astronaut_obs.faces[0].center
    expect_x = (x0 + acx * 512 * scale) / FRAME_W
    expect_y = (y0 + acy * 512 * scale - top) / FRAME_H
    assert face.center[0] == pytest.approx(expect_x, abs=0.03)
    assert face.center[1] == pytest.approx(expect_y, abs=0.04)
    # Same face, so its area in pixels scales with scale**2.
    area_px = face.area_ratio * FRAME_W * FRAME_H
    source_area_px = astronaut_obs.faces[0].area_ratio * 512 * 512
    assert area_px / source_area_px == pytest.approx(scale**2, rel=0.35)


def test_frames_without_faces(extractor):
    for image in (texture(), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)):
        obs = extractor.extract(frame_of(image))
        assert obs.error is None
        assert obs.faces == [] and obs.signals["face_count"] == 0


def test_two_faces_numbered_left_to_right_and_all_reported():
    frame = texture()
    left = cv2.resize(astronaut_bgr(), None, fx=0.55, fy=0.55, interpolation=cv2.INTER_AREA)
    right = cv2.resize(hopper_bgr(), None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)
    frame[40 : 40 + left.shape[0], 20 : 20 + left.shape[1]] = left
    frame[60 : 60 + right.shape[0], 620 - right.shape[1] : 620] = right
    for max_faces, meshed in ((2, 2), (1, 1)):
        ex = FaceExtractor(ExtractConfig(max_faces=max_faces))
        try:
            obs = ex.extract(frame_of(frame))
        finally:
            ex.close()
        assert obs.signals["face_count"] == 2, obs
        assert obs.signals["mesh_count"] == meshed
        assert [f.face_id for f in obs.faces] == [0, 1]
        assert obs.faces[0].bbox[0] < 0.5 < obs.faces[1].bbox[0]
    # With a mesh each, the astronaut's broad smile still outscores Grace Hopper's.
    ex = FaceExtractor(ExtractConfig(max_faces=2))
    try:
        faces = ex.extract(frame_of(frame)).faces
    finally:
        ex.close()
    assert faces[0].expression > faces[1].expression + 0.3


def test_grey_and_single_channel_frames(extractor):
    grey = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    for image in (grey, grey[:, :, None]):
        obs = extractor.extract(frame_of(image))
        assert obs.error is None and len(obs.faces) == 1
        assert obs.faces[0].confidence > 0.8


def test_results_do_not_depend_on_earlier_frames(extractor):
    scene = pasted(astronaut_bgr(), 0.6)[0]
    fresh = FaceExtractor(ExtractConfig())
    try:
        reference = fresh.extract(frame_of(scene)).faces[0]
    finally:
        fresh.close()
    # The shared extractor has already seen other frames; a different face just before.
    extractor.extract(frame_of(hopper_bgr()))
    again = extractor.extract(frame_of(scene)).faces[0]
    assert again.bbox == pytest.approx(reference.bbox, abs=1e-4)
    angles = (again.yaw, again.pitch, again.roll)
    assert angles == pytest.approx((reference.yaw, reference.pitch, reference.roll), abs=1e-2)
    assert again.expression == pytest.approx(reference.expression, abs=1e-3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "image, words",
    [
        (None, "no image"),
        (np.zeros((48, 64, 3), np.float32), "dtype"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        (np.zeros((48, 0), np.uint8), "empty"),
        (np.zeros((48, 64, 4), np.uint8), "4 channels"),
        (np.zeros(64, np.uint8), "shape"),
        ([[0, 1], [2, 3]], "not a numpy array"),
    ],
)
def test_bad_input_gives_error_observation(extractor, image, words):
    obs = extractor.extract(frame_of(image, frame_id=3))
    assert obs.error is not None and words in obs.error
    assert obs.faces == []
    assert (obs.source, obs.frame_id, obs.t_ns) == ("face", 3, 123_456_792)


def test_failing_graph_gives_error_observation(monkeypatch):
    ex = FaceExtractor(ExtractConfig())
    try:
        ex.load()

        def explode(image):
            raise RuntimeError("graph exploded")

        monkeypatch.setattr(ex._detector, "process", explode)
        obs = ex.extract(frame_of(astronaut_bgr()))
        assert obs.error is not None and "graph exploded" in obs.error and obs.faces == []
    finally:
        ex.close()


def test_unknown_backend_and_bad_max_faces_are_config_errors():
    with pytest.raises(ConfigError, match="face backend 'dlib'"):
        FaceExtractor(ExtractConfig(face_backend="dlib"))
    with pytest.raises(ConfigError, match="max_faces"):
        FaceExtractor(ExtractConfig(max_faces=0))


def test_registry_builds_the_configured_face_backend():
    cfg = Config()
    built = build_extractor("face", cfg)
    assert isinstance(built, FaceExtractor) and isinstance(built, Extractor)
    built.close()


def test_missing_insightface_pack_fails_at_start_up_naming_the_fallback(tmp_path):
    cfg = Config()
    cfg.extract.face_backend = "insightface"
    cfg.extract.insightface_root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="mediapipe"):
        check_backends(cfg)


# ---------------------------------------------------------------- geometry


def synthetic_face(mouth: MouthShape = MouthShape(0.55, 0.0, 0.0)) -> np.ndarray:
    """Landmarks (pixels) of a frontal face: only the points the geometry reads are placed."""
    pts = np.zeros((face_mod.MESH_POINTS, 3))
    eye = 60.0
    pts[face_mod.RIGHT_EYE_OUTER] = (-eye / 2, 0, 0)
    pts[face_mod.LEFT_EYE_OUTER] = (eye / 2, 0, 0)
    pts[face_mod.RIGHT_EYE_INNER] = (-eye / 6, 0, 0)
    pts[face_mod.LEFT_EYE_INNER] = (eye / 6, 0, 0)
    pts[face_mod.FOREHEAD] = (0, -40, 0)
    pts[face_mod.NOSE_BASE] = (0, 40, 0)
    lip_centre = 65.0
    corner_y = lip_centre - mouth.lift * eye
    pts[face_mod.MOUTH_RIGHT] = (-mouth.width * eye / 2, corner_y, 5)
    pts[face_mod.MOUTH_LEFT] = (mouth.width * eye / 2, corner_y, 5)
    pts[face_mod.UPPER_LIP_INNER] = (0, lip_centre - mouth.opening * eye / 2, 0)
    pts[face_mod.LOWER_LIP_INNER] = (0, lip_centre + mouth.opening * eye / 2, 0)
    pts[1] = (0, 20, -35)  # nose tip, in front of the face (toward the camera)
    return pts + (320.0, 240.0, 0.0)


def posed(points: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    centre = points[[face_mod.LEFT_EYE_OUTER, face_mod.RIGHT_EYE_OUTER, face_mod.NOSE_BASE]].mean(axis=0)
    return (points - centre) @ rotation_from_angles(yaw, pitch, roll).T + centre


@pytest.mark.parametrize(
    "angles", [(0, 0, 0), (30, 0, 0), (-20, 0, 0), (0, 15, 0), (0, -25, 0), (0, 0, 12), (25, -10, 8)]
)
def test_head_pose_recovers_known_rotation(angles):
    assert head_pose(posed(synthetic_face(), *angles)) == pytest.approx(angles, abs=1e-6)


def test_head_pose_sign_conventions():
    turned = posed(synthetic_face(), 30, 0, 0)
    # Yaw +: the nose tip (toward the camera) moves toward the image's right.
    assert turned[1, 0] > synthetic_face()[1, 0]
    up = posed(synthetic_face(), 0, 20, 0)
    assert up[1, 1] < synthetic_face()[1, 1]  # pitch +: the nose tip rises in the image
    # Mirroring: x flips and the subject's left and right landmarks swap.
    mirrored = turned.copy()
    mirrored[:, 0] = 640 - mirrored[:, 0]
    pairs = ((face_mod.LEFT_EYE_OUTER, face_mod.RIGHT_EYE_OUTER), (face_mod.LEFT_EYE_INNER, face_mod.RIGHT_EYE_INNER))
    for a, b in pairs:
        mirrored[[a, b]] = mirrored[[b, a]]
    yaw, pitch, roll = head_pose(mirrored)
    assert yaw == pytest.approx(-30, abs=1e-6) and pitch == pytest.approx(0, abs=1e-6)


def test_expression_on_synthetic_mouths():
    neutral = expression_from_landmarks(synthetic_face(MouthShape(0.55, 0.0, 0.0)))
    slight = expression_from_landmarks(synthetic_face(MouthShape(0.60, 0.02, 0.0)))
    broad = expression_from_landmarks(synthetic_face(MouthShape(0.75, 0.10, 0.15)))
    drooping = expression_from_landmarks(synthetic_face(MouthShape(0.55, -0.05, 0.0)))
    assert neutral < 0.05 and drooping < 0.05
    assert neutral < slight < broad
    assert broad > 0.8
    # The mouth is measured in the face's own axes: a turned head keeps its score.
    turned = posed(synthetic_face(MouthShape(0.75, 0.10, 0.15)), 25, -10, 15)
    assert expression_from_landmarks(turned) == pytest.approx(broad, abs=0.02)


def test_expression_intensity_stays_in_range():
    assert expression_intensity(MouthShape(0.2, -1.0, 0.0)) == 0.0
    assert expression_intensity(MouthShape(2.0, 1.0, 1.0)) == pytest.approx(1.0)


def test_pose_from_keypoints():
    eyes_nose_mouth = np.array([[300, 200], [340, 200], [320, 222], [320, 240], [280, 205], [360, 205]], float)
    yaw, pitch, roll = pose_from_keypoints(eyes_nose_mouth)
    assert abs(yaw) < 1e-6 and abs(roll) < 1e-6
    shifted = eyes_nose_mouth.copy()
    shifted[2, 0] += 10  # nose toward the image's right
    assert pose_from_keypoints(shifted)[0] > 15
    raised = eyes_nose_mouth.copy()
    raised[2, 1] -= 8  # nose higher between eyes and mouth
    assert pose_from_keypoints(raised)[1] > pitch + 10
    tilted = eyes_nose_mouth.copy()
    tilted[1, 1] += 10  # the image-right eye lower: top of the head toward the image's right
    assert pose_from_keypoints(tilted)[2] > 10


def test_box_helpers():
    assert box_iou((0, 0, 0.2, 0.2), (0, 0, 0.2, 0.2)) == pytest.approx(1.0)
    assert box_iou((0, 0, 0.2, 0.2), (0.1, 0, 0.2, 0.2)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 0.1, 0.1), (0.5, 0.5, 0.1, 0.1)) == 0.0
    assert clip_box((-0.1, 0.9, 0.3, 0.3)) == pytest.approx((0.0, 0.9, 0.2, 0.1))
    assert box_inside((0.2, 0.2, 0.3, 0.3)) and not box_inside((-0.05, 0.2, 0.3, 0.3))
    assert not box_inside((0.5, 0.5, 0.5, 0.2))
    assert center_distance((0.4, 0.4, 0.2, 0.2)) == pytest.approx(0.0)
    assert center_distance((0.0, 0.0, 0.2, 0.2)) == pytest.approx(math.hypot(0.4, 0.4))
