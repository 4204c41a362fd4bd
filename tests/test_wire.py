"""The visualbase wire formats, checked against the documented layouts.

Frames are packed by the tests themselves with struct, so the decoder is checked
against the specification rather than against our own encoder.
"""

from __future__ import annotations

import re
import struct
from typing import Any, List

import numpy as np
import pytest
import zmq

from facemoment.core.config import SourceConfig
from connectors.zmq_source import ZmqFrameSource
from facemoment.core.records import FrameDrop, SourceSummary
from facemoment.core.types import Face, Frame, Hand, Observation, Pose, Trigger
from facemoment.formats.obs import format_obs, parse_obs
from facemoment.formats.wire import (
    HEADER,
    WireError,
    format_trig,
    format_trigger,
    pack_frame,
    parse_trig,
    split_text_parts,
    text_parts,
    unpack_frame,
)

from conftest import run_source, wait_until

SPEC_HEADER = "!QQIIB"


def spec_parts(frame_id: int, t_ns: int, image: np.ndarray) -> List[bytes]:
    """A frame message built straight from the protocol document."""
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    return [b"frame", struct.pack(SPEC_HEADER, frame_id, t_ns, w, h, c), image.tobytes()]




# ------------------------------------------------------------------ frame layout


def test_header_is_the_documented_25_bytes() -> None:
    assert HEADER.size == struct.calcsize(SPEC_HEADER) == 25
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert pack_frame(7, 123456789, image) == spec_parts(7, 123456789, image)
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert pack_frame(2**63, 2**64 - 1, grey) == spec_parts(2**63, 2**64 - 1, grey)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3)])
def test_unpack_reads_spec_messages_exactly(shape: tuple) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    frame_id, t_ns, decoded = unpack_frame(spec_parts(41, 987654321012, image))
    assert (frame_id, t_ns) == (41, 987654321012)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, image)
    # The default is a view: it must refuse writes rather than alter the message.
    with pytest.raises(ValueError):
        decoded[0, 0] = 1
    _, _, owned = unpack_frame(spec_parts(41, 1, image), copy=True)
    owned[0, 0] = 255 - owned[0, 0]  # owned arrays are writable
    assert not np.array_equal(owned, image)


def test_unpack_view_over_a_writable_buffer_is_read_only() -> None:
    image = np.zeros((2, 2), np.uint8)
    parts = spec_parts(0, 0, image)
    payload = bytearray(parts[2])
    _, _, decoded = unpack_frame([parts[0], parts[1], payload])
    with pytest.raises(ValueError):
        decoded[0, 0] = 9
    assert payload == bytearray(4)


@pytest.mark.parametrize(
    "parts, kind",
    [
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 1)], "part_count"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 1), b"\0" * 4, b"x"], "part_count"),
        ([b"frames", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 1), b"\0" * 4], "topic"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 1)[:24], b"\0" * 4], "short_header"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 1), b"\0" * 5], "payload_size"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 0, 2, 1), b""], "dimensions"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 0, 3), b""], "dimensions"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 20000, 1, 1), b"\0" * 20000], "dimensions"),
        ([b"frame", struct.pack(SPEC_HEADER, 0, 0, 2, 2, 2), b"\0" * 8], "dimensions"),
    ],
)
def test_unpack_names_each_defect(parts: list, kind: str) -> None:
    with pytest.raises(WireError) as info:
        unpack_frame(parts)
    assert info.value.kind == kind


# ---------------------------------------------- through a real subscriber dataflow


def _through_the_source(sent: List[Any]) -> List[Any]:
    """What a ZmqFrameSource in a dataflow emits for `sent` (frame_id, t_ns, image),
    published one at a time by a spec publisher."""
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
    out: List[Any] = []

    def publish() -> None:
        assert pub.poll(10_000), "the source never subscribed"
        assert pub.recv() == b"\x01frame"
        for n, (frame_id, t_ns, image) in enumerate(sent, start=1):
            pub.send_multipart(spec_parts(frame_id, t_ns, image), copy=False)
            assert wait_until(lambda: sum(isinstance(x, Frame) for x in out) >= n)

    source = ZmqFrameSource(endpoint, "camX", SourceConfig(idle_timeout_s=1.0, buffer_frames=0))
    try:
        run_source(source, publish, out)
    finally:
        pub.close(linger=0)
        context.term()
    return out


