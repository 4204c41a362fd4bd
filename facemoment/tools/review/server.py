"""The review page's HTTP server (aiohttp): the page, its state, live events, the run's files.

Read-only and local by default: only GET (and HEAD), files only from under the output
directory (paths.served_file), bound to 127.0.0.1 unless told otherwise. It runs its
event loop on a thread of its own and reads the files on another, so a run in the same
process only shares the interpreter with it, and a browser that reads slowly only
loses events of its own (hub.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Optional

from aiohttp import web

from facemoment.tools.review.hub import QUEUE_SIZE, RESYNC, Hub
from facemoment.tools.review.paths import PathRefused, served_file
from facemoment.tools.review.run_state import RunState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# How often the files are looked at: new highlights reach the page within about this.
POLL_S = 0.25
# A comment line this often keeps proxies and browsers from closing a quiet stream.
KEEPALIVE_S = 15.0
CLOSE = ("close", {})


def encode_event(name: str, data: Dict[str, Any]) -> bytes:
    """One server-sent event: its name and its JSON on one data line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode("utf-8")


class ReviewServer:
    """Serves the review page of `out_dir` until stopped.

    Give `host`/`port` to bind, or `sock`, a listening socket bound already (a parent
    process that checked the port before starting the run passes it on).
    """

    def __init__(
        self,
        out_dir: Path,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        sock: Optional[socket.socket] = None,
        trace_path: Optional[Path] = None,
        poll_s: float = POLL_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.state = RunState(self.out_dir, trace_path)
        self.hub = Hub(queue_size)
        self.host, self.port, self.sock = host, port, sock
        self.poll_s = poll_s
        self.url: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="review-read")

    # --- the web application -------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/clients", self._api_clients)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/files/{path:.*}", self._file)
        return app

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._send_file(STATIC_DIR, request.match_info["name"])

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return self._send_file(self.out_dir, request.match_info["path"])

    @staticmethod
    def _send_file(root: Path, relative: str) -> web.StreamResponse:
        try:
            path = served_file(root, relative)
        except PathRefused:
            raise web.HTTPForbidden(text="outside the served directory\n")
        if path is None:
            raise web.HTTPNotFound(text="no such file\n")
        # FileResponse answers Range requests: the browser's video element seeks with them.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _api_state(self, request: web.Request) -> web.StreamResponse:
        snapshot = await asyncio.get_running_loop().run_in_executor(self._reader, self.state.snapshot)
        return web.json_response(snapshot)

    async def _api_clients(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.hub.stats())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        client = self.hub.connect(str(request.remote))
        loop = asyncio.get_running_loop()
        try:
            # Connected first, snapshot second: an event in between is sent twice, never lost.
            await response.write(encode_event("snapshot", await loop.run_in_executor(self._reader, self.state.snapshot)))
            while True:
                try:
                    event = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is CLOSE:
                    break
                if event is RESYNC:
                    event = ("snapshot", await loop.run_in_executor(self._reader, self.state.snapshot))
                await response.write(encode_event(*event))
                client.delivered += 1
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.hub.disconnect(client)
        return response

    # --- watching the files --------------------------------------------------------

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                events = await loop.run_in_executor(self._reader, self.state.poll)
            except Exception:  # noqa: BLE001 - a bad file must not stop the page
                log.exception("review page: reading %s failed", self.out_dir)
                await asyncio.sleep(self.poll_s)
                continue
            for name, data in events:
                self.hub.publish(name, data)
            self.hub.flush_resyncs()
            if all(t.caught_up for t in self.state.tails.values()):
                await asyncio.sleep(self.poll_s)  # the polling period; a file far behind is read on at once

    # --- running on a thread of its own --------------------------------------------

    async def _open(self) -> web.AppRunner:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        if self.sock is not None:
            site: web.BaseSite = web.SockSite(runner, self.sock)
        else:
            site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/"
        return runner

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._stop = asyncio.Event()
            runner = loop.run_until_complete(self._open())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        watcher = loop.create_task(self._watch())
        try:
            loop.run_until_complete(self._stop.wait())
        finally:
            watcher.cancel()
            for client in list(self.hub.clients.values()):
                if not client.queue.full():
                    client.queue.put_nowait(CLOSE)
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
            loop.close()
            self._reader.shutdown(wait=False, cancel_futures=True)

    def start(self, timeout_s: float = 30.0) -> str:
        """Bind and start serving; the page's address. Raises OSError when it cannot bind."""
        self._thread = threading.Thread(target=self._run, name="review-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"the review page did not start within {timeout_s:.0f} s")
        if self._error is not None:
            raise self._error
        assert self.url is not None
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> "ReviewServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
