"""Worker heartbeat key in Redis and the worker's own Prometheus endpoint."""

from __future__ import annotations

import json
import time

import httpx
import redis

from m4v_cli.seaweed import free_port
from m4v_core.keys import Keys
from m4v_core.settings import WorkerSettings
from m4v_core.store import live_worker_keys
from worker.heartbeat import HeartbeatWriter, WorkerState
from worker.metrics import WorkerMetrics


def test_heartbeat_key_has_worker_fields_and_a_ttl_then_is_removed(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = Keys(key_prefix).worker("gpu-0")
    state = WorkerState(name="gpu-0", preset="tiny", device="cpu", model_loaded=True, gpu_count=2)
    beat = HeartbeatWriter(client, Keys(key_prefix), state, period_s=0.1).start()
    try:
        first = json.loads(client.get(key))  # type: ignore[arg-type]
        assert {
            "name",
            "preset",
            "device",
            "model_loaded",
            "loaded_at",
            "busy_job",
            "heartbeat_at",
            "pid",
            "gpu_count",
        } <= set(first)
        assert first["model_loaded"] is True and first["busy_job"] is None and first["gpu_count"] == 2
        assert 0 < client.pttl(key) <= 300
        assert live_worker_keys(client, Keys(key_prefix)) == [key]  # the fleet index lists it
        state.busy_job = "job-1"
        time.sleep(0.35)
        later = json.loads(client.get(key))  # type: ignore[arg-type]
        assert later["busy_job"] == "job-1"
        assert later["heartbeat_at"] > first["heartbeat_at"]
    finally:
        beat.stop()
    assert client.get(key) is None
    assert live_worker_keys(client, Keys(key_prefix)) == []


def test_heartbeat_expires_when_the_worker_stops_beating(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = Keys(key_prefix).worker("gone")
    state = WorkerState(name="gone", preset="tiny", device="cpu")
    HeartbeatWriter(client, Keys(key_prefix), state, period_s=0.1).beat()
    assert client.exists(key)
    time.sleep(0.5)  # TTL is 3 periods
    assert not client.exists(key)
    assert live_worker_keys(client, Keys(key_prefix)) == []  # a dead worker drops out of the index too


def test_metrics_endpoint_serves_worker_series() -> None:
    metrics = WorkerMetrics()
    metrics.ready.set(1)
    metrics.jobs.labels(status="succeeded").inc()
    metrics.observe_phases("tiny", "128x128", {"total": 1.5, "upload": None})
    metrics.add_flops("tiny", {"mixer_mamba": 1e9, "mlp": 0.0})
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "m4v_worker_ready 1.0" in text
    assert 'm4v_jobs_total{status="succeeded"} 1.0' in text
    assert 'm4v_job_phase_seconds_count{phase="total",preset="tiny",resolution="128x128"} 1.0' in text
    assert 'phase="upload"' not in text
    assert 'm4v_model_flops_total{component="mixer_mamba",preset="tiny"} 1e+09' in text
    assert "mlp" not in text


def test_two_metric_sets_do_not_collide() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.busy.set(1)
    assert a.sample("m4v_worker_busy") == 1 and b.sample("m4v_worker_busy") == 0


def test_worker_metrics_listen_on_loopback_unless_told_otherwise() -> None:
    """Issue 16: not on every interface by default (the chart passes the pod IP)."""
    assert WorkerSettings().worker_metrics_host == "127.0.0.1"  # type: ignore[call-arg]
    server, _ = WorkerMetrics().serve(free_port())
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
