"""The visualbase wire formats: frame messages, TRIG and OBS text messages.

Every layout here is fixed by the existing visualbase program
(/work/shared/spec/visualbase-protocol.md); change nothing about the bytes.

Frames travel as a 3-part ZeroMQ multipart message::

    [b"frame", struct.pack("!QQIIB", frame_id, t_src_ns, width, height, channels), pixels]

Text messages are one ASCII line, a kind word followed by ``key=value`` pairs, sent
over ZeroMQ as ``[topic, utf-8 text]`` (see :func:`text_parts`).

Choices this module makes where the spec is silent:

- :func:`unpack_frame` returns a read-only view over the payload by default (no
  copy).  Writing into it raises instead of corrupting a buffer someone else
  owns; pass ``copy=True`` for an owned, writable array.
- OBS pose: ``hw`` (hand wave, 0/1) and ``wc`` (wave count) are read from
  ``obs.signals["p{i}_hw"]`` / ``["p{i}_wc"]`` where ``i`` is the pose's position in
  ``obs.poses`` (the same ``i`` as the ``p{i}=`` key); missing keys are written as 0,
  a wave score counts as a wave when it is above 0.5.  Parsing always sets both keys.
- OBS quality: the signals are ``blur``, ``brightness``, ``contrast`` (grey std,
  0-255) and ``quality_gate`` (0/1).  visualbase writes contrast on a 0-1 scale, so
  it is written as ``contrast/255`` with 3 decimals and multiplied by 255 when
  parsed.
- OBS gesture: hands as ``h{i}=id:..,conf:..,side:L|R,g:<gesture>,gc:<conf>``.
- Text errors raise :class:`WireError` with kind ``"text"``.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from facemoment.core.types import Face, Hand, Observation, Pose, Trigger

FRAME_TOPIC = b"frame"
MSG_TOPIC = b"msg"
HEADER = struct.Struct("!QQIIB")  # frame_id, t_src_ns, width, height, channels
MAX_DIMENSION = 16384
VALID_CHANNELS = (1, 3)

# The kinds a frame message can be malformed in; sources count them by these names.
FRAME_ERROR_KINDS = ("part_count", "topic", "short_header", "payload_size", "dimensions", "too_large")
TEXT_ERROR = "text"


class WireError(ValueError):
    """A message that does not follow the wire format; ``kind`` names the defect."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


# --------------------------------------------------------------------------- frames


def pack_frame(frame_id: int, t_src_ns: int, image: np.ndarray) -> List[bytes]:
    """Build the 3 parts of a frame message from a uint8 grey or BGR image."""
    if image.dtype != np.uint8:
        raise ValueError(f"frame images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        channels = 1
    elif image.ndim == 3 and image.shape[2] in VALID_CHANNELS:
        channels = int(image.shape[2])
    else:
        raise ValueError(f"frame images must be (h, w) or (h, w, 3), got shape {image.shape}")
    height, width = int(image.shape[0]), int(image.shape[1])
    header = HEADER.pack(int(frame_id), int(t_src_ns), width, height, channels)
    return [FRAME_TOPIC, header, np.ascontiguousarray(image).tobytes()]


def _as_buffer(part: Any) -> memoryview:
    # Accepts bytes, bytearray, memoryview and zmq.Frame (which exposes .buffer).
    buffer = getattr(part, "buffer", part)
    return memoryview(buffer)


def unpack_header(parts: Sequence[Any], max_payload: Optional[int] = None) -> Tuple[int, int, int, int, int]:
    """Validate a frame message without touching its pixels.

    Returns ``(frame_id, t_src_ns, width, height, channels)``; raises
    :class:`WireError` for every defect :func:`unpack_frame` rejects, and with kind
    ``too_large`` for a payload over ``max_payload`` bytes.
    """
    if len(parts) != 3:
        raise WireError("part_count", f"expected 3 parts, got {len(parts)}")
    topic = _as_buffer(parts[0]).tobytes()
    if topic != FRAME_TOPIC:
        raise WireError("topic", f"expected topic {FRAME_TOPIC!r}, got {topic[:32]!r}")
    header = _as_buffer(parts[1])
    if header.nbytes != HEADER.size:
        # visualbase unpacks exactly 25 bytes; longer headers are as unusable as short ones.
        raise WireError("short_header", f"header is {header.nbytes} bytes, expected {HEADER.size}")
    frame_id, t_src_ns, width, height, channels = HEADER.unpack(header)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION) or channels not in VALID_CHANNELS:
        raise WireError(
            "dimensions",
            f"unusable dimensions width={width} height={height} channels={channels}",
        )
    expected = width * height * channels
    if max_payload is not None and expected > max_payload:
        raise WireError("too_large", f"{width}x{height}x{channels} needs {expected} bytes, the limit is {max_payload}")
    payload = _as_buffer(parts[2])
    if payload.nbytes != expected:
        raise WireError(
            "payload_size",
            f"payload is {payload.nbytes} bytes, {width}x{height}x{channels} needs {expected}",
        )
    return int(frame_id), int(t_src_ns), width, height, channels


