"""/healthz, /readyz (Redis only, never workers) and /workers (heartbeats)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import redis
from fastapi.testclient import TestClient

from m4v_core import Settings
from m4v_core.keys import Keys
from service.app import create_app
from tests.service.conftest import assert_error_shape


def test_healthz_and_readyz_are_ok_with_redis_and_no_workers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "preset": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "preset": "tiny"}
    assert client.get("/workers").json()["count"] == 0


def test_readyz_is_503_when_redis_is_down_but_healthz_stays_ok(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert_error_shape(response, 503, "store_unavailable")
        assert "retry-after" in response.headers


def test_workers_lists_heartbeats_with_their_age(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    r = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    beats = {
        "gpu0": {
            "name": "gpu0",
            "preset": "tiny",
            "device": "cuda:0",
            "gpu_count": 2,
            "model_loaded": True,
            "busy_job": "abc",
            "loaded_at": (now - timedelta(minutes=5)).isoformat(),
            "heartbeat_at": (now - timedelta(seconds=3)).isoformat(),
        },
        "gpu1": {
            "name": "gpu1",
            "preset": "tiny",
            "device": "cuda:1",
            "model_loaded": False,
            "busy_job": None,
            "loaded_at": None,
            "heartbeat_at": now.isoformat(),
        },
    }
    # Written as worker/heartbeat.py does: the heartbeat key plus the fleet index entry.
    index = Keys(settings.key_prefix).worker_index()
    for name, beat in beats.items():
        r.set(Keys(settings.key_prefix).worker(name), json.dumps(beat), ex=60)
        r.zadd(index, {name: time.time() + 60})
    r.set(Keys(settings.key_prefix).worker("broken"), b"not json", ex=60)
    r.zadd(index, {"broken": time.time() + 60, "expired": time.time() - 1})
    fleet = client.get("/workers").json()
    assert (fleet["count"], fleet["ready"], fleet["busy"]) == (2, 1, 1)
    gpu0 = next(w for w in fleet["workers"] if w["name"] == "gpu0")
    assert gpu0["device"] == "cuda:0" and gpu0["busy_job"] == "abc" and gpu0["model_loaded"] is True
    assert gpu0["gpu_count"] == 2  # one worker spanning two GPUs
    assert next(w for w in fleet["workers"] if w["name"] == "gpu1")["gpu_count"] == 0  # older workers: unset
    assert 2.5 <= gpu0["heartbeat_age_s"] < 30
