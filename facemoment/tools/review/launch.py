"""Starting the review page: `facemoment serve`, and `--ui` beside a run.

Beside a run the page is a child process, so reading and sending files never takes
the dataflow's interpreter. The socket is bound here, before the run starts (a busy
port is a one-line error, exit 2), and handed to the child, which therefore needs
no start-up handshake: the kernel queues connections until it accepts them.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional

from facemoment.tools.review.server import DEFAULT_HOST, DEFAULT_PORT, ReviewServer


class PageError(Exception):
    """The review page cannot start (the address is taken or invalid)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; PageError with one line when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PageError(f"review page: cannot resolve host {host!r} ({exc.strerror})") from None
    family, _type, _proto, _name, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PageError(f"review page: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def page_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def add_ui_args(parser: argparse.ArgumentParser, default_on: bool = False) -> None:
    """--ui (or --no-ui where it is on by default), --ui-host, --ui-port on a run command."""
    if default_on:
        parser.add_argument("--no-ui", dest="ui", action="store_false",
                            help="do not serve the review page while the demo runs")
        parser.add_argument("--ui", dest="ui_linger", action="store_true",
                            help="keep serving the review page after the run until Ctrl-C")
    else:
        parser.add_argument("--ui", action="store_true",
                            help="serve the review page while the run lasts and after it, until Ctrl-C")
    parser.add_argument("--ui-host", default=DEFAULT_HOST, help=f"the page's address (default {DEFAULT_HOST})")
    parser.add_argument("--ui-port", type=int, default=DEFAULT_PORT, help=f"the page's port (default {DEFAULT_PORT})")


class ReviewPage:
    """The review page of one output directory, served by a child process."""

    def __init__(self, out_dir: Path, trace_path: Optional[Path] = None) -> None:
        self.out_dir = Path(out_dir)
        self.trace_path = trace_path
        self.proc: Optional[subprocess.Popen] = None
        self.url: Optional[str] = None

    def start(self, host: str, port: int, any_port_if_busy: bool = False) -> str:
        try:
            sock = bind(host, port)
        except PageError:
            if not any_port_if_busy:
                raise
            sock = bind(host, 0)
        try:
            cmd: List[str] = [sys.executable, "-m", "facemoment.tools.review", str(self.out_dir),
                              "--fd", str(sock.fileno()), "--parent-pid", str(os.getpid())]
            if self.trace_path is not None:
                cmd += ["--trace", str(self.trace_path)]
            # Its own session: Ctrl-C in the terminal ends the run, not the page; stop() ends it.
            self.proc = subprocess.Popen(cmd, pass_fds=(sock.fileno(),), start_new_session=True)
            self.url = page_url(sock)
        finally:
            sock.close()  # the child holds its own copy
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def linger(self) -> None:
        """Keep serving until Ctrl-C (or SIGTERM), then stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        print(f"review page: {self.url} (the run has ended; Ctrl-C stops the page)", file=sys.stderr, flush=True)
        proc = self.proc
        try:
            wait_for_signal(lambda: proc.poll() is not None)
        finally:
            self.stop()


def wait_for_signal(ended: Callable[[], bool] = lambda: False) -> None:
    """Block the main thread until Ctrl-C, SIGTERM or `ended()`.

    Its own handlers for both: the run's draining Ctrl-C handler may still be installed.
    """
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):  # wakes to look at `ended`
            if ended():
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_directory(out_dir: Path, sock: socket.socket, trace_path: Optional[Path] = None,
                    parent_pid: Optional[int] = None) -> None:
    """Serve on `sock` until Ctrl-C, SIGTERM, or (with `parent_pid`) the parent's end."""
    server = ReviewServer(out_dir, sock=sock, trace_path=trace_path)
    server.start()
    if parent_pid is not None:
        def watch_parent() -> None:
            while os.getppid() == parent_pid:
                threading.Event().wait(1.0)  # polling period: no event tells a child its parent ended
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch_parent, name="review-parent", daemon=True).start()
    try:
        wait_for_signal()
    finally:
        server.stop()


def add_serve_args(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a run's review page (live or finished) in a browser")
    p.add_argument("output_dir", help="the run's output directory (triggers.jsonl, clips/, trace.jsonl)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--trace", help="the trace file when it is not OUTPUT_DIR/trace.jsonl")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"facemoment serve: {out_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        sock = bind(args.host, args.port)
    except PageError as exc:
        print(f"facemoment serve: {exc}", file=sys.stderr)
        return 2
    url = page_url(sock)
    print(f"review page: {url} serving {out_dir} (Ctrl-C stops it)", flush=True)
    serve_directory(out_dir, sock, Path(args.trace) if args.trace else None)
    return 0


def child_main(argv: Optional[List[str]] = None) -> int:
    """`python -m facemoment.tools.review OUT --fd N`: the page beside a run."""
    p = argparse.ArgumentParser(prog="python -m facemoment.tools.review")
    p.add_argument("output_dir")
    p.add_argument("--fd", type=int, required=True, help="a listening socket inherited from the parent")
    p.add_argument("--trace")
    p.add_argument("--parent-pid", type=int)
    args = p.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    serve_directory(Path(args.output_dir), sock, Path(args.trace) if args.trace else None, args.parent_pid)
    return 0


def start_page_for_run(cfg: Any, host: str, port: int) -> bool:
    """`--ui` on a run in this process: the page of its output directory, kept serving
    after the run (until Ctrl-C) once the run summary is printed. False (and one line
    on stderr) when the page cannot start; the run then does not start either."""
    out_dir = Path(cfg.output.output_dir)
    trace = Path(cfg.output.trace_path) if cfg.output.trace_path else None
    page = ReviewPage(out_dir, trace)
    try:
        url = page.start(host, port)
    except PageError as exc:
        print(f"facemoment: {exc}", file=sys.stderr)
        return False
    print(f"review page: {url}", file=sys.stderr, flush=True)
    # Registered before the run registers its summary: exit handlers run last-in
    # first-out, so the summary is printed first and the page lingers after it.
    atexit.register(page.linger)
    return True
