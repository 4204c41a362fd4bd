"""docker-compose.yml: valid for docker-compose, and the process layout it describes
(a frame daemon and a two-process Bytewax cluster) works, run directly on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
import zmq

from facemoment.formats.sample import t_face_centred_ns, t_face_gone_ns

from conftest import PYTHON, REPO, free_port

COMPOSE = REPO / "docker-compose.yml"


def compose_config() -> Dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian's package) is installed by the project's set-up (.ci/run)"
    result = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_describes_daemon_and_two_process_cluster():
    config = compose_config()
    services = {name: s for name, s in config["services"].items() if not s.get("profiles")}
    assert set(services) == {"daemon", "flow-0", "flow-1"}
    assert services["daemon"]["command"][:2] == ["facemoment", "daemon"]
    for index in (0, 1):
        command = services[f"flow-{index}"]["command"]
        assert command[:4] == ["python", "-m", "bytewax.run", "dataflows.facemoment"]
        assert command[command.index("-i") + 1] == str(index)
        assert command[command.index("-a") + 1] == "flow-0:2101;flow-1:2101"
        env = services[f"flow-{index}"]["environment"]
        assert env["FACEMOMENT_SOURCE"] == "tcp://daemon:5555"
        assert any(v.endswith(":/out:rw") or v.endswith(":/out") for v in services[f"flow-{index}"]["volumes"])
    assert "facemoment-out" in config["volumes"]
    for service in services.values():
        assert service["build"]["context"] == str(REPO)


def test_split_profile_describes_the_a_b_c_layout():
    config = compose_config()
    split = {name: s for name, s in config["services"].items() if "split" in (s.get("profiles") or [])}
    assert set(split) == {"split-daemon", "extract-face", "extract-pose", "fusion"}
    daemon = split["split-daemon"]["command"]
    assert daemon[:2] == ["facemoment", "daemon"] and daemon[daemon.index("--wait-subscribers") + 1] == "2"
    obs_addresses = []
    extractors = []
    for name in ("extract-face", "extract-pose"):
        command = split[name]["command"]
        assert command[:3] == ["facemoment", "extract", "tcp://split-daemon:5555"]
        port = command[command.index("--obs-address") + 1].rsplit(":", 1)[1]
        obs_addresses.append(f"tcp://{name}:{port}")
        extractors += command[command.index("--extractors") + 1].split(",")
    assert sorted(extractors) == ["face", "gesture", "pose", "quality"]  # every extractor runs once
    fusion = split["fusion"]
    assert fusion["command"][:4] == ["python", "-m", "bytewax.run", "dataflows.facemoment"]
    assert fusion["environment"]["FACEMOMENT_OBS_INPUTS"].split(",") == obs_addresses
    assert "FACEMOMENT_SOURCE" not in fusion["environment"]  # it reads no frames


def _localize(arg: str, ports: Dict[str, int], out: Path) -> str:
    """Turn the compose network's names into loopback addresses of this machine."""
    return (
        arg.replace("tcp://*:5555", f"tcp://127.0.0.1:{ports['frames']}")
        .replace("tcp://daemon:5555", f"tcp://127.0.0.1:{ports['frames']}")
        .replace("tcp://0.0.0.0:5556", f"tcp://127.0.0.1:{ports['trig']}")
        .replace("flow-0:2101;flow-1:2101", f"127.0.0.1:{ports['p0']};127.0.0.1:{ports['p1']}")
        .replace("/out", str(out))
    )


def _command(service: Dict, ports: Dict[str, int], out: Path) -> List[str]:
    args = [_localize(a, ports, out) for a in service["command"] if a != "--loop"]  # the sample once, not forever
    if args[0] == "python":
        return [PYTHON] + args[1:]
    if args[0] == "facemoment":
        return [PYTHON, "-m", "facemoment"] + args[1:]
    raise AssertionError(f"unexpected command {args}")


