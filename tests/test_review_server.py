"""The review page's server without a browser: tailing, path safety, the state it shows,
server-sent events, slow clients, and the `serve` command."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

from facemoment.runtime.why import latest_tallies, why_lines
from facemoment.tools.review.hub import RESYNC, Hub
from facemoment.tools.review.launch import PageError, ReviewPage, bind
from facemoment.tools.review.paths import PathRefused, served_file
from facemoment.tools.review.run_state import RunState
from facemoment.tools.review.server import ReviewServer
from facemoment.tools.review.tail import JsonlTail

from conftest import PYTHON, REPO, free_port, wait_until
from review_helpers import add_highlight, append_line, tally, trigger_row


# --- tailing ---------------------------------------------------------------------------


def test_tail_takes_only_complete_lines_and_starts_over_on_a_new_file(tmp_path):
    path = tmp_path / "t.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # no file yet
    path.write_bytes(b'{"a": 1}\n{"a": 2')
    assert tail.read() == [{"a": 1}]
    assert tail.read() == []  # the torn line is not taken
    with open(path, "ab") as f:
        f.write(b'}\nnot json\n[1]\n{"a": 3}\n')
    assert tail.read() == [{"a": 2}, {"a": 3}]
    assert tail.bad_lines == 2
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"b": 1}\n')
    os.replace(replacement, path)  # a new run writing the same name
    assert tail.read() == [{"b": 1}]
    assert tail.resets == 1


def test_tail_reads_a_long_file_in_bounded_steps(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
    tail = JsonlTail(path, max_read=1000)
    rows: List[dict] = []
    while not tail.caught_up or not rows or rows[-1]["i"] != 999:
        batch = tail.read()
        assert sum(len(json.dumps(r)) + 1 for r in batch) <= 1000  # the lines of at most one read
        rows += batch
    assert [r["i"] for r in rows] == list(range(1000))


# --- which files are served --------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    (out / "clips" / "a.jpg").write_bytes(b"jpeg")
    (out / "clips" / ".b.mp4.part").write_bytes(b"half")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    (out / "link_out").symlink_to(secret)
    (out / "dir_out").symlink_to(tmp_path)
    (out / "link_in").symlink_to(out / "clips" / "a.jpg")
    return out, secret


def test_served_file_refuses_every_path_that_leaves_the_directory(served):
    out, secret = served
    assert served_file(out, "clips/a.jpg") == (out / "clips" / "a.jpg").resolve()
    assert served_file(out, "link_in") == (out / "clips" / "a.jpg").resolve()
    for path in ("../secret.txt", "clips/../../secret.txt", str(secret), "/etc/passwd", "link_out",
                 "dir_out/secret.txt", "a\x00b"):
        with pytest.raises(PathRefused):
            served_file(out, path)
    assert served_file(out, "clips/missing.jpg") is None
    assert served_file(out, "clips") is None  # a directory is not a file
    assert served_file(out, "clips/.b.mp4.part") is None  # not finished by its writer


def _get(url: str, path: str, method: str = "GET") -> Tuple[int, bytes]:
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)  # the path goes out as written
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_server_sends_only_files_under_the_output_directory(served):
    out, secret = served
    with ReviewServer(out, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        assert _get(server.url, "/files/clips/a.jpg") == (200, b"jpeg")
        for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt",
                     "/files/%2fetc%2fpasswd", "/files//etc/passwd", "/files/link_out", "/files/dir_out/secret.txt",
                     "/static/..%2f..%2f..%2fcore%2fconfig.py"):
            status, body = _get(server.url, path)
            assert status in (403, 404), (path, status)
            assert b"not for the page" not in body and b"root:" not in body
        assert _get(server.url, "/files/link_out")[0] == 403
        assert _get(server.url, "/files/clips/a.jpg", "POST")[0] == 405  # read-only
        assert _get(server.url, "/files/clips/a.jpg", "PUT")[0] == 405


def test_the_page_and_its_assets_come_from_the_package(tmp_path):
    with ReviewServer(tmp_path, port=0) as server:
        status, body = _get(server.url, "/")
        assert status == 200 and b'src="static/app.js"' in body
        for asset in ("app.js", "style.css"):
            assert _get(server.url, f"/static/{asset}")[0] == 200
        # Nothing on the page is fetched from another host.
        assert b"http://" not in body and b"https://" not in body


def test_bind_refuses_a_taken_port_in_one_line():
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(PageError) as err:
            bind("127.0.0.1", taken.getsockname()[1])
        assert "\n" not in str(err.value) and "cannot listen on 127.0.0.1:" in str(err.value)
    finally:
        taken.close()


# --- what the page shows ----------------------------------------------------------------


def _read(out: Path) -> dict:
    """The page's state once everything in `out` is read."""
    state = RunState(out)
    state.poll()
    return state.snapshot()