def test_zmq_source_frames_keep_their_pixels_while_later_messages_arrive() -> None:
    """Frames are views over ZeroMQ's own message buffers (no copy per frame); frames
    large enough for ZeroMQ to hand over without copying keep their pixels while the
    frames after them arrive, as long as anything holds them."""
    rng = np.random.default_rng(11)
    sent = [(i, 1_700_000_000_000_000_000 + i * 33_333_333, rng.integers(0, 256, (240, 320, 3), np.uint8))
            for i in range(40)]
    frames = [x for x in _through_the_source(sent) if isinstance(x, Frame)]
    assert [f.frame_id for f in frames] == [i for i, _, _ in sent]
    for frame, (_, _, image) in zip(frames, sent):
        assert not frame.image.flags.owndata and not frame.image.flags.writeable
        assert np.array_equal(frame.image, image)


def test_zmq_source_decodes_spec_frames_bit_exactly() -> None:
    rng = np.random.default_rng(7)
    sent = []
    for i in range(12):
        shape = (6, 8) if i % 2 else (6, 8, 3)
        sent.append((i * 3 + 5, 1_700_000_000_000_000_000 + i * 33_333_333, rng.integers(0, 256, shape, np.uint8)))
    out = _through_the_source(sent)
    frames = [x for x in out if isinstance(x, Frame)]
    assert len(frames) == len(sent)
    for frame, (frame_id, t_ns, image) in zip(frames, sent):
        assert frame.stream_id == "camX"
        assert (frame.frame_id, frame.t_src_ns) == (frame_id, t_ns)
        assert frame.image.shape == image.shape
        assert np.array_equal(frame.image, image)
        assert not frame.image.flags.writeable  # a view over the message: nothing may write into it
    # Ids went up by 3: those gaps are reported as frames lost on the wire.
    gaps = [x for x in out if isinstance(x, FrameDrop)]
    assert sorted(i for g in gaps for i in g.dropped_frame_ids) == sorted(
        i for k in range(len(sent) - 1) for i in (sent[k][0] + 1, sent[k][0] + 2)
    )
    assert isinstance(out[-1], SourceSummary) and out[-1].end_reason == "idle_timeout"


# -------------------------------------------------------------------------- TRIG

# Written from the protocol document: kind word, then key=value pairs in this order.
TRIG_RE = re.compile(
    r"^TRIG label=(?P<label>\S+) t_start_ns=(?P<start>\d+) t_end_ns=(?P<end>\d+) "
    r"faces=(?P<faces>\d+) score=(?P<score>\d+\.\d{3}) reason=(?P<reason>\S+)$"
)


def test_trig_matches_the_documented_example() -> None:
    text = format_trig("highlight", 1234567890, 1239567890, 2, 0.85, "expression_spike")
    assert text == (
        "TRIG label=highlight t_start_ns=1234567890 t_end_ns=1239567890 faces=2 score=0.850 reason=expression_spike"
    )


@pytest.mark.parametrize(
    "label, start, end, faces, score, reason",
    [
        ("highlight", 0, 4_000_000_000, 1, 1.0, "head_turn"),
        ("highlight", 1_700_000_000_123_456_789, 1_700_000_004_123_456_789, 2, 0.12345, "gesture_vsign"),
        ("best", 5, 6, 0, 0.0, "camera_gaze"),
    ],
)
def test_trig_parses_with_an_independent_grammar(label, start, end, faces, score, reason) -> None:
    text = format_trig(label, start, end, faces, score, reason)
    match = TRIG_RE.match(text)
    assert match, text
    assert match["label"] == label and match["reason"] == reason
    assert (int(match["start"]), int(match["end"]), int(match["faces"])) == (start, end, faces)
    assert match["score"] == f"{score:.3f}"
    assert parse_trig(text) == {
        "label": label,
        "t_start_ns": start,
        "t_end_ns": end,
        "faces": faces,
        "score": round(score, 3),
        "reason": reason,
    }


def test_format_trigger_uses_the_clip_span() -> None:
    trigger = Trigger(
        stream_id="cam0", frame_id=90, t_ns=3_000_000_000, event_t_ns=2_900_000_000,
        reason="hand_wave", score=0.7777, pre_sec=2.0, post_sec=2.0, face_count=1,
    )
    match = TRIG_RE.match(format_trigger(trigger))
    assert match
    assert int(match["start"]) == 900_000_000 and int(match["end"]) == 4_900_000_000
    assert match["score"] == "0.778" and match["faces"] == "1" and match["reason"] == "hand_wave"


