"""Prometheus metrics, off by default.

    start_metrics_server(9108)          # serves /metrics on 127.0.0.1:9108
    metrics.frame_in("cam0")            # from the hot path

Until ``enable()`` (or ``start_metrics_server``) runs, every recording function
returns after one module-global check, so the hot path pays nothing for metrics
nobody scrapes. The metrics live in their own ``CollectorRegistry``, never the
process-wide default, so tests can enable, read and throw them away cleanly.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Optional, Set, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from facemoment.core.config import KNOWN_EXTRACTORS, ConfigError
from facemoment.core.records import CameraRates, FrameDrop, Record, SyncDelay, Timing, TriggerFire

log = logging.getLogger(__name__)

PORT_SETTING = "FACEMOMENT__OUTPUT__METRICS_PORT"

# Extractors take roughly 1-200 ms per frame; finer steps where the deadline decisions happen.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class MetricsServerError(ConfigError):
    """The metrics endpoint could not be served (port busy, or a second, different one asked for)."""


@dataclass
class _Metrics:
    registry: CollectorRegistry
    frames_in: Counter
    frames_processed: Counter
    frames_dropped: Counter
    late_observations: Counter
    triggers: Counter
    extractor_latency: Histogram
    queue_depth: Gauge
    camera_occupied: Gauge
    budget_level: Gauge
    extractor_rate: Gauge
    camera_cores: Gauge


def _build() -> _Metrics:
    registry = CollectorRegistry(auto_describe=True)
    return _Metrics(
        registry=registry,
        frames_in=Counter("facemoment_frames_in", "Frames received from a source", ["stream"], registry=registry),
        frames_processed=Counter(
            "facemoment_frames_processed", "Frames that went through extraction", ["stream"], registry=registry
        ),
        frames_dropped=Counter(
            "facemoment_frames_dropped",
            "Frames dropped, by reason (backpressure, timeout, queue_full)",
            ["stream", "reason"],
            registry=registry,
        ),
        late_observations=Counter(
            "facemoment_late_observations",
            "Observations that arrived after their alignment window had closed",
            ["stream", "extractor"],
            registry=registry,
        ),
        triggers=Counter("facemoment_triggers", "Highlight triggers fired", ["stream", "reason"], registry=registry),
        extractor_latency=Histogram(
            "facemoment_extractor_latency_seconds",
            "Per-frame processing time of each extractor",
            ["extractor"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        queue_depth=Gauge(
            "facemoment_queue_depth", "Frames queued for extraction when the newest frame was submitted", ["stream"], registry=registry
        ),
        camera_occupied=Gauge(
            "facemoment_camera_occupied", "1 while the CPU budget counts the camera as occupied", ["stream"], registry=registry
        ),
        budget_level=Gauge(
            "facemoment_budget_level", "A camera's level under the CPU budget, by load or its allowance (0: the declared rates)", ["stream"], registry=registry
        ),
        extractor_rate=Gauge(
            "facemoment_extractor_rate_fps",
            "Each extractor's effective rate on a camera under the CPU budget (0: not run)",
            ["stream", "extractor"],
            registry=registry,
        ),
        camera_cores=Gauge(
            "facemoment_camera_cores",
            "What a camera's schedule under the CPU budget costs, in cores of extraction (budget.camera_cores holds it)",
            ["stream"],
            registry=registry,
        ),
    )


# The one check every recording function makes; None while metrics are off.
_active: Optional[_Metrics] = None
_lock = threading.Lock()
_server: Optional[Tuple[object, threading.Thread, str, int]] = None
_warned: Set[str] = set()


def enable() -> CollectorRegistry:
    """Turn recording on (idempotent) and return the registry the metrics live in."""
    global _active
    with _lock:
        if _active is None:
            _active = _build()
        return _active.registry


def disable() -> None:
    """Turn recording off, stop the endpoint if one runs and forget every value."""
    global _active
    with _lock:
        _stop_server_locked()
        _active = None


def registry() -> Optional[CollectorRegistry]:
    """The live registry, or None while metrics are off."""
    current = _active
    return None if current is None else current.registry


def enabled() -> bool:
    return _active is not None


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Enable metrics and serve them at http://addr:port/metrics from a daemon thread.

    Calling it again with the same address does nothing; a busy port or a second,
    different address raises ``MetricsServerError``.
    """
    global _active, _server
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise MetricsServerError(f"metrics port must be an integer in 1-65535, got {port!r} (set {PORT_SETTING})")
    with _lock:
        if _server is not None:
            _, _, running_addr, running_port = _server
            if (running_addr, running_port) == (addr, port):
                return
            raise MetricsServerError(
                f"metrics are already served on {running_addr}:{running_port}; cannot also serve {addr}:{port}"
            )
        metrics = _active if _active is not None else _build()
        try:
            server, thread = start_http_server(port, addr=addr, registry=metrics.registry)
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}; "
                f"the port is probably in use, choose another with {PORT_SETTING}"
            ) from exc
        _active = metrics
        _server = (server, thread, addr, port)
    log.info("metrics on http://%s:%d/metrics", addr, port)