@pytest.mark.slow
def test_the_compose_layout_runs_on_loopback(flow_env, tmp_path):
    services = compose_config()["services"]
    ports = {name: free_port() for name in ("frames", "trig", "p0", "p1")}
    out = tmp_path / "out"
    received: List[bytes] = []
    stop = threading.Event()

    def listen() -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"msg")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(f"tcp://127.0.0.1:{ports['trig']}")
        while not stop.is_set():
            if sub.poll(100):
                received.append(sub.recv_multipart()[1])
        sub.close()

    listener = threading.Thread(target=listen)
    listener.start()
    procs = []
    try:
        for name in ("daemon", "flow-0", "flow-1"):
            env = dict(flow_env)
            env.update({k: _localize(str(v), ports, out) for k, v in services[name].get("environment", {}).items()})
            env["FACEMOMENT_IDLE_TIMEOUT_S"] = "2"  # the compose cluster runs forever; this one ends
            procs.append(subprocess.Popen(_command(services[name], ports, out), cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop.set()
        listener.join(10)
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]

    triggers = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    assert triggers
    for trig in triggers:
        assert t_face_centred_ns() + 700_000_000 <= trig["t_ns"] < t_face_gone_ns()
    assert sorted(m.decode() for m in received) == sorted(t["message"] for t in triggers)
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    # Both processes extracted: each share keeps its own frame ids.
    extracted = {r["frame_id"] % 2 for r in trace if r["record_type"] == "frame_extract"}
    assert extracted == {0, 1}
    summaries = [r for r in trace if r["record_type"] == "source_summary"]
    assert len(summaries) == 2
    assert sorted(json.loads(line)["stream"] for line in (out / "clips" / "clips.jsonl").read_text().splitlines()) == ["cam0"] * len(triggers)


def test_seed_profile_describes_ingest_proxies_and_unix_sockets():
    config = compose_config()
    seed = {name: s for name, s in config["services"].items() if "seed" in (s.get("profiles") or [])}
    assert set(seed) == {"seed-ingest", "seed-extract-face", "seed-extract-pose", "seed-fusion"}
    ingest = seed["seed-ingest"]["command"]
    assert ingest[:2] == ["facemoment", "ingest"] and ingest[ingest.index("--trig-socket") + 1] == "/tmp/trig.sock"
    proxies = [ingest[i + 1] for i, a in enumerate(ingest) if a == "--proxy"]
    paths = [p.split(":")[1] for p in proxies]
    extractors = []
    for name in ("seed-extract-face", "seed-extract-pose"):
        command = seed[name]["command"]
        assert command[:2] == ["facemoment", "extract"] and command[2].startswith("fifo://")
        assert command[2][len("fifo://"):] in paths
        assert command[command.index("--obs-address") + 1] == "unix:///tmp/obs.sock"
        extractors += command[command.index("--extractors") + 1].split(",")
    assert sorted(extractors) == ["face", "gesture", "pose", "quality"]
    env = seed["seed-fusion"]["environment"]
    assert env["FACEMOMENT_OBS_INPUTS"] == "unix:///tmp/obs.sock" and env["FACEMOMENT__SOURCE__OBS_PUBLISHERS"] == "2"
    assert env["FACEMOMENT_TRIG_ADDRESS"] == "unix:///tmp/trig.sock"
    for service in seed.values():  # FIFOs and sockets live in the one shared /tmp
        assert any(v.startswith("seed-ipc:/tmp") for v in service["volumes"])


@pytest.mark.slow
def test_the_seed_profile_runs_here(flow_env, tmp_path):
    import tempfile

    services = compose_config()["services"]
    ipc = Path(tempfile.mkdtemp(prefix="fm", dir="/tmp"))  # stands for the shared /tmp; AF_UNIX paths are short
    out = tmp_path / "out"

    def local(arg: str) -> str:
        return str(out) if arg == "/out" else arg.replace("/tmp/", f"{ipc}/")

    procs = []
    try:
        for name in ("seed-fusion", "seed-extract-face", "seed-extract-pose", "seed-ingest"):
            env = dict(flow_env, FACEMOMENT_PRESET="batch", FACEMOMENT_IDLE_TIMEOUT_S="3")
            env.update({k: local(str(v)) for k, v in services[name].get("environment", {}).items()})
            env["FACEMOMENT_PRESET"] = "batch"  # no deadlines on a busy machine
            args = [local(a) for a in services[name]["command"] if a != "--loop"]  # the sample once
            if args[:2] == ["facemoment", "ingest"]:
                args += ["--linger", "20"]
            cmd = [PYTHON] + args[1:] if args[0] == "python" else [PYTHON, "-m", "facemoment"] + args[1:]
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(ipc, ignore_errors=True)
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    triggers = [json.loads(line) for line in (out / "triggers.jsonl").read_text().splitlines()]
    assert triggers
    received = [line.split("[ingest] received ", 1)[1] for line in outputs[3].splitlines() if "[ingest] received " in line]
    assert sorted(received) == sorted(t["message"] for t in triggers)
    assert f"{len(triggers)} TRIG received on {ipc}/trig.sock" in outputs[3]