def test_a_card_joins_its_trigger_with_the_clip_and_still_written_later(tmp_path):
    out = tmp_path / "out"
    state = RunState(out)
    assert [e for e in state.poll() if e[0] == "highlight"] == []
    row = trigger_row("cam0", 2_200_000_000)
    append_line(out / "triggers.jsonl", row)
    cards = [data for name, data in state.poll() if name == "highlight"]
    assert [(c["key"], c["clip_status"], c["clip"], c["still"]) for c in cards] == [(row["key"], "pending", None, None)]
    assert cards[0]["message"] == row["message"] and cards[0]["camera"] == "cam0"
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"mp4")
    add_highlight(tmp_path / "scratch", dict(row), clip, clip)  # the files, then only the manifest line moved
    (out / "clips").mkdir()
    for f in (tmp_path / "scratch" / "clips").iterdir():
        os.replace(f, out / "clips" / f.name)
    cards = [data for name, data in state.poll() if name == "highlight"]
    assert len(cards) == 1
    assert cards[0]["clip_status"] == "ok"
    assert cards[0]["clip"] == "files/clips/cam0_2200000000_camera_gaze.mp4"
    assert cards[0]["still"] == "files/clips/cam0_2200000000_camera_gaze.jpg"
    assert state.poll() == []  # nothing new, nothing sent


def test_a_failed_clip_shows_its_error(tmp_path):
    out = tmp_path / "out"
    row = trigger_row("cam0", 1_000_000_000)
    append_line(out / "triggers.jsonl", row)
    append_line(out / "clips" / "clips.jsonl", {"key": row["key"], "status": "failed", "error": "ring buffer empty",
                                                 "file": None, "best_frame": None})
    card = _read(out)["highlights"][0]
    assert (card["clip_status"], card["clip_error"], card["clip"]) == ("failed", "ring buffer empty", None)


def test_camera_figures_come_from_the_tallies_over_event_time(tmp_path):
    out = tmp_path / "out"
    trace = out / "trace.jsonl"
    # 30 frames in and 15 fused per second; face on every fused frame, pose on every other;
    # brightness fails on 10 then 15 frames a second, with a known mean each second.
    failed, mean = 0, 0.0
    for second in range(1, 7):
        for i in range(15):
            append_line(trace, {"record_type": "frame_extract", "stream": "cam0", "frame_id": second * 30 + i, "source": "face"})
            if i % 2 == 0:
                append_line(trace, {"record_type": "frame_extract", "stream": "cam0", "frame_id": second * 30 + i, "source": "pose"})
        now_failed, now_value = (10, 20.0) if second < 6 else (15, 40.0)
        mean = (mean * failed + now_value * now_failed) / (failed + now_failed)
        failed += now_failed
        append_line(trace, tally("cam0", second, frames=15 * second, frame_id=30 * second,
                                 conditions={"quality.brightness": {"failed": failed, "op": "<", "threshold": 50, "typical": mean}}))
    append_line(trace, {"record_type": "frame_drop", "stream": "cam0", "frame_id": 99, "reason": "backpressure", "dropped_count": 4})
    append_line(trace, {"record_type": "frame_drop", "stream": "cam0", "frame_id": 99, "reason": "timeout", "extractors": ["pose"]})
    cam = _read(out)["cameras"][0]
    assert cam["camera"] == "cam0"
    assert cam["window_s"] == 5.0
    assert cam["frames_in_per_s"] == 30.0 and cam["analysed_per_s"] == 15.0
    assert cam["extractor_rates"] == {"face": 15.0, "pose": 8.0}
    assert cam["drops"] == {"backpressure": 4, "timeout": 1}
    assert cam["gate"]["open"] is None
    # The last second alone: all 15 frames failed, at 40 on average.
    assert cam["gate"]["failing"] == [{"name": "quality.brightness", "label": "quality: brightness", "value": 40.0,
                                       "op": "<", "threshold": 50, "share": 1.0}]
    assert "occupancy" not in cam and "effective_rates" not in cam  # not in this trace: left out
    # The CPU budget's camera_rates records give the camera's occupancy and effective rates.
    append_line(trace, {"record_type": "camera_rates", "stream": "cam0", "t_ns": 5_000_000_000, "frames": 40,
                        "occupied_frames": 30, "rates_fps": {"face": 30.0, "pose": 15.0}})
    cam = _read(out)["cameras"][0]
    assert cam["occupancy"] == 0.75 and cam["effective_rates"] == {"face": 30.0, "pose": 15.0}