def _stop_server_locked() -> None:
    global _server
    if _server is None:
        return
    server, thread, _, _ = _server
    _server = None
    server.shutdown()  # type: ignore[attr-defined]
    server.server_close()  # type: ignore[attr-defined]
    thread.join(timeout=5.0)


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _usable(key: str, value: object, message: str, *args: object) -> bool:
    """A count or duration a metric can take: a number, not negative, not NaN.
    Otherwise `message` (with `value` first) is logged once per `key`."""
    try:
        if value >= 0:  # type: ignore[operator]
            return True
    except TypeError:
        pass
    _warn_once(key, message, value, *args)
    return False


# --- hot path: one global check while off ----------------------------------------


def frame_in(stream: str) -> None:
    m = _active
    if m is None:
        return
    m.frames_in.labels(stream).inc()


def frame_processed(stream: str) -> None:
    m = _active
    if m is None:
        return
    m.frames_processed.labels(stream).inc()


def frames_dropped(stream: str, reason: str, n: int = 1) -> None:
    m = _active
    if m is None or not _usable("frames_dropped", n, "ignoring an invalid dropped-frame count (%r) for stream %s", stream):
        return
    m.frames_dropped.labels(stream, reason).inc(n)


def late_observation(stream: str, extractor: str) -> None:
    m = _active
    if m is None:
        return
    m.late_observations.labels(stream, extractor).inc()


def trigger(stream: str, reason: str) -> None:
    m = _active
    if m is None:
        return
    m.triggers.labels(stream, reason).inc()


def extractor_latency(extractor: str, seconds: float) -> None:
    m = _active
    if m is None or not _usable("extractor_latency", seconds, "ignoring an invalid latency (%r s) for extractor %s", extractor):
        return
    m.extractor_latency.labels(extractor).observe(seconds)


def queue_depth(stream: str, n: int) -> None:
    m = _active
    if m is None:
        return
    m.queue_depth.labels(stream).set(n)


# --- from trace records ------------------------------------------------------------


def observe_record(record: Record) -> None:
    """Count what one trace record says (drops, late observations, triggers, latencies).

    Lets the dataflow feed metrics from the trace records it already produces; a
    record that cannot be read is skipped with one warning.
    """
    if _active is None:
        return
    try:
        _observe(record)
    except (AttributeError, TypeError, ValueError) as exc:
        _warn_once("observe_record", "metrics skipped an unreadable trace record: %s", exc)


def _observe(record: Record) -> None:
    if isinstance(record, Timing):
        component = record.component
        if component == "orchestrator":
            # One per frame the orchestrator finished, with the deepest extractor queue.
            frame_processed(record.stream)
            if record.queue_depth is not None:
                queue_depth(record.stream, record.queue_depth)
        elif component in KNOWN_EXTRACTORS:  # other stages (fusion) time themselves too
            extractor_latency(component, float(record.processing_ms) / 1000.0)
    elif isinstance(record, FrameDrop):
        count = record.dropped_count
        if not isinstance(count, int):
            count = len(record.dropped_frame_ids or ()) or 1
        frames_dropped(record.stream, str(record.reason), count)
    elif isinstance(record, SyncDelay) and record.late:
        for extractor in record.waiting_for or ():
            late_observation(record.stream, extractor)
    elif isinstance(record, TriggerFire):
        trigger(record.stream, str(record.reason))
    elif isinstance(record, CameraRates):
        camera_rates(record)


def camera_rates(record: CameraRates) -> None:
    """A camera's schedule under the CPU budget: occupancy, level, effective rates."""
    m = _active
    if m is None:
        return
    m.camera_occupied.labels(record.stream).set(1.0 if record.occupied else 0.0)
    m.budget_level.labels(record.stream).set(float(record.level))
    for extractor, fps in record.rates_fps.items():
        m.extractor_rate.labels(record.stream, extractor).set(float(fps))
    if record.cores is not None:
        m.camera_cores.labels(record.stream).set(float(record.cores))
