"""What a process learns about its Bytewax run from the `bytewax.run` command line."""

from __future__ import annotations

from facemoment.runtime import cluster

RUN = "/venv/lib/python3.11/site-packages/bytewax/run.py"


def test_outside_bytewax_run_the_process_is_alone():
    argv = ["pytest", "-w", "4"]
    assert cluster.total_workers(argv, {"BYTEWAX_WORKERS_PER_PROCESS": "4"}) == 1
    assert cluster.process_index(argv, {"BYTEWAX_PROCESS_ID": "3"}) == 0
    assert cluster.recovery_directory(argv, {"BYTEWAX_RECOVERY_DIRECTORY": "/rec"}) is None


def test_command_line_options_in_every_spelling():
    argv = [RUN, "dataflows.facemoment", "-w", "2", "--addresses=a:1;b:2;c:3", "-i2", "--recovery-directory", "/rec"]
    assert cluster.total_workers(argv, {}) == 6
    assert cluster.process_index(argv, {}) == 2
    assert cluster.recovery_directory(argv, {}) == "/rec"


def test_environment_fills_in_what_the_command_line_leaves_out():
    argv = [RUN, "dataflows.facemoment", "-w", "3"]
    env = {"BYTEWAX_WORKERS_PER_PROCESS": "5", "BYTEWAX_ADDRESSES": "a:1;b:2", "BYTEWAX_PROCESS_ID": "1",
           "BYTEWAX_RECOVERY_DIRECTORY": "/env-rec"}
    assert cluster.total_workers(argv, env) == 6  # -w wins over the environment
    assert cluster.process_index(argv, env) == 1
    assert cluster.recovery_directory(argv, env) == "/env-rec"
    assert cluster.total_workers([RUN, "m"], {}) == 1 and cluster.process_index([RUN, "m"], {}) == 0


def test_a_bytewax_run_process_is_recognised_by_its_command_line():
    assert cluster.inside_bytewax_run([RUN, "dataflows.facemoment", "-w", "2"])
    assert not cluster.inside_bytewax_run(["/venv/bin/facemoment", "run"])
    assert not cluster.inside_bytewax_run(["-c"])