def unpack_frame(parts: Sequence[Any], copy: bool = False, max_payload: Optional[int] = None) -> Tuple[int, int, np.ndarray]:
    """Decode a frame message into ``(frame_id, t_src_ns, image)``.

    The image is a read-only view over the payload unless ``copy`` is true, in
    which case it is an owned, writable array.  Raises :class:`WireError`.
    """
    frame_id, t_src_ns, width, height, channels = unpack_header(parts, max_payload)
    payload = _as_buffer(parts[2])
    flat = np.frombuffer(payload, dtype=np.uint8)
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = flat.reshape(shape)
    if copy:
        image = image.copy()
    elif image.flags.writeable:
        # A view over a writable buffer (bytearray) must not be used to write into it.
        image.flags.writeable = False
    return int(frame_id), int(t_src_ns), image


# ------------------------------------------------------------------ text messages


def text_parts(text: str, topic: bytes = MSG_TOPIC) -> List[bytes]:
    """The 2-part ZeroMQ message carrying one text message."""
    return [topic, text.encode("utf-8")]


def split_text_parts(parts: Sequence[Any]) -> Tuple[bytes, str]:
    """Inverse of :func:`text_parts`: ``(topic, text)``."""
    if len(parts) != 2:
        raise WireError(TEXT_ERROR, f"text messages have 2 parts, got {len(parts)}")
    try:
        text = _as_buffer(parts[1]).tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(TEXT_ERROR, f"text message is not utf-8: {exc}") from exc
    return _as_buffer(parts[0]).tobytes(), text


def _check_value(name: str, value: str) -> str:
    if not value or any(c.isspace() for c in value) or "=" in value:
        raise WireError(TEXT_ERROR, f"{name} {value!r} must be a non-empty word without spaces or '='")
    return value


def _split_message(text: str, kind: str) -> Tuple[Dict[str, str], List[str]]:
    """Split ``KIND k=v k=v bare`` into the keyed pairs and the bare tokens."""
    tokens = text.strip().split()
    if not tokens or tokens[0] != kind:
        raise WireError(TEXT_ERROR, f"expected a {kind} message, got {text[:80]!r}")
    pairs: Dict[str, str] = {}
    bare: List[str] = []
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if sep:
            if not key:
                raise WireError(TEXT_ERROR, f"empty key in {token!r}")
            pairs[key] = value
        else:
            bare.append(token)
    return pairs, bare


def _typed(value: str, kind: type, where: str) -> Any:
    try:
        result = kind(value)
    except (TypeError, ValueError) as exc:
        raise WireError(TEXT_ERROR, f"{where}: {value!r} is not a valid {kind.__name__}") from exc
    if kind is float and not math.isfinite(result):
        raise WireError(TEXT_ERROR, f"{where}: {value!r} is not a finite number")
    return result


def _required(pairs: Mapping[str, str], key: str, kind: type, what: str) -> Any:
    if key not in pairs:
        raise WireError(TEXT_ERROR, f"{what} lacks {key}=")
    return _typed(pairs[key], kind, f"{what} {key}")


# -------------------------------------------------------------------------- TRIG


def format_trig(label: str, t_start_ns: int, t_end_ns: int, faces: int, score: float, reason: str) -> str:
    """``TRIG label=.. t_start_ns=.. t_end_ns=.. faces=.. score=0.850 reason=..``"""
    return (
        f"TRIG label={_check_value('label', label)} t_start_ns={int(t_start_ns)} "
        f"t_end_ns={int(t_end_ns)} faces={int(faces)} score={float(score):.3f} "
        f"reason={_check_value('reason', reason)}"
    )


def format_trigger(trigger: Trigger) -> str:
    return format_trig(
        trigger.label, trigger.t_start_ns, trigger.t_end_ns, trigger.face_count, trigger.score, trigger.reason
    )