def test_parse_trig_reads_any_order_and_ignores_unknown_keys() -> None:
    parsed = parse_trig("TRIG reason=head_turn extra=1 score=0.5 faces=1 t_end_ns=20 t_start_ns=10 label=x")
    assert parsed == {"label": "x", "t_start_ns": 10, "t_end_ns": 20, "faces": 1, "score": 0.5, "reason": "head_turn"}


@pytest.mark.parametrize(
    "text",
    [
        "OBS label=x t_start_ns=1 t_end_ns=2",
        "TRIG label=x t_end_ns=2",
        "TRIG t_start_ns=abc t_end_ns=2",
        "TRIG t_start_ns=1 t_end_ns=2 score=nan",
        "TRIG t_start_ns=5 t_end_ns=2",
        "",
    ],
)
def test_parse_trig_rejects_malformed_text(text: str) -> None:
    with pytest.raises(WireError) as info:
        parse_trig(text)
    assert info.value.kind == "text"


def test_format_trig_refuses_values_that_would_break_the_line() -> None:
    with pytest.raises(WireError):
        format_trig("two words", 0, 1, 1, 0.5, "x")
    with pytest.raises(WireError):
        format_trig("x", 0, 1, 1, 0.5, "a=b")


def test_text_parts_are_topic_and_utf8() -> None:
    parts = text_parts("TRIG label=x t_start_ns=1 t_end_ns=2")
    assert parts == [b"msg", b"TRIG label=x t_start_ns=1 t_end_ns=2"]
    assert split_text_parts(parts) == (b"msg", "TRIG label=x t_start_ns=1 t_end_ns=2")
    assert text_parts("OBS src=face", topic=b"obs")[0] == b"obs"
    with pytest.raises(WireError):
        split_text_parts([b"msg"])


# --------------------------------------------------------------------------- OBS


def test_face_obs_matches_the_documented_example() -> None:
    obs = Observation(
        source="face", stream_id="cam0", frame_id=1234, t_ns=1234567890,
        faces=[
            Face(0, 0.95, (0.1, 0.1, 0.2, 0.2), yaw=12.0, pitch=-3.0, expression=0.8),
            Face(1, 0.9, (0.6, 0.2, 0.15, 0.25), expression=0.1),
        ],
    )
    assert format_obs(obs) == (
        "OBS src=face frame=1234 t_ns=1234567890 faces=2 "
        "f0=id:0,conf:0.950,x:0.1000,y:0.1000,w:0.2000,h:0.2000,expr:0.800,yaw:12.0,pitch:-3.0 "
        "f1=id:1,conf:0.900,x:0.6000,y:0.2000,w:0.1500,h:0.2500,expr:0.100"
    )


def test_face_obs_round_trips() -> None:
    obs = Observation(
        source="face", stream_id="cam0", frame_id=77, t_ns=2_000_000_123,
        faces=[Face(3, 0.8123, (0.12345, 0.5, 0.25, 0.3), yaw=-20.26, pitch=0.0, expression=0.4567)],
    )
    back = parse_obs(format_obs(obs), stream_id="cam0")
    assert (back.source, back.stream_id, back.frame_id, back.t_ns) == ("face", "cam0", 77, 2_000_000_123)
    (face,) = back.faces
    assert face.face_id == 3
    assert face.confidence == pytest.approx(0.812)
    assert face.bbox == pytest.approx((0.1235, 0.5, 0.25, 0.3))
    assert face.yaw == pytest.approx(-20.3) and face.pitch == 0.0
    assert face.expression == pytest.approx(0.457)
    empty = parse_obs("OBS src=face frame=1 t_ns=2 faces=0")
    assert empty.faces == [] and empty.stream_id == ""


def test_face_obs_writes_the_angle_pair_as_visualbase_does() -> None:
    def text(yaw: float, pitch: float) -> str:
        obs = Observation("face", "", 1, 2, faces=[Face(0, 0.9, (0.1, 0.1, 0.2, 0.2), yaw=yaw, pitch=pitch)])
        return format_obs(obs).split(",expr:0.000")[1]

    # Both angles go out together when either is non-zero before rounding.
    assert text(-0.04, 0.0) == ",yaw:-0.0,pitch:0.0"
    assert text(0.0, 3.0) == ",yaw:0.0,pitch:3.0"
    assert text(12.0, -3.0) == ",yaw:12.0,pitch:-3.0"
    # Zero (negative zero included, as -0.0 != 0 is false) leaves both out.
    assert text(0.0, 0.0) == "" and text(-0.0, -0.0) == ""
    back = parse_obs(format_obs(Observation("face", "", 1, 2, faces=[Face(0, 0.9, (0.1, 0.1, 0.2, 0.2), yaw=-0.04)])))
    assert back.faces[0].yaw == 0.0 and back.faces[0].pitch == 0.0