def test_gate_timeline_candidates_and_triggers(tmp_path):
    out = tmp_path / "out"
    trace = out / "trace.jsonl"
    s = 1_000_000_000
    append_line(trace, {"record_type": "trigger_decision", "stream": "cam1", "frame_id": 1, "t_ns": 1 * s, "gate_open": False,
                        "candidates": [], "decision": "blocked_gate"})
    append_line(trace, {"record_type": "gate_change", "stream": "cam1", "frame_id": 60, "t_ns": 2 * s, "gate_open": True,
                        "reason": "conditions_held", "duration_sec": 0.7})
    for t in (2.1, 2.2, 2.3, 4.0):
        append_line(trace, {"record_type": "trigger_decision", "stream": "cam1", "frame_id": int(t * 30), "t_ns": int(t * s),
                            "gate_open": True, "candidates": [{"reason": "smile", "score": 0.9}], "decision": "no_trigger"})
    append_line(trace, {"record_type": "gate_change", "stream": "cam1", "frame_id": 150, "t_ns": 5 * s, "gate_open": False,
                        "reason": "conditions_failed", "duration_sec": 0.3})
    append_line(out / "triggers.jsonl", trigger_row("cam1", int(2.3 * s), reason="smile"))
    append_line(out / "trig_sends.jsonl", {"key": f"cam1:{int(2.3 * s)}:smile", "to": "tcp://x", "status": "sent"})
    append_line(out / "trig_sends.jsonl", {"key": f"cam1:{int(2.3 * s)}:smile", "to": "tcp://x", "status": "unheard"})
    cam = _read(out)["cameras"][0]
    timeline = cam["timeline"]
    assert (timeline["start_ns"], timeline["end_ns"]) == (1 * s, 5 * s)
    assert timeline["gate"] == [[2 * s, 5 * s]]
    assert timeline["candidates"] == {"smile": [[int(2.1 * s), int(2.3 * s)], [4 * s, 4 * s]]}
    assert [p["t_ns"] for p in timeline["triggers"]] == [int(2.3 * s)]
    assert cam["gate"]["open"] is False and cam["gate"]["since_t_ns"] == 5 * s
    assert cam["last_trigger"]["reason"] == "smile"
    assert cam["trig_sends"] == {"sent": 1, "unheard": 1, "dropped": 0}


def test_why_no_highlight_is_the_run_summary_s(tmp_path):
    out = tmp_path / "out"
    record = tally("cam0", 11, frames=331, frame_id=330,
                   conditions={"quality.blur": {"failed": 331, "op": "<", "threshold": 100, "typical": 2.61}})
    append_line(out / "trace.jsonl", record)
    run = _read(out)["run"]
    assert run["why"] == why_lines(latest_tallies([record]), 0)
    assert run["why"][0] == "why no highlight:"
    assert any("quality: blur 2.61 < 100 on 100% of frames" in line for line in run["why"])
    assert run["live"] is True  # just written
    old = 1_000_000.0
    for f in out.rglob("*.jsonl"):
        os.utime(f, (old, old))
    assert _read(out)["run"]["live"] is False


# --- events to browsers ------------------------------------------------------------------


