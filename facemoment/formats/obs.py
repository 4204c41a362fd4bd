"""OBS messages: one extractor's result for one frame, as visualbase's text.

The grammar is the spec's (shared/spec/visualbase-protocol.md); the helpers for
``key=value`` text come from facemoment.formats.wire.

Choices this module makes where the spec is silent:

- OBS pose: ``hw`` (hand wave, 0/1) and ``wc`` (wave count) are read from
  ``obs.signals["p{i}_hw"]`` / ``["p{i}_wc"]`` where ``i`` is the pose's position in
  ``obs.poses`` (the same ``i`` as the ``p{i}=`` key); missing keys are written as 0,
  a wave score counts as a wave when it is above 0.5.  Parsing always sets both keys.
- OBS quality: the signals are ``blur``, ``brightness``, ``contrast`` (grey std,
  0-255) and ``quality_gate`` (0/1).  visualbase writes contrast on a 0-1 scale, so
  it is written as ``contrast/255`` with 3 decimals and multiplied by 255 when
  parsed.
- OBS gesture: hands as ``h{i}=id:..,conf:..,side:L|R,g:<gesture>,gc:<conf>``.
- Extended OBS (``format_obs(obs, extended=True)``, what FaceMoment's own OBS
  publisher writes): the spec's text plus fields visualbase's parser ignores, so a
  remote fusion gets everything it uses, at full precision.  Top level:
  ``pub=<publisher>``, ``err=<word>`` (the extractor failed on this frame),
  ``ms=<processing ms>``.  Per face ``fx:`` conf~x~y~w~h~yaw~pitch~roll~expr~
  area_ratio~center_distance~inside_frame; per pose ``px:`` conf then the
  keypoints as x~y~c triples; per hand ``hx:`` conf~gesture_conf.  Values are
  Python's shortest exact float text joined by ``~``: no ``,``, ``:`` or space, so
  visualbase's ``key:value`` split still works.  When present they replace the
  rounded values on parsing.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from facemoment.core.types import Extracted, Face, FramePresence, Hand, Observation, Pose
from facemoment.formats.wire import TEXT_ERROR, WireError, check_value, required_value, split_message, typed_value


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
    return typed_value(attrs[key], kind, f"{where} {key}")


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
    # visualbase writes the pair together when either angle is non-zero (before
    # rounding), so a yaw of -0.04 travels as "yaw:-0.0,pitch:0.0".
    if face.yaw != 0 or face.pitch != 0:
        text += f",yaw:{face.yaw:.1f},pitch:{face.pitch:.1f}"
    return text


_WORD = re.compile(r"[^A-Za-z0-9_.-]+")


def _exact(*values: Any) -> str:
    return "~".join(repr(float(v)) for v in values)


def _face_extra(face: Face) -> str:
    x, y, w, h = face.bbox
    numbers = (face.confidence, x, y, w, h, face.yaw, face.pitch, face.roll, face.expression)
    return f",fx:{_exact(*numbers, face.area_ratio, face.center_distance)}~{int(bool(face.inside_frame))}"


def _pose_extra(pose: Pose) -> str:
    flat = [v for point in pose.keypoints for v in tuple(point)[:3]]
    return f",px:{_exact(pose.confidence, *flat)}"


def _hand_extra(hand: Hand) -> str:
    return f",hx:{_exact(hand.confidence, hand.gesture_confidence)}"


def word(text: str, limit: int = 120) -> str:
    """``text`` as one message word (letters, digits, ``_.-``)."""
    return _WORD.sub("_", text)[:limit] or "_"


def _wave_flag(value: float) -> int:
    return 1 if float(value) > 0.5 else 0


def _pose_text(i: int, pose: Pose, signals: Mapping[str, float]) -> str:
    hw = _wave_flag(signals.get(f"p{i}_hw", 0.0))
    wc = int(signals.get(f"p{i}_wc", 0))
    text = f"p{i}=id:{int(pose.person_id)},conf:{pose.confidence:.3f},hr:{int(bool(pose.hand_raised))},hw:{hw}"
    if wc > 0:  # visualbase writes the wave count only when there is one
        text += f",wc:{wc}"
    return text


def _hand_text(i: int, hand: Hand) -> str:
    side = {"left": "L", "right": "R"}.get(hand.handedness.lower(), "U")
    gesture = hand.gesture or "none"
    check_value("gesture", gesture)
    return f"h{i}=id:{int(hand.hand_id)},conf:{hand.confidence:.3f},side:{side},g:{gesture},gc:{hand.gesture_confidence:.3f}"


def _signal(signals: Mapping[str, float], *names: str, default: float = 0.0) -> float:
    for name in names:
        if name in signals:
            return float(signals[name])
    return default


def format_obs(obs: Union[Observation, FramePresence], extended: bool = False, publisher: str = "") -> str:
    """One observation as visualbase's OBS line (face, pose, quality, gesture).

    A frame's presence (``src=frame``) and other sources are written as the bare header.
    ``extended`` adds the fields described in the module doc (``publisher`` names
    the sender in ``pub=``).
    """
    source = check_value("src", obs.source)
    head = f"OBS src={source} frame={int(obs.frame_id)} t_ns={int(obs.t_ns)}"
    face_x = _face_extra if extended else (lambda _f: "")
    pose_x = _pose_extra if extended else (lambda _p: "")
    hand_x = _hand_extra if extended else (lambda _h: "")
    if source == "face":
        parts = [f"faces={len(obs.faces)}"] + [_face_text(i, f) + face_x(f) for i, f in enumerate(obs.faces)]
    elif source == "pose":
        parts = [f"poses={len(obs.poses)}"] + [
            _pose_text(i, p, obs.signals) + pose_x(p) for i, p in enumerate(obs.poses)
        ]
    elif source == "gesture":
        parts = [f"hands={len(obs.hands)}"] + [_hand_text(i, h) + hand_x(h) for i, h in enumerate(obs.hands)]
    elif source == "quality":
        s = obs.signals
        blur = _signal(s, "blur")
        bright = _signal(s, "brightness", "bright")
        contrast = _signal(s, "contrast") / 255.0
        gate = int(bool(_signal(s, "quality_gate", "gate")))
        parts = [f"blur:{blur:.1f},bright:{bright:.1f},contrast:{contrast:.3f},gate:{gate}"]
    else:
        parts = []
    if extended:
        if publisher:
            parts.append(f"pub={word(publisher)}")
        error, ms = (obs.error, obs.processing_ms) if isinstance(obs, Observation) else (None, 0.0)
        if error:
            parts.append(f"err={word(error)}")
        parts.append(f"ms={float(ms):.3f}")
    return " ".join([head] + parts)


def _floats(value: str, where: str) -> List[float]:
    try:
        return [float(v) for v in value.split("~")]
    except ValueError as exc:
        raise WireError(TEXT_ERROR, f"{where}: {value[:80]!r} is not a ~-separated list of numbers") from exc


def _apply_face_extra(face: Face, attrs: Mapping[str, str], where: str) -> Face:
    if "fx" not in attrs:
        return face
    v = _floats(attrs["fx"], f"{where} fx")
    if len(v) != 12:
        raise WireError(TEXT_ERROR, f"{where} fx: expected 12 values, got {len(v)}")
    return Face(
        face_id=face.face_id,
        confidence=v[0],
        bbox=(v[1], v[2], v[3], v[4]),
        yaw=v[5],
        pitch=v[6],
        roll=v[7],
        expression=v[8],
        area_ratio=v[9],
        center_distance=v[10],
        inside_frame=bool(v[11]),
    )


def _pose_extra_values(attrs: Mapping[str, str], where: str) -> Tuple[Optional[float], List[Tuple[float, float, float]]]:
    if "px" not in attrs:
        return None, []
    v = _floats(attrs["px"], f"{where} px")
    if (len(v) - 1) % 3:
        raise WireError(TEXT_ERROR, f"{where} px: keypoints must come in x~y~c triples")
    points = [(v[i], v[i + 1], v[i + 2]) for i in range(1, len(v), 3)]
    return v[0], points


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


def parse_obs(text: str, stream_id: str = "") -> Extracted:
    """Read an OBS line back into an :class:`Observation` (only what the text carries),
    or a :class:`FramePresence` for ``src=frame``."""
    return parse_obs_from(text, stream_id)[0]


def parse_obs_from(text: str, stream_id: str = "") -> Tuple[Extracted, str]:
    """:func:`parse_obs` and the ``pub=`` name of the sender ("" when not given)."""
    pairs, bare = split_message(text, "OBS")
    source = pairs.get("src")
    if not source:
        raise WireError(TEXT_ERROR, "OBS lacks src=")
    if source == FramePresence.source:
        presence = FramePresence(
            stream_id, required_value(pairs, "frame", int, "OBS"), required_value(pairs, "t_ns", int, "OBS")
        )
        return presence, pairs.get("pub", "")
    obs = Observation(
        source=source,
        stream_id=stream_id,
        frame_id=required_value(pairs, "frame", int, "OBS"),
        t_ns=required_value(pairs, "t_ns", int, "OBS"),
    )
    if source == "face":
        count = required_value(pairs, "faces", int, "OBS face")
        obs.faces = [
            _apply_face_extra(_parse_face(a, f"OBS f{i}"), a, f"OBS f{i}")
            for i, a in enumerate(_indexed(pairs, "f", count, "face"))
        ]
    elif source == "pose":
        count = required_value(pairs, "poses", int, "OBS pose")
        for i, attrs in enumerate(_indexed(pairs, "p", count, "pose")):
            where = f"OBS p{i}"
            exact_conf, keypoints = _pose_extra_values(attrs, where)
            obs.poses.append(
                Pose(
                    person_id=_attr(attrs, "id", int, where),
                    confidence=exact_conf if exact_conf is not None else _attr(attrs, "conf", float, where),
                    keypoints=keypoints,
                    hand_raised=bool(_attr(attrs, "hr", int, where, 0)),
                )
            )
            obs.signals[f"p{i}_hw"] = float(_attr(attrs, "hw", int, where, 0))
            obs.signals[f"p{i}_wc"] = float(_attr(attrs, "wc", int, where, 0))
    elif source == "gesture":
        count = required_value(pairs, "hands", int, "OBS gesture")
        for i, attrs in enumerate(_indexed(pairs, "h", count, "gesture")):
            hand = _parse_hand(attrs, f"OBS h{i}")
            if "hx" in attrs:
                v = _floats(attrs["hx"], f"OBS h{i} hx")
                if len(v) != 2:
                    raise WireError(TEXT_ERROR, f"OBS h{i} hx: expected 2 values, got {len(v)}")
                hand.confidence, hand.gesture_confidence = v
            obs.hands.append(hand)
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
    if "err" in pairs:
        obs.error = pairs["err"] or "error"
    if "ms" in pairs:
        obs.processing_ms = typed_value(pairs["ms"], float, "OBS ms")
    return obs, pairs.get("pub", "")


__all__ = ["format_obs", "parse_obs", "parse_obs_from", "word"]
