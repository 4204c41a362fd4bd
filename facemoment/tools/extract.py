"""`facemoment extract`: the remote B*.

Reads frames from a frame publisher (a visualbase daemon or ``facemoment daemon``)
or from one of visualbase ingest's proxy FIFOs, runs the chosen extractors and
sends every observation as OBS text: on a ZMQ PUB, or as datagrams to a Unix
socket the fusion binds. A fusion-only dataflow (``FACEMOMENT_OBS_INPUTS``) takes
one or more of these, aligns and fuses:

    facemoment daemon video.mp4 --pub tcp://*:5555                                             # A
    facemoment extract tcp://a-host:5555 --obs-address tcp://*:5560 --extractors face,quality   # B*
    facemoment extract tcp://a-host:5555 --obs-address tcp://*:5561 --extractors pose,gesture   # B*
    FACEMOMENT_OBS_INPUTS=tcp://b1:5560,tcp://b2:5561 facemoment run                             # C

or the seed's layout around a stock ``visualbase ingest``:

    visualbase ingest 0 --proxy face:/tmp/vid_face.mjpg:640:480:10 \
        --proxy pose:/tmp/vid_pose.mjpg:640:480:10 --trig-socket /tmp/trig.sock               # A
    facemoment extract fifo:///tmp/vid_face.mjpg --obs-address unix:///tmp/obs.sock --extractors face,quality
    facemoment extract fifo:///tmp/vid_pose.mjpg --obs-address unix:///tmp/obs.sock --extractors pose,gesture
    FACEMOMENT_OBS_INPUTS=unix:///tmp/obs.sock FACEMOMENT__SOURCE__OBS_PUBLISHERS=2 \
        FACEMOMENT_TRIG_ADDRESS=unix:///tmp/trig.sock facemoment run                          # C
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any, Dict

from facemoment.tools.overrides import config_environment, option_settings, preset_names


def extract_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings one extraction process takes from its options."""
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    settings: Dict[str, Any] = {
        "source.source": args.source,
        "output.obs_address": args.obs_address,
        "output.obs_publisher": name,
        "output.obs_subscriber_wait_s": args.subscriber_wait,
        "output.trig_address": None,  # fusion sends TRIG, not an extractor
    }
    settings.update(
        option_settings(
            args,
            extractors="extract.extractors",
            stream_id="source.stream_id",
            idle_timeout="source.idle_timeout_s",
            output_dir="output.output_dir",
        )
    )
    if getattr(args, "verbose", False):
        settings["output.native_logs"] = True  # `-v`: the models' native log lines too
    return settings


def cmd_extract(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    from dataflows.facemoment import build_extract_flow
    from facemoment.runtime import preflight, startup

    presets = preset_names(args.preset)
    env = config_environment(presets)
    settings = extract_settings(args)
    if not env.get("FACEMOMENT__OUTPUT__TRACE_PATH"):
        # Its own trace file, so it can share an output directory with the fusion process.
        name = settings["output.obs_publisher"]
        settings["output.trace_path"] = os.path.join(args.output_dir or "out", f"extract-{name}.trace.jsonl")
    # The same start-up checks as a run: a FIFO is classified without opening it, an
    # ipc:// OBS address that is another program's socket file is refused.
    cfg = preflight.startup_config(env, presets, settings)
    if not cfg.source.shares:
        cfg.source.shares = args.workers
    flow = build_extract_flow(cfg, start=True)
    startup.start(cfg)  # on the main thread, as `facemoment run` does
    cli_main(flow, workers_per_process=args.workers)
    return 0


def add_extract_args(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("extract", help="run extractors on published frames and publish OBS messages (the remote B*)")
    p.add_argument(
        "source",
        help="the frame publisher, e.g. tcp://127.0.0.1:5555, or a visualbase ingest proxy FIFO, "
        "fifo:///tmp/vid_face.mjpg (a file or camera also works)",
    )
    p.add_argument(
        "--obs-address",
        default=os.environ.get("FACEMOMENT_OBS_ADDRESS", "tcp://127.0.0.1:5560"),
        help="where OBS goes: a ZMQ address to bind, or unix:///tmp/obs.sock, the datagram socket "
        "the fusion binds (default: FACEMOMENT_OBS_ADDRESS or tcp://127.0.0.1:5560)",
    )
    p.add_argument("--extractors", help="comma-separated: face,pose,gesture,quality (default: all)")
    p.add_argument("--name", help="this publisher's name in its OBS messages (default: host-pid)")
    p.add_argument("--stream-id", help="the stream these frames belong to (default cam0)")
    p.add_argument("--preset", help="comma-separated presets, e.g. batch")
    p.add_argument("--idle-timeout", type=float, help="end after this many seconds without a frame")
    p.add_argument("--output-dir", help="where its trace goes (extract-NAME.trace.jsonl)")
    p.add_argument(
        "--subscriber-wait", type=float, default=1.0, metavar="S", help="before the first OBS, wait up to S seconds for a subscriber"
    )
    p.add_argument("-w", "--workers", type=int, default=1)
    p.set_defaults(func=cmd_extract)


__all__ = ["add_extract_args", "cmd_extract", "extract_settings"]
