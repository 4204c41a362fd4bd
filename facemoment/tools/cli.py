"""`facemoment` command line: the dataflow, the frame daemon, the demo and tools."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from facemoment.core.config import Config, ConfigError, load_config
from facemoment.core.records import LEVEL_NAMES
from facemoment.tools.overrides import child_environment, config_environment, option_settings, preset_names

log = logging.getLogger("facemoment")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _verbose_settings(args: argparse.Namespace) -> Dict[str, Any]:
    # `-v` shows the models' native log lines in the run it starts too.
    return {"output.native_logs": True} if getattr(args, "verbose", False) else {}


def command_config(args: argparse.Namespace, settings: Mapping[str, Any], preset: Optional[str] = None) -> Config:
    """The command's `Config`: presets, file and environment, then its options
    (`settings`); a bad one is one line on stderr and exit 2 (runtime/preflight.py)."""
    from facemoment.runtime import preflight

    presets = preset_names(preset)
    env = config_environment(presets)
    return preflight.startup_config(env, presets=presets, settings={**_verbose_settings(args), **settings})


def _run_flow(cfg: Config, workers: int = 1, ui: Optional[argparse.Namespace] = None) -> int:
    """Run the dataflow for `cfg` in this process, as `python -m bytewax.run` would;
    with `ui.ui`, the review page beside it (facemoment/tools/review/)."""
    from bytewax.run import cli_main

    from dataflows.facemoment import build_flow
    from facemoment.runtime import exit_status, startup

    if not cfg.source.shares:
        cfg.source.shares = workers  # one share per worker thread
    if ui is not None and ui.ui:
        from facemoment.tools.review.launch import start_page_for_run

        if not start_page_for_run(cfg, ui.ui_host, ui.ui_port):
            return 2
    flow = build_flow(cfg, start=True)
    # The same set-up the flow does when it starts, done now on the main thread, so
    # Ctrl-C drains with any worker count.
    startup.start(cfg)
    exit_status.reset()
    cli_main(flow, workers_per_process=workers)
    return exit_status.code()  # the problems are printed at exit (runtime/exit_status.py)


def cmd_process(args: argparse.Namespace) -> int:
    settings: Dict[str, Any] = {
        "source.source": str(Path(args.video)),
        "source.progress": True,
        "output.trace": args.trace,
        # A file has no TRIG consumer by default; --trig-address opts in.
        "output.trig_address": args.trig_address or None,
    }
    settings.update(option_settings(args, output_dir="output.output_dir", output="output.trace_path"))
    if args.fps:
        settings["source.fps"] = args.fps
    return _run_flow(_named_camera(command_config(args, settings, args.preset)), args.workers, ui=args)


def cmd_run(args: argparse.Namespace) -> int:
    settings = option_settings(args, source="source.source", output_dir="output.output_dir")
    cfg = command_config(args, settings)
    return _run_flow(_named_camera(cfg) if getattr(args, "source", None) else cfg, args.workers, ui=args)


def cmd_attach(args: argparse.Namespace) -> int:
    """Join a running frame daemon (visualbase's or `facemoment daemon`) and run the dataflow on it."""
    if not args.address.startswith(("tcp://", "ipc://")):
        print(f"facemoment attach: {args.address!r} is not a ZMQ address (tcp://host:port)", file=sys.stderr)
        return 2
    settings = option_settings(
        args,
        address="source.source",
        output_dir="output.output_dir",
        trig_address="output.trig_address",
        idle_timeout="source.idle_timeout_s",
    )
    return _run_flow(_named_camera(command_config(args, settings, args.preset)), args.workers, ui=args)


def _named_camera(cfg: Config) -> Config:
    """The command names its camera: a configuration file's cameras table steps aside."""
    cfg.cameras.clear()
    return cfg


def cmd_sample(args: argparse.Namespace) -> int:
    from facemoment.formats.sample import ensure_sample_video, write_sample_video

    if args.output:
        write_sample_video(Path(args.output))
        print(args.output)
    else:
        print(ensure_sample_video())
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from facemoment.tools.daemon import daemon_main

    return daemon_main(args) or 0


# A live stream on a small machine: lean keeps every extractor within its deadline on
# two cores, where full fidelity cannot (bench/results.md).
DEMO_PRESET = "lean"


def demo_preset(option: Optional[str], environ: Mapping[str, str]) -> str:
    """The demo's presets: --preset, else $FACEMOMENT_PRESET, else lean ('' is none)."""
    return option if option is not None else environ.get("FACEMOMENT_PRESET", DEMO_PRESET)


def _start_flow(cmd: List[str], env: Mapping[str, str]) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(cmd, env=dict(env))


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default end to end: daemon → ZMQ → dataflow → TRIG + clips."""
    from facemoment.formats.sample import ensure_sample_video
    from facemoment.runtime.trig_listener import TrigListener
    from facemoment.tools.daemon import run_daemon
    from facemoment.tools.review.launch import PageError, ReviewPage

    out_dir = Path(args.output_dir)
    if out_dir.exists() and args.clean:
        shutil.rmtree(out_dir)
    video = ensure_sample_video()
    print(f"sample video: {video}", flush=True)
    frames_address = f"tcp://127.0.0.1:{args.frames_port}"
    trig_address = f"tcp://127.0.0.1:{args.trig_port}"
    preset = demo_preset(args.preset, os.environ)
    print(f"preset: {preset or 'none (full fidelity)'}", flush=True)
    page = ReviewPage(out_dir) if args.ui or args.ui_linger else None
    if page is not None:
        try:
            # The demo's default port may be taken: another free one will do.
            url = page.start(args.ui_host, args.ui_port, any_port_if_busy=not args.ui_linger)
        except PageError as exc:
            print(f"facemoment demo: {exc}", file=sys.stderr)
            return 2
        print(f"review page: {url}", flush=True)
    settings = {
        "source.source": frames_address,
        "source.stream_id": "cam0",
        "source.idle_timeout_s": args.idle_timeout,
        "output.trig_address": trig_address,
        "output.output_dir": str(out_dir),
        **_verbose_settings(args),
    }
    presets = preset_names(preset) or []
    cfg = load_config(config_environment(presets), presets=presets, settings=settings)
    config_dir = tempfile.TemporaryDirectory(prefix="facemoment-demo-")
    # The dataflow process gets this configuration, whole, as its FACEMOMENT_CONFIG.
    env = child_environment(cfg, Path(config_dir.name) / "config.toml")
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.facemoment", "-w", str(args.workers)]
    print("starting: " + " ".join(cmd), flush=True)
    flow = _start_flow(cmd, env)
    # Prints TRIG messages as visualbase would receive them.
    listener = TrigListener(trig_address, on_message=lambda text: print(f"[visualbase side] received {text}", flush=True))
    listener.start()
    try:
        # The daemon waits for the dataflow to subscribe, so no frame is lost to ZMQ's slow joiner.
        run_daemon(
            "sample",
            f"tcp://*:{args.frames_port}" if args.bind_all else f"tcp://127.0.0.1:{args.frames_port}",
            wait_subscribers=1,
            wait_timeout_s=args.start_timeout,
        )
        code = flow.wait()
    except KeyboardInterrupt:
        flow.terminate()
        code = flow.wait()
    finally:
        listener.close(timeout=2)
        config_dir.cleanup()
    print(f"TRIG messages received on {trig_address}: {len(listener.received)}", flush=True)
    if page is not None:
        if args.ui_linger:
            page.linger()
        else:
            page.stop()
            print(f"review page: {page.url} stopped; review the run again with: facemoment serve {out_dir}", flush=True)
    return code


RECIPES = """\
with a frame daemon (visualbase's `daemon SOURCE --pub ADDRESS`, or this one):
  facemoment daemon video.mp4 --pub tcp://*:5555
  FACEMOMENT_SOURCE=tcp://127.0.0.1:5555 facemoment run          # TRIG to unix:///tmp/trig.sock

with a stock visualbase ingest (proxy FIFOs, OBS and TRIG over Unix datagram sockets):
  visualbase ingest 0 --proxy face:/tmp/vid_face.mjpg:640:480:10 \\
      --proxy pose:/tmp/vid_pose.mjpg:640:480:10 --trig-socket /tmp/trig.sock
  facemoment extract fifo:///tmp/vid_face.mjpg --obs-address unix:///tmp/obs.sock --extractors face,quality
  facemoment extract fifo:///tmp/vid_pose.mjpg --obs-address unix:///tmp/obs.sock --extractors pose,gesture
  FACEMOMENT_OBS_INPUTS=unix:///tmp/obs.sock FACEMOMENT__SOURCE__OBS_PUBLISHERS=2 \\
      FACEMOMENT_TRIG_ADDRESS=unix:///tmp/trig.sock facemoment run
  (`facemoment ingest` stands in for visualbase's ingest; one process instead:
   FACEMOMENT_SOURCE=fifo:///tmp/vid_face.mjpg facemoment run)
"""


def build_parser() -> argparse.ArgumentParser:
    from facemoment.tools.review.launch import add_serve_args, add_ui_args

    parser = argparse.ArgumentParser(
        prog="facemoment", description=__doc__, epilog=RECIPES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and the models' native log lines (quiet by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="run the dataflow on a video file")
    p.add_argument("video", help="a video file, a recording, or 'sample' for the built-in sample")
    p.add_argument("--trace", default="normal", choices=LEVEL_NAMES)
    p.add_argument("-o", "--output", help="trace file (default OUTPUT_DIR/trace.jsonl)")
    p.add_argument("--output-dir", help="where triggers.jsonl, clips/ and trace.jsonl go")
    p.add_argument("--preset", help="comma-separated presets, e.g. batch,conservative")
    p.add_argument("--fps", type=float, help="sample the file at this rate")
    p.add_argument("--trig-address", help="also publish TRIG messages on this ZMQ address")
    p.add_argument("-w", "--workers", type=int, default=1)
    add_ui_args(p)
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("run", help="run the dataflow as configured by the environment")
    p.add_argument("--source")
    p.add_argument("--output-dir")
    p.add_argument("-w", "--workers", type=int, default=1)
    add_ui_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("attach", help="join a running frame daemon: run the dataflow on its ZMQ address")
    p.add_argument("address", help="the daemon's address, e.g. tcp://localhost:5555")
    p.add_argument("--output-dir", help="where triggers.jsonl, clips/ and trace.jsonl go")
    p.add_argument("--trig-address", help="where TRIG goes (default unix:///tmp/trig.sock, visualbase ingest's socket; "
                   "tcp://host:port binds a ZMQ PUB; 'none' disables)")
    p.add_argument("--idle-timeout", type=float, help="end this many seconds after the last frame")
    p.add_argument("--preset", help="comma-separated presets, e.g. low_latency")
    p.add_argument("-w", "--workers", type=int, default=1)
    add_ui_args(p)
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("daemon", help="publish frames in the visualbase wire format (daemon SOURCE --pub ADDRESS)")
    from facemoment.tools.daemon import add_daemon_args

    add_daemon_args(p)
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("demo", help="the built-in sample end to end through ZMQ")
    p.add_argument("--output-dir", default="out")
    p.add_argument("--frames-port", type=int, default=5555)
    p.add_argument("--trig-port", type=int, default=5556)
    p.add_argument("--idle-timeout", type=float, default=2.0)
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("-w", "--workers", type=int, default=1)
    p.add_argument("--bind-all", action="store_true", help="publish frames on all interfaces")
    p.add_argument("--preset", default=None,
                   help=f"presets for the live run (default: $FACEMOMENT_PRESET, else {DEMO_PRESET}; "
                        "'' for full fidelity on every frame)")
    p.add_argument("--no-clean", dest="clean", action="store_false", help="keep earlier outputs")
    add_ui_args(p, default_on=True)
    p.set_defaults(func=cmd_demo)

    from facemoment.tools.extract import add_extract_args
    from facemoment.tools.record import add_record_args
    from facemoment.tools.report import add_report_args
    from facemoment.tools.trace_tools import add_trace_args

    from facemoment.tools.ingest import add_ingest_args

    add_record_args(sub)
    add_extract_args(sub)
    add_ingest_args(sub)
    from facemoment.tools.benchmark import add_benchmark_args
    from facemoment.tools.debug_view import add_debug_args

    add_benchmark_args(sub)
    add_debug_args(sub)

    add_trace_args(sub)
    add_report_args(sub)
    add_serve_args(sub)

    p = sub.add_parser("sample", help="write the built-in sample video")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_sample)
    for command in sub.choices.values():
        # `facemoment process x.mp4 -v` works as well as `facemoment -v process x.mp4`.
        if not any("-v" in action.option_strings for action in command._actions):
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="debug logging and the models' native log lines")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    if not verbose and os.environ.get("FACEMOMENT__OUTPUT__NATIVE_LOGS", "").lower() not in ("1", "true", "yes", "on"):
        from facemoment.runtime.native_logs import filter_native_stderr

        filter_native_stderr()
    _setup_logging(verbose)
    from connectors.trig_pub import TrigBindError
    from operators.extraction.backends.runtime import ModelLoadError, ModelNotFoundError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"facemoment: configuration error: {exc}", file=sys.stderr)
        return 2
    except (TrigBindError, ModelNotFoundError, ModelLoadError) as exc:
        print(f"facemoment: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