def test_pose_obs_matches_the_spec_and_round_trips() -> None:
    obs = Observation(
        source="pose", stream_id="cam0", frame_id=1234, t_ns=1234567890,
        poses=[Pose(0, 0.91, [], hand_raised=True), Pose(4, 0.5, [], hand_raised=False)],
        signals={"p0_hw": 0.0, "p0_wc": 3.0, "p1_hw": 0.8},
    )
    text = format_obs(obs)
    assert text == (
        "OBS src=pose frame=1234 t_ns=1234567890 poses=2 p0=id:0,conf:0.910,hr:1,hw:0,wc:3 "
        "p1=id:4,conf:0.500,hr:0,hw:1"  # visualbase writes wc only when it is > 0
    )
    back = parse_obs(text)
    assert [(p.person_id, p.hand_raised) for p in back.poses] == [(0, True), (4, False)]
    assert back.poses[0].confidence == pytest.approx(0.91)
    assert back.signals == {"p0_hw": 0.0, "p0_wc": 3.0, "p1_hw": 1.0, "p1_wc": 0.0}


def test_quality_obs_writes_contrast_on_the_0_1_scale() -> None:
    obs = Observation(
        source="quality", stream_id="cam0", frame_id=1234, t_ns=1234567890,
        signals={"blur": 152.34, "brightness": 120.5, "contrast": 0.412 * 255, "quality_gate": 1.0},
    )
    text = format_obs(obs)
    assert text == "OBS src=quality frame=1234 t_ns=1234567890 blur:152.3,bright:120.5,contrast:0.412,gate:1"
    back = parse_obs(text)
    assert back.signals["blur"] == pytest.approx(152.3)
    assert back.signals["brightness"] == pytest.approx(120.5)
    assert back.signals["contrast"] == pytest.approx(0.412 * 255)
    assert back.signals["quality_gate"] == 1.0
    closed = parse_obs(format_obs(Observation("quality", "", 1, 2, signals={"contrast": 10.0})))
    assert closed.signals["quality_gate"] == 0.0
    assert closed.signals["contrast"] == pytest.approx(round(10 / 255, 3) * 255)


def test_gesture_obs_round_trips() -> None:
    obs = Observation(
        source="gesture", stream_id="cam1", frame_id=5, t_ns=6,
        hands=[
            Hand(0, 0.93, "Right", [], gesture="v_sign", gesture_confidence=0.837),
            Hand(1, 0.7, "Left", [], gesture="none", gesture_confidence=0.0),
        ],
    )
    text = format_obs(obs)
    assert text == (
        "OBS src=gesture frame=5 t_ns=6 hands=2 h0=id:0,conf:0.930,side:R,g:v_sign,gc:0.837 "
        "h1=id:1,conf:0.700,side:L,g:none,gc:0.000"
    )
    back = parse_obs(text, stream_id="cam1")
    assert [(h.hand_id, h.handedness, h.gesture) for h in back.hands] == [(0, "Right", "v_sign"), (1, "Left", "none")]
    assert back.hands[0].gesture_confidence == pytest.approx(0.837)
    assert back.hands[0].confidence == pytest.approx(0.93)


def test_parse_obs_ignores_unknown_keys_and_rejects_broken_lines() -> None:
    back = parse_obs("OBS extra=1 t_ns=9 src=face frame=3 faces=1 f0=id:2,conf:0.5,x:0,y:0,w:1,h:1,expr:0,z:9")
    assert back.frame_id == 3 and back.t_ns == 9 and back.faces[0].face_id == 2
    for text in (
        "TRIG src=face frame=1 t_ns=1",
        "OBS frame=1 t_ns=1",
        "OBS src=face frame=x t_ns=1 faces=0",
        "OBS src=face frame=1 t_ns=1 faces=1",
        "OBS src=face frame=1 t_ns=1 faces=1 f0=id:0,conf",
        "OBS src=quality frame=1 t_ns=1",
    ):
        with pytest.raises(WireError):
            parse_obs(text)
