"""Prometheus metrics: recorded values, off by default, the HTTP endpoint and its errors."""

from __future__ import annotations

import math
import socket
import urllib.error
import urllib.request

import pytest

from conftest import free_port, rec
from facemoment.runtime import metrics



@pytest.fixture(autouse=True)
def metrics_off():
    metrics.disable()
    yield
    metrics.disable()


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(name: str, **labels: str):
    reg = metrics.registry()
    assert reg is not None
    return reg.get_sample_value(name, labels)


def record_everything() -> None:
    metrics.frame_in("cam0")
    metrics.frame_processed("cam0")
    metrics.frames_dropped("cam0", "timeout", 3)
    metrics.late_observation("cam0", "gesture")
    metrics.trigger("cam0", "wave")
    metrics.extractor_latency("face", 0.01)
    metrics.queue_depth("cam0", 4)


def test_disabled_calls_are_no_ops_and_touch_no_registry():
    assert not metrics.enabled()
    assert metrics.registry() is None
    record_everything()
    metrics.observe_record(rec("trigger_fire", stream="cam0", reason="wave"))
    metrics.enable()
    assert value("facemoment_frames_in_total", stream="cam0") is None
    assert value("facemoment_extractor_latency_seconds_count", extractor="face") is None
    assert value("facemoment_triggers_total", stream="cam0", reason="wave") is None


def test_counters_and_gauge_after_calls():
    metrics.enable()
    metrics.frame_in("cam0")
    metrics.frame_in("cam0")
    metrics.frame_in("cam1")
    metrics.frame_processed("cam0")
    metrics.frames_dropped("cam0", "backpressure", 5)
    metrics.frames_dropped("cam0", "backpressure", 2)
    metrics.frames_dropped("cam0", "timeout", 1)
    metrics.late_observation("cam0", "gesture")
    metrics.trigger("cam0", "wave")
    metrics.trigger("cam0", "wave")
    metrics.queue_depth("cam0", 6)
    metrics.queue_depth("cam0", 2)
    assert value("facemoment_frames_in_total", stream="cam0") == 2
    assert value("facemoment_frames_in_total", stream="cam1") == 1
    assert value("facemoment_frames_processed_total", stream="cam0") == 1
    assert value("facemoment_frames_dropped_total", stream="cam0", reason="backpressure") == 7
    assert value("facemoment_frames_dropped_total", stream="cam0", reason="timeout") == 1
    assert value("facemoment_late_observations_total", stream="cam0", extractor="gesture") == 1
    assert value("facemoment_triggers_total", stream="cam0", reason="wave") == 2
    assert value("facemoment_queue_depth", stream="cam0") == 2


def test_latency_histogram_buckets_for_milliseconds():
    metrics.enable()
    for ms in (1.5, 4.0, 42.0, 180.0):
        metrics.extractor_latency("face", ms / 1000)
    assert value("facemoment_extractor_latency_seconds_count", extractor="face") == 4
    assert math.isclose(value("facemoment_extractor_latency_seconds_sum", extractor="face"), 0.2275)
    assert value("facemoment_extractor_latency_seconds_bucket", extractor="face", le="0.0025") == 1
    assert value("facemoment_extractor_latency_seconds_bucket", extractor="face", le="0.005") == 2
    assert value("facemoment_extractor_latency_seconds_bucket", extractor="face", le="0.05") == 3
    assert value("facemoment_extractor_latency_seconds_bucket", extractor="face", le="0.2") == 4


def test_invalid_values_are_ignored_not_raised():
    metrics.enable()
    metrics.frames_dropped("cam0", "timeout", 2)
    metrics.frames_dropped("cam0", "timeout", -1)
    metrics.frames_dropped("cam0", "timeout", None)  # type: ignore[arg-type]
    metrics.extractor_latency("face", float("nan"))
    metrics.extractor_latency("face", -0.5)
    assert value("facemoment_frames_dropped_total", stream="cam0", reason="timeout") == 2
    assert value("facemoment_extractor_latency_seconds_count", extractor="face") is None


def test_disable_forgets_values_and_enable_is_idempotent():
    first = metrics.enable()
    assert metrics.enable() is first
    metrics.frame_in("cam0")
    metrics.disable()
    metrics.frame_in("cam0")  # off again: a no-op
    metrics.enable()
    assert value("facemoment_frames_in_total", stream="cam0") is None


