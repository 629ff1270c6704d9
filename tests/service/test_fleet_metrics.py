"""m4v_workers{state} and m4v_worker_heartbeat_age_seconds from real heartbeats in Redis."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from m4v_core.keys import Keys
from worker.heartbeat import HeartbeatWriter, WorkerState


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_workers_by_state_and_heartbeat_age(client: TestClient, redis_url: str, key_prefix: str) -> None:
    no_workers = _samples(client.get("/metrics").text, "m4v_workers")
    assert no_workers == {(("state", "live"),): 0, (("state", "ready"),): 0, (("state", "busy"),): 0}

    r = redis.Redis.from_url(redis_url)
    keys = Keys(key_prefix)
    ready = WorkerState(name="gpu-0", preset="tiny", device="cpu", model_loaded=True, busy_job="job-1")
    loading = WorkerState(name="gpu-1", preset="tiny", device="cpu", model_loaded=False)
    beats = [HeartbeatWriter(r, keys, s, period_s=60).start() for s in (ready, loading)]
    try:
        text = client.get("/metrics").text
    finally:
        for beat in beats:
            beat.stop()
    workers = _samples(text, "m4v_workers")
    assert workers == {(("state", "live"),): 2, (("state", "ready"),): 1, (("state", "busy"),): 1}
    ages = _samples(text, "m4v_worker_heartbeat_age_seconds")
    assert set(ages) == {(("worker", "gpu-0"),), (("worker", "gpu-1"),)}
    assert all(0 <= age < 60 for age in ages.values())
    # a stopped worker (key removed) is gone at the next scrape
    assert _samples(client.get("/metrics").text, "m4v_workers")[(("state", "live"),)] == 0
