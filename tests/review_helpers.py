"""Writing a run's output directory the way a run does, for the review page's tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional


def append_line(path: Path, row: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def trigger_row(stream: str, event_t_ns: int, reason: str = "camera_gaze", score: float = 0.8,
                written_at: str = "2026-01-01T12:00:00.000+00:00", **extra: Any) -> Dict[str, Any]:
    key = f"{stream}:{event_t_ns}:{reason}"
    start, end = event_t_ns - 2_000_000_000, event_t_ns + 2_000_000_000
    return {
        "label": "highlight", "t_start_ns": start, "t_end_ns": end, "faces": 1, "score": score, "reason": reason,
        "stream": stream, "event_t_ns": event_t_ns, "frame_id": event_t_ns // 33_333_333, "t_ns": event_t_ns,
        "key": key,
        "message": f"TRIG label=highlight t_start_ns={start} t_end_ns={end} faces=1 score={score:.3f} reason={reason}",
        "written_at": written_at, **extra,
    }


def add_highlight(out: Path, row: Dict[str, Any], clip_from: Optional[Path] = None,
                  still_from: Optional[Path] = None) -> Dict[str, Any]:
    """Append `row` to triggers.jsonl, then (given a clip) its clip, still and clips.jsonl line,
    in the order a run writes them."""
    append_line(out / "triggers.jsonl", row)
    if clip_from is None:
        return row
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    name = f"{row['stream']}_{row['event_t_ns']}_{row['reason']}.mp4"
    still = f"{row['stream']}_{row['event_t_ns']}_{row['reason']}.jpg"
    shutil.copyfile(clip_from, clips / name)
    if still_from is not None:
        shutil.copyfile(still_from, clips / still)
    append_line(clips / "clips.jsonl", {
        "key": row["key"], "stream": row["stream"], "file": name, "status": "ok", "duration_s": 4.0,
        "requested_s": 4.0, "t_start_ns": row["t_start_ns"], "t_end_ns": row["t_end_ns"], "label": row["label"],
        "reason": row["reason"], "score": row["score"], "error": None,
        "best_frame": still if still_from is not None else None, "written_at": row["written_at"],
    })
    return row


def tally(stream: str, second: int, frames: int, frame_id: int, conditions: Dict[str, Any],
          gate_open_frames: int = 0) -> Dict[str, Any]:
    return {
        "record_type": "gate_tally", "stream": stream, "frame_id": frame_id, "t_ns": second * 1_000_000_000,
        "frames": frames, "face_observed": frames, "gate_open_frames": gate_open_frames, "passed_while_closed": 0,
        "decisions": {"blocked_gate": frames - gate_open_frames}, "blocked_candidates": {}, "conditions": conditions,
    }
