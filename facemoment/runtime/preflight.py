"""Start-up checks, the same at every entry point, before the dataflow starts.

`facemoment process`/`run` and `python -m bytewax.run dataflows.facemoment` both
call :func:`startup_config`: the configuration is loaded, then every configured
stream, the output paths and the TRIG address are checked.  A problem prints one
line on stderr and exits with :data:`EXIT_STARTUP`, instead of a traceback from
deep inside the dataflow (or, for a busy TRIG port, lost triggers later).

Exit codes of a run (README, docs/architecture.md):

- 0: the input was read to its end (or stopped by Ctrl-C / SIGTERM) and every
  output written;
- 1: the run failed;
- 2 (:data:`EXIT_STARTUP`): it could not start: a configuration, source, output
  or TRIG problem, named on stderr;
- 3 (:data:`EXIT_INPUT_INCOMPLETE`): a file or recording could not be read to its
  end (damaged part way, or nothing readable); the outputs hold what was read.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from facemoment.core.addresses import UNIX_SCHEME, ZMQ_SCHEMES, parse_address
from facemoment.core.config import Config, ConfigError, cameras, load_config, obs_input
from facemoment.formats.proxy_pipe import FIFO_SCHEME, fifo_path, is_fifo
from facemoment.runtime import cluster
from facemoment.runtime.exit_status import EXIT_INPUT_INCOMPLETE  # noqa: F401  (one table of codes)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STARTUP = 2

LIVE_PREFIXES = tuple(f"{scheme}://" for scheme in ZMQ_SCHEMES)


class StartupError(ConfigError):
    """A configured stream, output or address that cannot work."""


def source_kind(source: str) -> str:
    """zmq | fifo | sample | camera | url | recording | file.

    A FIFO (``fifo:///path``, or a path where a FIFO is) is told by the path's type,
    never by opening it: a proxy FIFO opened and closed unread breaks its writer.
    """
    if source.startswith(LIVE_PREFIXES):
        return "zmq"
    if source.startswith(FIFO_SCHEME):
        return "fifo"
    if source == "sample":
        return "sample"
    if source.isdigit():
        return "camera"
    if "://" in source:
        return "url"
    if is_fifo(source):
        return "fifo"
    from facemoment.formats.recording import is_recording

    if is_recording(source):
        return "recording"
    return "file"


def configured_streams(cfg: Config) -> List[Tuple[str, str]]:
    """(stream id, source analysed) of every camera (core/config/cameras.py)."""
    return [(camera.stream_id, camera.analysed) for camera in cameras(cfg)]


def check_source(source: str) -> None:
    """A file or recording source must exist, be a file, and yield a first frame."""
    kind = source_kind(source)
    if kind == "fifo":
        check_fifo(source)
        return
    if kind not in ("file", "recording"):
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise StartupError(f"source {source!r} does not exist (and is not a tcp:// address or a camera index)")
    if not path.is_file():
        raise StartupError(f"source {source!r} is a directory, not a video file or recording")
    from facemoment.formats.frames import open_frames

    try:
        reader = open_frames(str(path))
        try:
            first = reader.read()
        finally:
            reader.close()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not usable"
        raise StartupError(f"source {source!r} cannot be read as a {_what(kind)}: {_one_line(exc)}") from exc
    if first is None:
        raise StartupError(f"source {source!r} holds no readable frame (not a {_what(kind)}, or damaged at its start)")


def check_fifo(source: str) -> None:
    """A proxy FIFO source: an absolute path where a FIFO is, or nothing yet (the
    source waits for visualbase's ingest to create it). Never opened here."""
    path = fifo_path(source)
    if not path.startswith("/"):
        raise StartupError(f"FIFO source {source!r} must name an absolute path: fifo:///path/to/pipe")
    if os.path.lexists(path) and not is_fifo(path):
        what = "a directory" if os.path.isdir(path) else "not a FIFO"
        raise StartupError(f"FIFO source {source!r}: {path} is {what} (expected visualbase ingest's --proxy pipe)")
    if not os.path.isdir(os.path.dirname(path) or "/"):
        raise StartupError(f"FIFO source {source!r}: directory {os.path.dirname(path)} does not exist")


def check_output(cfg: Config) -> None:
    """The output directory (and the trace file's) can be created and written."""
    out = cfg.output
    dirs = [Path(out.output_dir)]
    if out.trace_path:
        trace = Path(out.trace_path)
        if trace.is_dir():
            raise StartupError(f"trace path {out.trace_path!r} is a directory, not a file")
        dirs.append(trace.parent)
    for folder in dirs:
        if folder.exists() and not folder.is_dir():
            raise StartupError(f"output directory {str(folder)!r} is a file")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create output directory {str(folder)!r}: {exc.strerror or exc}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StartupError(f"output directory {str(folder)!r} is not writable")


def ipc_conflict(address: str, what: str = "TRIG") -> Optional[str]:
    """Why binding ZeroMQ at an ``ipc://`` address would break something, or None.

    ZeroMQ removes whatever file is at an ipc:// path when it binds. A Unix datagram
    socket there is visualbase's (``ingest --trig-socket``), one letter away from the
    ``unix://`` address that was surely meant; a stream socket that accepts is another
    process's live endpoint. A stream socket nobody listens on is a stale one ZeroMQ
    may replace. The check connects a stream socket, which a datagram socket refuses
    by type without noticing anything.
    """
    parsed = parse_address(address, what, unix=True)
    if parsed.scheme != "ipc":
        return None
    path = parsed.path
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # nothing there (or not reachable): ZeroMQ's bind reports the rest
    if not stat.S_ISSOCK(mode):
        return f"{what} address {address}: {path} exists and is not a socket; ZeroMQ would delete it on bind"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            return (
                f"{what} address {address}: {path} is a Unix datagram socket (visualbase's), not ZeroMQ's, "
                f"and binding ipc:// would replace it; use unix://{path}"
            )
        return None  # a stale socket file: nobody listens
    finally:
        probe.close()
    return f"{what} address {address}: {path} is in use by another process's socket"


def datagram_bind_conflict(path: str, what: str = "OBS input") -> Optional[str]:
    """Why a Unix datagram socket cannot be bound at ``path`` (a stale socket file is
    removed at bind, as visualbase does), or None."""
    folder = os.path.dirname(path) or "/"
    if not os.path.isdir(folder):
        return f"{what} unix://{path}: directory {folder} does not exist"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return f"{what} unix://{path}: {path} exists and is not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return None  # nobody bound to it (or not a datagram socket): stale, replaced at bind
    finally:
        probe.close()
    return f"{what} unix://{path}: another process is bound to {path}"


def check_trig(address: Optional[str]) -> None:
    """The TRIG address binds now, not at the first trigger (whose TRIG would be lost).

    Only the first process checks: the others start while it may hold the port.
    """
    if not address or cluster.process_index() != 0:
        return
    conflict = ipc_conflict(address, "TRIG")
    if conflict is not None:
        raise StartupError(conflict)
    exc = bind_error(address)
    if exc is not None:
        raise StartupError(f"TRIG address {address} cannot be bound ({exc}); is another run using it?") from exc


def bind_error(address: str) -> Optional[Exception]:
    """Why a PUB socket cannot bind `address` right now (None: it can). Datagram
    (unix://) addresses bind nothing on this side; wildcard addresses are not probed."""
    import zmq

    if parse_address(address, "TRIG", unix=True).scheme == UNIX_SCHEME or "*" in address:
        return None
    conflict = ipc_conflict(address)
    if conflict is not None:
        return OSError(conflict)  # never bound: the bind itself would replace the file

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        return exc
    finally:
        sock.close()
        ctx.term()
    return None


def check_obs(cfg: Config) -> None:
    """OBS out (bound here when ZeroMQ) and OBS inputs over unix:// (bound here)."""
    address = cfg.output.obs_address
    if address:
        conflict = ipc_conflict(address, "OBS")
        if conflict is not None:
            raise StartupError(conflict)
    for entry in cfg.source.obs_inputs:
        parsed = parse_address(obs_input(entry, cfg.source.stream_id)[1], "OBS publisher", unix=True)
        if parsed.scheme == UNIX_SCHEME:
            conflict = datagram_bind_conflict(parsed.path)
            if conflict is not None:
                raise StartupError(conflict)


def check_socket_folders(cfg: Config) -> None:
    """The folder of a ``unix://`` or ``ipc://`` TRIG or OBS socket exists: a TRIG
    datagram to a path in a missing folder would fail at every send."""
    for what, address in (("TRIG", cfg.output.trig_address), ("OBS", cfg.output.obs_address)):
        if not address:
            continue
        parsed = parse_address(address, what, unix=True)
        if parsed.scheme not in (UNIX_SCHEME, "ipc"):
            continue
        folder = Path(parsed.path).expanduser().parent
        if not folder.is_dir():
            raise StartupError(f"{what} address {address}: folder {str(folder)!r} does not exist")


def check(cfg: Config) -> None:
    """Every start-up check; raises :class:`ConfigError` with a one-line message."""
    for camera in cameras(cfg):
        check_source(camera.analysed)
        if camera.record:
            live = ("zmq", "fifo", "camera", "url")
            if source_kind(camera.analysed) not in live or source_kind(camera.record) not in live:
                raise StartupError(
                    f"camera {camera.stream_id!r}: a detect stream and the camera's source must both be live "
                    f"(tcp://..., a FIFO, a camera or a URL); a file is analysed and cut as it is"
                )
            check_source(camera.record)
    check_output(cfg)
    check_obs(cfg)
    check_socket_folders(cfg)
    check_trig(cfg.output.trig_address)


def startup_config(
    env: Optional[Mapping[str, str]] = None,
    presets: Optional[List[str]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> Config:
    """The checked configuration (`load_config`'s arguments), or one line on stderr
    and exit :data:`EXIT_STARTUP`."""
    try:
        cfg = load_config(env, presets=presets, settings=settings)
        check(cfg)
    except ConfigError as exc:
        print(f"facemoment: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STARTUP) from None
    return cfg


def _what(kind: str) -> str:
    return "recording" if kind == "recording" else "video"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
