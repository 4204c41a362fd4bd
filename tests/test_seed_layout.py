"""The seed's A-B*-C wiring around a stock visualbase ingest gives the triggers one
process gives on the same frames.

A: a stand-in ingest written from the protocol (tests/vb_ingest.py) writes the
sample's frames to three proxy FIFOs (640x480 at 10 fps: ids advance by 3) and
listens for TRIG on a Unix datagram socket. B*: two `facemoment extract` processes,
face+quality on one proxy and pose+gesture on another, send OBS as datagrams to
one Unix socket. C: a fusion-only dataflow bound to that socket sends TRIG back to
the ingest's socket. The third proxy feeds one in-process run. On the batch preset
(no deadlines) the triggers are equal, and the ingest receives one TRIG per trigger.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from facemoment.formats import sample
from facemoment.formats.frames import open_frames
from facemoment.formats.wire import parse_trig

from conftest import PYTHON, REPO, finish
from vb_ingest import Proxy, StandInIngest

COMMON = {
    "FACEMOMENT_PRESET": "batch",
    "FACEMOMENT__OUTPUT__CLIPS": "false",
    "FACEMOMENT__OUTPUT__SUMMARY": "false",
    "FACEMOMENT__ALIGN__IDLE_FLUSH_MS": "600000",  # event time alone closes windows
}


def _triggers(out: Path) -> List[Dict]:
    rows = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    keep = ("stream", "frame_id", "t_ns", "event_t_ns", "reason", "score", "t_start_ns", "t_end_ns", "faces", "message")
    return [{k: row.get(k) for k in keep} for row in rows]


def _records(path: Path, record_type: str) -> List[Dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["record_type"] == record_type]


@pytest.mark.slow
def test_ingest_proxies_extract_processes_and_fusion_over_unix_sockets(flow_env: Dict[str, str], tmp_path: Path) -> None:
    video = sample.write_sample_video(tmp_path / "sample.mp4")
    reader = open_frames(str(video))
    frames = []
    while (item := reader.read()) is not None:
        frames.append(item)
    reader.close()

    sockets = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))  # AF_UNIX paths are short
    proxies = [Proxy.parse(f"{name}:{sockets}/vid_{name}.mjpg:640:480:10") for name in ("face", "pose", "one")]
    ingest = StandInIngest(frames, proxies, str(sockets / "trig.sock")).start()
    single_out, split_out = tmp_path / "single", tmp_path / "split"
    procs = []
    try:
        single_env = dict(
            flow_env, **COMMON,
            FACEMOMENT_SOURCE=proxies[2].path,  # a plain path that is a FIFO
            FACEMOMENT_TRIG_ADDRESS="none",
            FACEMOMENT_IDLE_TIMEOUT_S="3",
            FACEMOMENT_OUTPUT_DIR=str(single_out),
        )
        fusion_env = dict(
            flow_env, **COMMON,
            FACEMOMENT_OBS_INPUTS=f"unix://{sockets}/obs.sock",
            FACEMOMENT__SOURCE__OBS_PUBLISHERS="2",  # two extractors send into the one socket
            FACEMOMENT_TRIG_ADDRESS=f"unix://{sockets}/trig.sock",
            FACEMOMENT_IDLE_TIMEOUT_S="300",  # a fallback: the extractors' end messages end it
            FACEMOMENT_OUTPUT_DIR=str(split_out),
        )
        for env in (single_env, fusion_env):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "bytewax.run", "dataflows.facemoment"], cwd=REPO, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))
        for name, proxy, extractors in (("b1", proxies[0], "face,quality"), ("b2", proxies[1], "pose,gesture")):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "facemoment", "extract", f"fifo://{proxy.path}",
                 "--obs-address", f"unix://{sockets}/obs.sock", "--extractors", extractors,
                 "--name", name, "--preset", "batch", "--idle-timeout", "3", "--subscriber-wait", "300",
                 "--output-dir", str(split_out)],
                cwd=REPO, env=dict(flow_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))
        finish(procs, timeout=900)
        ingest.join_writers(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        received = ingest.close()
        shutil.rmtree(sockets, ignore_errors=True)

    sent = [p.written for p in proxies]
    assert sent[0] == sent[1] == sent[2] and len(sent[0]) == 120 and not any(p.error for p in proxies)
    advances = Counter(b - a for a, b in zip(sent[0], sent[0][1:]))
    assert advances.most_common(1)[0][0] == 3 and set(advances) <= {2, 3, 4}  # "about 3", as from a camera

    expected = _triggers(single_out)
    assert expected, "the sample gives triggers from a 10 fps proxy"
    assert _triggers(split_out) == expected
    # TRIG came back over the ingest's socket, one datagram per trigger, parseable as visualbase parses it.
    assert sorted(received) == sorted(t["message"] for t in expected)
    assert all(parse_trig(text)["label"] == "highlight" for text in received)

    # Every process read every proxy frame, none counted lost: ids advancing by the
    # proxy's step are its rate.
    for trace in (single_out / "trace.jsonl", split_out / "extract-b1.trace.jsonl", split_out / "extract-b2.trace.jsonl"):
        (summary,) = _records(trace, "source_summary")
        assert summary["address"].startswith("fifo://")
        assert (summary["frames_received"], summary["lost_on_wire"], summary["malformed"]) == (120, 0, {})
        assert not [r for r in _records(trace, "frame_drop")]
    (fusion,) = _records(split_out / "trace.jsonl", "source_summary")
    assert fusion["address"] == f"unix://{sockets}/obs.sock"
    assert fusion["obs_received"]["frame"] == 2 * 120 and fusion["lost_on_wire"] == 0 and fusion["malformed_obs"] == 0
    assert fusion["publishers"] == ["b1", "b2"] and fusion["end_reason"] == "publishers_ended"
    releases = _records(split_out / "trace.jsonl", "trig_release")
    assert len(releases) == len(expected) and all(r["timing"] == "end" for r in releases)