def parse_trig(text: str) -> Dict[str, Any]:
    """Read a TRIG line in any key order, ignoring unknown keys.

    ``t_start_ns`` and ``t_end_ns`` are required; the other fields default to
    label "highlight", faces 0, score 0.0, reason "".
    """
    pairs, _ = _split_message(text, "TRIG")
    result = {
        "label": pairs.get("label", "highlight"),
        "t_start_ns": _required(pairs, "t_start_ns", int, "TRIG"),
        "t_end_ns": _required(pairs, "t_end_ns", int, "TRIG"),
        "faces": _typed(pairs.get("faces", "0"), int, "TRIG faces"),
        "score": _typed(pairs.get("score", "0"), float, "TRIG score"),
        "reason": pairs.get("reason", ""),
    }
    if result["t_end_ns"] < result["t_start_ns"]:
        raise WireError(TEXT_ERROR, f"TRIG ends before it starts: {text[:120]!r}")
    return result


# --------------------------------------------------------------------------- OBS


def _attrs(value: str, where: str) -> Dict[str, str]:
    """``id:0,conf:0.950`` -> {"id": "0", "conf": "0.950"}"""
    out: Dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition(":")
        if not sep or not key:
            raise WireError(TEXT_ERROR, f"{where}: {item!r} is not key:value")
        out[key] = val
    return out


