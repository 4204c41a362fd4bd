"""The visualbase wire formats: frame messages, TRIG and OBS text messages.

Every layout here is fixed by the existing visualbase program
(/work/shared/spec/visualbase-protocol.md); change nothing about the bytes.

Frames travel as a 3-part ZeroMQ multipart message::

    [b"frame", struct.pack("!QQIIB", frame_id, t_src_ns, width, height, channels), pixels]

Text messages are one ASCII line, a kind word followed by ``key=value`` pairs, sent
over ZeroMQ as ``[topic, utf-8 text]`` (see :func:`text_parts`). OBS messages have
a module of their own, facemoment.formats.obs.

Choices this module makes where the spec is silent:

- :func:`unpack_frame` returns a read-only view over the payload by default (no
  copy).  Writing into it raises instead of corrupting a buffer someone else
  owns; pass ``copy=True`` for an owned, writable array.
- Text errors raise :class:`WireError` with kind ``"text"``.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from facemoment.core.types import Trigger

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


def check_value(name: str, value: str) -> str:
    if not value or any(c.isspace() for c in value) or "=" in value:
        raise WireError(TEXT_ERROR, f"{name} {value!r} must be a non-empty word without spaces or '='")
    return value


def split_message(text: str, kind: str) -> Tuple[Dict[str, str], List[str]]:
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


def typed_value(value: str, kind: type, where: str) -> Any:
    try:
        result = kind(value)
    except (TypeError, ValueError) as exc:
        raise WireError(TEXT_ERROR, f"{where}: {value!r} is not a valid {kind.__name__}") from exc
    if kind is float and not math.isfinite(result):
        raise WireError(TEXT_ERROR, f"{where}: {value!r} is not a finite number")
    return result


def required_value(pairs: Mapping[str, str], key: str, kind: type, what: str) -> Any:
    if key not in pairs:
        raise WireError(TEXT_ERROR, f"{what} lacks {key}=")
    return typed_value(pairs[key], kind, f"{what} {key}")


# -------------------------------------------------------------------------- TRIG


def format_trig(label: str, t_start_ns: int, t_end_ns: int, faces: int, score: float, reason: str) -> str:
    """``TRIG label=.. t_start_ns=.. t_end_ns=.. faces=.. score=0.850 reason=..``"""
    return (
        f"TRIG label={check_value('label', label)} t_start_ns={int(t_start_ns)} "
        f"t_end_ns={int(t_end_ns)} faces={int(faces)} score={float(score):.3f} "
        f"reason={check_value('reason', reason)}"
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
    pairs, _ = split_message(text, "TRIG")
    result = {
        "label": pairs.get("label", "highlight"),
        "t_start_ns": required_value(pairs, "t_start_ns", int, "TRIG"),
        "t_end_ns": required_value(pairs, "t_end_ns", int, "TRIG"),
        "faces": typed_value(pairs.get("faces", "0"), int, "TRIG faces"),
        "score": typed_value(pairs.get("score", "0"), float, "TRIG score"),
        "reason": pairs.get("reason", ""),
    }
    if result["t_end_ns"] < result["t_start_ns"]:
        raise WireError(TEXT_ERROR, f"TRIG ends before it starts: {text[:120]!r}")
    return result


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
]