def test_a_client_that_never_reads_loses_only_its_own_events_and_gets_a_snapshot_after():
    import asyncio

    async def scenario() -> Tuple[Hub, list, list]:
        hub = Hub(queue_size=4)
        stuck, reader = hub.connect("stuck"), hub.connect("reader")
        got = []
        for i in range(100):
            hub.publish("highlight", {"i": i})  # returns at once whoever reads
            got.append(reader.queue.get_nowait())
        stuck_events = []
        while not stuck.queue.empty():
            stuck_events.append(stuck.queue.get_nowait())
        hub.flush_resyncs()
        stuck_events.append(stuck.queue.get_nowait())
        return hub, got, stuck_events

    hub, got, stuck_events = asyncio.run(scenario())
    assert [e[1]["i"] for e in got] == list(range(100))
    stats = {c["peer"]: c for c in hub.stats()["clients"]}
    assert stats["reader"]["dropped"] == 0
    assert stats["stuck"]["dropped"] == 96 and hub.stats()["dropped"] == 96
    assert [e[1]["i"] for e in stuck_events[:4]] == [0, 1, 2, 3]
    assert stuck_events[4] is RESYNC  # the events it lost come back as a snapshot
    assert hub.published == 100


class SseReader:
    """A browser's EventSource, reduced: one GET /api/events, events as they come."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].strip("/").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        self.buffer = b""
        self.headers_done = False

    def next_event(self) -> Tuple[str, dict]:
        while True:
            if not self.headers_done and b"\r\n\r\n" in self.buffer:
                self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
                self.headers_done = True
            if self.headers_done:
                # Chunked transfer: take the event out of the chunk framing.
                text = self.buffer
                start = text.find(b"event: ")
                end = text.find(b"\n\n", start)
                if start >= 0 and end >= 0:
                    block = text[start:end].decode()
                    self.buffer = text[end + 2:]
                    name = block.split("\n")[0][len("event: "):]
                    data = block.split("\n", 1)[1][len("data: "):]
                    return name, json.loads(data)
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the event stream"
            self.buffer += chunk

    def wait_for(self, condition) -> Tuple[str, dict]:
        while True:
            event = self.next_event()
            if condition(*event):
                return event

    def close(self) -> None:
        self.sock.close()


def _has_key(key: str):
    def condition(name: str, data: dict) -> bool:
        if name == "highlight":
            return data["key"] == key
        return name == "snapshot" and any(h["key"] == key for h in data["highlights"])

    return condition


def test_a_new_highlight_reaches_a_connected_browser(tmp_path):
    out = tmp_path / "out"
    first = add_highlight(out, trigger_row("cam0", 1_000_000_000))
    with ReviewServer(out, port=0) as server:
        reader = SseReader(server.url)
        try:
            name, snapshot = reader.next_event()
            assert name == "snapshot"
            row = add_highlight(out, trigger_row("cam0", 5_000_000_000, reason="smile"))
            reader.wait_for(_has_key(row["key"]))
            assert {h["key"] for h in snapshot["highlights"]} >= {first["key"]}
        finally:
            reader.close()


def test_a_browser_that_stops_reading_slows_neither_the_files_nor_the_others(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with ReviewServer(out, port=0, queue_size=16) as server:
        host, port = server.url.split("//")[1].strip("/").split(":")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port)))
        stuck.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        reader = SseReader(server.url)
        try:
            assert wait_until(lambda: len(server.hub.clients) == 2, 30)
            padding = "x" * 100_000  # big events fill the stuck socket's buffers sooner
            batch = 0
            # Batches the reading client keeps up with; until the stuck one has lost events
            # (bounded: the kernel's buffers for one socket are a few MB).
            while not any(c.dropped for c in server.hub.clients.values()):
                assert batch < 100, server.hub.stats()
                rows = [trigger_row("cam0", (batch * 8 + i + 1) * 1_000_000_000) for i in range(8)]
                for row in rows:
                    row["message"] += padding  # shown on the card: in every event about it
                for row in rows:
                    append_line(out / "triggers.jsonl", row)
                reader.wait_for(_has_key(rows[-1]["key"]))
                batch += 1
            stats = {c["id"]: c for c in server.hub.stats()["clients"]}
            assert len(stats) == 2
            dropped = sorted(c["dropped"] for c in stats.values())
            assert dropped[0] == 0 and dropped[1] > 0  # only the stuck client lost events
            # The reading client still gets every new highlight.
            last = trigger_row("cam0", 10_000 * 1_000_000_000, reason="wave")
            append_line(out / "triggers.jsonl", last)
            reader.wait_for(_has_key(last["key"]))
            status, body = _get(server.url, "/api/clients")
            assert status == 200 and json.loads(body)["dropped"] == server.hub.dropped_total > 0
        finally:
            reader.close()
            stuck.close()


# --- the commands ------------------------------------------------------------------------


def test_serve_refuses_a_taken_port_with_exit_2(tmp_path):
    taken = bind("127.0.0.1", 0)
    try:
        proc = subprocess.run([PYTHON, "-m", "facemoment", "serve", str(tmp_path), "--port", str(taken.getsockname()[1])],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("facemoment serve: review page: cannot listen on 127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_page_beside_a_run_is_a_child_process_that_stop_ends(tmp_path):
    out = tmp_path / "out"
    row = add_highlight(out, trigger_row("cam0", 1_000_000_000))
    page = ReviewPage(out)
    url = page.start("127.0.0.1", 0)
    try:
        assert url.startswith("http://127.0.0.1:")
        status, body = _get(url, "/api/state")  # the kernel held the connection until the child served it
        assert status == 200 and [h["key"] for h in json.loads(body)["highlights"]] == [row["key"]]
    finally:
        page.stop()
    assert page.proc is not None and page.proc.returncode is not None
    with pytest.raises(OSError):
        _get(url, "/api/state")


def test_run_commands_take_ui_flags_and_the_demo_serves_by_default():
    from facemoment.tools.cli import build_parser

    parser = build_parser()
    for command in (["process", "x.mp4"], ["run"], ["attach", "tcp://127.0.0.1:5555"]):
        args = parser.parse_args(command)
        assert args.ui is False and (args.ui_host, args.ui_port) == ("127.0.0.1", 8080)
        args = parser.parse_args([*command, "--ui", "--ui-port", "9000", "--ui-host", "0.0.0.0"])
        assert args.ui is True and (args.ui_host, args.ui_port) == ("0.0.0.0", 9000)
    demo = parser.parse_args(["demo"])
    assert demo.ui is True and demo.ui_linger is False
    assert parser.parse_args(["demo", "--no-ui"]).ui is False
    assert parser.parse_args(["demo", "--ui"]).ui_linger is True
    serve = parser.parse_args(["serve", "out"])
    assert (serve.output_dir, serve.host, serve.port) == ("out", "127.0.0.1", 8080)


def test_ui_on_a_taken_port_stops_the_run_before_it_starts(tmp_path):
    taken = bind("127.0.0.1", 0)
    try:
        proc = subprocess.run(
            [PYTHON, "-m", "facemoment", "process", "sample", "--output-dir", str(tmp_path / "out"),
             "--ui", "--ui-port", str(taken.getsockname()[1])],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
    finally:
        taken.close()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "facemoment: review page: cannot listen on 127.0.0.1:" in proc.stderr
    assert not (tmp_path / "out" / "triggers.jsonl").exists()  # the run never started


@pytest.mark.slow
def test_the_demo_prints_the_page_s_address_and_serves_it_while_it_runs(tmp_path):
    taken = bind("127.0.0.1", 0)  # the asked-for port is taken: the demo takes another
    asked = taken.getsockname()[1]
    cmd = [PYTHON, "-m", "facemoment", "demo", "--output-dir", str(tmp_path / "out"),
           "--frames-port", str(free_port()), "--trig-port", str(free_port()), "--ui-port", str(asked)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMOMENT", "BYTEWAX"))}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: List[str] = []
    answers: List[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("review page: http://") and not answers:
                url = line.split()[2]
                answers.append(_get(url, "/api/state")[0])  # while the demo runs
        assert proc.wait(300) == 0, "".join(lines)[-4000:]
    finally:
        taken.close()
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    url = next(line.split()[2] for line in lines if line.startswith("review page: http://"))
    assert url.startswith("http://127.0.0.1:") and url != f"http://127.0.0.1:{asked}/"
    assert answers == [200]
    assert text.index("review page: http://") < text.index("starting: ")
    assert f"review page: {url} stopped; review the run again with: facemoment serve {tmp_path / 'out'}" in text
    with pytest.raises(OSError):  # stopped with the demo
        _get(url, "/api/state")