def test_trace_records_feed_the_metrics():
    metrics.enable()
    records = [
        rec("timing", stream="cam0", frame_id=1, component="face", processing_ms=42.0),
        rec("timing", stream="cam0", frame_id=1, component="orchestrator", processing_ms=50.0, queue_depth=3),
        rec("frame_drop", stream="cam0", reason="queue_full", dropped_frame_ids=[2, 3], dropped_count=9),
        rec("frame_drop", stream="cam0", reason="backpressure", dropped_frame_ids=[4, 5]),
        rec("sync_delay", stream="cam0", frame_id=1, waiting_for=["gesture"], late=True),
        rec("sync_delay", stream="cam0", frame_id=1, waiting_for=["pose"], late=False),
        rec("trigger_fire", stream="cam0", reason="smile"),
        rec("timing", stream="cam0", component="pose", processing_ms="slow"),  # unreadable
        rec("gate_change", stream="cam0", gate_open=True),
        rec("timing", stream="cam0", frame_id=1, component="fusion_process", processing_ms=0.1),
    ]
    for record in records:
        metrics.observe_record(record)
    assert value("facemoment_extractor_latency_seconds_count", extractor="face") == 1
    assert value("facemoment_extractor_latency_seconds_count", extractor="pose") is None
    assert value("facemoment_extractor_latency_seconds_count", extractor="fusion_process") is None
    assert value("facemoment_frames_processed_total", stream="cam0") == 1
    assert value("facemoment_queue_depth", stream="cam0") == 3
    assert value("facemoment_frames_dropped_total", stream="cam0", reason="queue_full") == 9
    assert value("facemoment_frames_dropped_total", stream="cam0", reason="backpressure") == 2
    assert value("facemoment_late_observations_total", stream="cam0", extractor="gesture") == 1
    assert value("facemoment_late_observations_total", stream="cam0", extractor="pose") is None
    assert value("facemoment_triggers_total", stream="cam0", reason="smile") == 1


def test_http_endpoint_serves_the_metrics_and_stops():
    port = free_port()
    metrics.start_metrics_server(port)
    assert metrics.enabled()
    record_everything()
    text = fetch(port)
    assert 'facemoment_frames_in_total{stream="cam0"} 1.0' in text
    assert 'facemoment_frames_dropped_total{reason="timeout",stream="cam0"} 3.0' in text
    assert "facemoment_extractor_latency_seconds_bucket" in text
    assert "facemoment_queue_depth" in text
    assert "python_gc_objects_collected_total" not in text  # own registry, not the global one
    metrics.start_metrics_server(port)  # same address again: nothing happens
    with pytest.raises(metrics.MetricsServerError, match="already served"):
        metrics.start_metrics_server(free_port())
    metrics.disable()
    with pytest.raises(urllib.error.URLError):
        fetch(port)


def test_busy_port_gives_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(metrics.MetricsServerError) as info:
            metrics.start_metrics_server(port)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "FACEMOMENT__OUTPUT__METRICS_PORT" in message
    assert not metrics.enabled()


@pytest.mark.parametrize("port", [0, 70000, "9100", True])
def test_bad_port_values_are_refused(port):
    with pytest.raises(metrics.MetricsServerError, match="METRICS_PORT"):
        metrics.start_metrics_server(port)  # type: ignore[arg-type]


def test_the_budgets_camera_schedule_feeds_the_metrics():
    from facemoment.core.records import CameraRates

    metrics.enable()
    for occupied, level, pose in ((False, 0, 0.0), (True, 2, 10.0)):
        metrics.observe_record(
            CameraRates(stream="cam1", frame_id=9, t_ns=0, occupied=occupied, motion=False, level=level,
                        reason="load" if level else "empty", rates_fps={"face": 30.0, "pose": pose},
                        frames=10, occupied_frames=5, runs={"face": 10}, cores=0.05 + level / 10)
        )
    assert value("facemoment_camera_occupied", stream="cam1") == 1.0
    assert value("facemoment_budget_level", stream="cam1") == 2.0
    assert value("facemoment_camera_cores", stream="cam1") == pytest.approx(0.25)
    assert value("facemoment_extractor_rate_fps", stream="cam1", extractor="pose") == 10.0
    assert value("facemoment_extractor_rate_fps", stream="cam1", extractor="face") == 30.0
