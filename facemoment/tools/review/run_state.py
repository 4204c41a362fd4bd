"""Everything the review page shows, read from a run's output directory.

`poll()` reads what the files gained since the last call and returns the changes as
events for the page: a highlight card, a camera's status, the run's state. A file that
was replaced (a new run in the same directory) makes the state start over and the
event is a full snapshot.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from facemoment.runtime.why import latest_tallies, why_lines
from facemoment.tools.review.cameras import CameraState
from facemoment.tools.review.tail import JsonlTail

# A run whose files grew within this many seconds is shown as live.
LIVE_WITHIN_S = 5.0

Event = Tuple[str, Dict[str, Any]]

FILES_URL = "files/"


def _camera_of_key(key: Any) -> Optional[str]:
    # Trigger keys are "stream:event_t_ns:reason".
    if isinstance(key, str) and key.count(":") >= 2:
        return key.rsplit(":", 2)[0]
    return None


class RunState:
    def __init__(self, out_dir: Path, trace_path: Optional[Path] = None, clock=time.time) -> None:
        self.out_dir = Path(out_dir)
        self.trace_path = Path(trace_path) if trace_path else self.out_dir / "trace.jsonl"
        self._clock = clock
        self.lock = threading.Lock()
        self._start_over()

    def _start_over(self) -> None:
        self.tails = {
            "triggers": JsonlTail(self.out_dir / "triggers.jsonl"),
            "clips": JsonlTail(self.out_dir / "clips" / "clips.jsonl"),
            "sends": JsonlTail(self.out_dir / "trig_sends.jsonl"),
            "trace": JsonlTail(self.trace_path),
        }
        self.triggers: Dict[str, Dict[str, Any]] = {}
        self.clips: Dict[str, Dict[str, Any]] = {}
        self.cameras: Dict[str, CameraState] = {}
        self.tallies: Dict[str, Dict[str, Any]] = {}
        self._run_info: Optional[Dict[str, Any]] = None

    def _camera(self, name: Any) -> CameraState:
        key = str(name) if name is not None else "-"
        if key not in self.cameras:
            self.cameras[key] = CameraState(key)
        return self.cameras[key]

    # --- reading -----------------------------------------------------------------------

    def poll(self) -> List[Event]:
        """Read what the files gained; the events for the page (none when nothing changed)."""
        with self.lock:
            resets = sum(t.resets for t in self.tails.values())
            rows = {name: tail.read() for name, tail in self.tails.items()}
            if sum(t.resets for t in self.tails.values()) != resets:
                self._start_over()
                rows = {name: tail.read() for name, tail in self.tails.items()}
                self._take(rows)
                return [("snapshot", self._snapshot())]
            highlights, cameras = self._take(rows)
            events: List[Event] = [("highlight", self._card(key)) for key in highlights if key in self.triggers]
            events += [("camera", self.cameras[name].status()) for name in sorted(cameras)]
            info = self._info()
            if info != self._run_info:
                self._run_info = info
                events.append(("run", info))
            return events

    def _take(self, rows: Mapping[str, List[Dict[str, Any]]]) -> Tuple[List[str], set]:
        highlights: List[str] = []
        cameras: set = set()
        for row in rows["triggers"]:
            key = row.get("key")
            if not isinstance(key, str):
                continue
            self.triggers[key] = row
            highlights.append(key)
            camera = str(row.get("stream") or _camera_of_key(key) or "-")
            self._camera(camera).apply_trigger(row)
            cameras.add(camera)
        for row in rows["clips"]:
            key = row.get("key")
            if isinstance(key, str):
                # A retried clip may fail and then succeed: a success is never replaced by a failure.
                if self.clips.get(key, {}).get("status") != "ok" or row.get("status") == "ok":
                    self.clips[key] = row
                highlights.append(key)
        for row in rows["sends"]:
            camera = _camera_of_key(row.get("key")) or "-"
            self._camera(camera).apply_send(row)
            cameras.add(camera)
        for record in rows["trace"]:
            stream = record.get("stream")
            if stream is None or not isinstance(record.get("record_type"), str):
                continue
            self._camera(stream).apply_trace(record)
            cameras.add(str(stream))
            if record["record_type"] == "gate_tally":
                self.tallies = latest_tallies([*self.tallies.values(), record])
        seen = set()
        unique = [k for k in highlights if not (k in seen or seen.add(k))]
        return unique, cameras

    # --- what the page shows -----------------------------------------------------------

    def _card(self, key: str) -> Dict[str, Any]:
        row = self.triggers[key]
        clip = self.clips.get(key)
        card: Dict[str, Any] = {
            "key": key,
            "camera": row.get("stream") or _camera_of_key(key),
            "reason": row.get("reason"),
            "label": row.get("label"),
            "score": row.get("score"),
            "faces": row.get("faces"),
            "event_t_ns": row.get("event_t_ns"),
            "t_start_ns": row.get("t_start_ns"),
            "t_end_ns": row.get("t_end_ns"),
            "message": row.get("message"),
            "written_at": row.get("written_at"),
            "clip_status": "pending",
            "clip": None,
            "still": None,
        }
        if clip is not None:
            card["clip_status"] = clip.get("status") or "failed"
            card["clip_error"] = clip.get("error")
            card["clip_duration_s"] = clip.get("duration_s")
            if clip.get("status") == "ok" and clip.get("file"):
                card["clip"] = f"{FILES_URL}clips/{clip['file']}"
            if clip.get("best_frame"):
                card["still"] = f"{FILES_URL}clips/{clip['best_frame']}"
        return card

    def _last_write(self) -> Optional[float]:
        times = []
        for tail in self.tails.values():
            try:
                times.append(tail.path.stat().st_mtime)
            except OSError:
                continue
        return max(times) if times else None

    def _info(self) -> Dict[str, Any]:
        # Live: a file was written a moment ago (a run that appends), whoever started the page.
        written = self._last_write()
        live = written is not None and self._clock() - written <= LIVE_WITHIN_S
        last = datetime.fromtimestamp(written, timezone.utc).astimezone().isoformat(timespec="seconds") if written else None
        return {
            "output_dir": str(self.out_dir),
            "trace": str(self.trace_path),
            "live": live,
            "last_write": last,
            "triggers": len(self.triggers),
            "why": why_lines(self.tallies, len(self.triggers)),
            "unreadable_lines": sum(t.bad_lines for t in self.tails.values()),
        }

    def _snapshot(self) -> Dict[str, Any]:
        self._run_info = self._info()
        return {
            "run": self._run_info,
            "highlights": [self._card(key) for key in self.triggers],
            "cameras": [self.cameras[name].status() for name in sorted(self.cameras)],
        }

    def snapshot(self) -> Dict[str, Any]:
        """The whole state, for a page that just connected."""
        with self.lock:
            return self._snapshot()