def _attr(attrs: Mapping[str, str], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in attrs:
        if default is not None:
            return default
        raise WireError(TEXT_ERROR, f"{where} lacks {key}:")
    return _typed(attrs[key], kind, f"{where} {key}")


def _indexed(pairs: Mapping[str, str], prefix: str, count: int, what: str) -> List[Dict[str, str]]:
    entries = []
    for i in range(count):
        key = f"{prefix}{i}"
        if key not in pairs:
            raise WireError(TEXT_ERROR, f"OBS {what} announces {count} entries but lacks {key}=")
        entries.append(_attrs(pairs[key], f"OBS {key}"))
    return entries


def _face_text(i: int, face: Face) -> str:
    x, y, w, h = face.bbox
    text = (
        f"f{i}=id:{int(face.face_id)},conf:{face.confidence:.3f},x:{x:.4f},y:{y:.4f},"
        f"w:{w:.4f},h:{h:.4f},expr:{face.expression:.3f}"
    )
    # visualbase omits zero angles; judge "zero" at the written precision.
    if round(face.yaw, 1) != 0:
        text += f",yaw:{face.yaw:.1f}"
    if round(face.pitch, 1) != 0:
        text += f",pitch:{face.pitch:.1f}"
    return text


def _wave_flag(value: float) -> int:
    return 1 if float(value) > 0.5 else 0


def _pose_text(i: int, pose: Pose, signals: Mapping[str, float]) -> str:
    hw = _wave_flag(signals.get(f"p{i}_hw", 0.0))
    wc = int(signals.get(f"p{i}_wc", 0))
    return f"p{i}=id:{int(pose.person_id)},conf:{pose.confidence:.3f},hr:{int(bool(pose.hand_raised))},hw:{hw},wc:{wc}"


def _hand_text(i: int, hand: Hand) -> str:
    side = {"left": "L", "right": "R"}.get(hand.handedness.lower(), "U")
    gesture = hand.gesture or "none"
    _check_value("gesture", gesture)
    return f"h{i}=id:{int(hand.hand_id)},conf:{hand.confidence:.3f},side:{side},g:{gesture},gc:{hand.gesture_confidence:.3f}"


def _signal(signals: Mapping[str, float], *names: str, default: float = 0.0) -> float:
    for name in names:
        if name in signals:
            return float(signals[name])
    return default


def format_obs(obs: Observation) -> str:
    """One observation as visualbase's OBS line (face, pose, quality, gesture).

    Other sources (e.g. the ``frame`` marker) are written as the bare header.
    """
    source = _check_value("src", obs.source)
    head = f"OBS src={source} frame={int(obs.frame_id)} t_ns={int(obs.t_ns)}"
    if source == "face":
        parts = [f"faces={len(obs.faces)}"] + [_face_text(i, f) for i, f in enumerate(obs.faces)]
    elif source == "pose":
        parts = [f"poses={len(obs.poses)}"] + [_pose_text(i, p, obs.signals) for i, p in enumerate(obs.poses)]
    elif source == "gesture":
        parts = [f"hands={len(obs.hands)}"] + [_hand_text(i, h) for i, h in enumerate(obs.hands)]
    elif source == "quality":
        s = obs.signals
        blur = _signal(s, "blur")
        bright = _signal(s, "brightness", "bright")
        contrast = _signal(s, "contrast") / 255.0
        gate = int(bool(_signal(s, "quality_gate", "gate")))
        parts = [f"blur:{blur:.1f},bright:{bright:.1f},contrast:{contrast:.3f},gate:{gate}"]
    else:
        parts = []
    return " ".join([head] + parts)


def _parse_face(attrs: Mapping[str, str], where: str) -> Face:
    return Face(
        face_id=_attr(attrs, "id", int, where),
        confidence=_attr(attrs, "conf", float, where),
        bbox=(
            _attr(attrs, "x", float, where),
            _attr(attrs, "y", float, where),
            _attr(attrs, "w", float, where),
            _attr(attrs, "h", float, where),
        ),
        yaw=_attr(attrs, "yaw", float, where, 0.0),
        pitch=_attr(attrs, "pitch", float, where, 0.0),
        expression=_attr(attrs, "expr", float, where, 0.0),
    )


def _parse_hand(attrs: Mapping[str, str], where: str) -> Hand:
    side = attrs.get("side", "U")
    return Hand(
        hand_id=_attr(attrs, "id", int, where),
        confidence=_attr(attrs, "conf", float, where),
        handedness={"L": "Left", "R": "Right"}.get(side, "Unknown"),
        landmarks=[],
        gesture=attrs.get("g", "none"),
        gesture_confidence=_attr(attrs, "gc", float, where, 0.0),
    )


def parse_obs(text: str, stream_id: str = "") -> Observation:
    """Read an OBS line back into an :class:`Observation` (only what the text carries)."""
    pairs, bare = _split_message(text, "OBS")
    source = pairs.get("src")
    if not source:
        raise WireError(TEXT_ERROR, "OBS lacks src=")
    obs = Observation(
        source=source,
        stream_id=stream_id,
        frame_id=_required(pairs, "frame", int, "OBS"),
        t_ns=_required(pairs, "t_ns", int, "OBS"),
    )
    if source == "face":
        count = _required(pairs, "faces", int, "OBS face")
        obs.faces = [_parse_face(a, f"OBS f{i}") for i, a in enumerate(_indexed(pairs, "f", count, "face"))]
    elif source == "pose":
        count = _required(pairs, "poses", int, "OBS pose")
        for i, attrs in enumerate(_indexed(pairs, "p", count, "pose")):
            where = f"OBS p{i}"
            obs.poses.append(
                Pose(
                    person_id=_attr(attrs, "id", int, where),
                    confidence=_attr(attrs, "conf", float, where),
                    keypoints=[],
                    hand_raised=bool(_attr(attrs, "hr", int, where, 0)),
                )
            )
            obs.signals[f"p{i}_hw"] = float(_attr(attrs, "hw", int, where, 0))
            obs.signals[f"p{i}_wc"] = float(_attr(attrs, "wc", int, where, 0))
    elif source == "gesture":
        count = _required(pairs, "hands", int, "OBS gesture")
        obs.hands = [_parse_hand(a, f"OBS h{i}") for i, a in enumerate(_indexed(pairs, "h", count, "gesture"))]
    elif source == "quality":
        if not bare:
            raise WireError(TEXT_ERROR, "OBS quality lacks its blur:..,bright:..,contrast:..,gate:.. values")
        attrs = _attrs(bare[0], "OBS quality")
        obs.signals = {
            "blur": _attr(attrs, "blur", float, "OBS quality"),
            "brightness": _attr(attrs, "bright", float, "OBS quality"),
            "contrast": _attr(attrs, "contrast", float, "OBS quality") * 255.0,
            "quality_gate": float(bool(_attr(attrs, "gate", int, "OBS quality"))),
        }
    return obs


__all__ = [
    "FRAME_TOPIC",
    "MSG_TOPIC",
    "HEADER",
    "MAX_DIMENSION",
    "FRAME_ERROR_KINDS",
    "WireError",
    "pack_frame",
    "unpack_frame",
    "unpack_header",
    "text_parts",
    "split_text_parts",
    "format_trig",
    "format_trigger",
    "parse_trig",
    "format_obs",
    "parse_obs",
]
