"""The API against the machine's real Redis, one key prefix per test (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from m4v_core import JobStore, Settings
from m4v_core.keys import Keys
from service.app import create_app


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    # fleet_view_ttl_s=0: tests change the fleet and the queue between requests and check exact answers
    # (the snapshot's reuse has its own tests in tests/service/test_fleet_view.py).
    return Settings(
        redis_url=redis_url, key_prefix=key_prefix, preset="tiny", log_json=True, fleet_view_ttl_s=0
    )


@pytest.fixture(autouse=True)
def _drop_rq_jobs(redis_url: str, key_prefix: str) -> Iterator[None]:
    """rq keeps job hashes under rq:job:{id} (no prefix of ours): delete those our queues still hold."""
    yield
    r = redis.Redis.from_url(redis_url)
    for priority in ("high", "normal", "low"):
        ids = r.lrange(Keys(key_prefix).rq_queue(priority), 0, -1)
        if ids:
            r.delete(*[Keys.rq_job(i) for i in ids])


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def store(redis_url: str, settings: Settings) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), settings.key_prefix, settings.job_ttl_s)


def submit(client: TestClient, **body: object) -> dict:  # type: ignore[type-arg]
    body.setdefault("prompt", "a red ball bouncing")
    response = client.post("/generate", json=body)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_error_shape(response: object, status: int, error_type: str | None = None) -> dict:  # type: ignore[type-arg]
    """Every error: {"error": {"type", "message", "details"}}."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if error_type is not None:
        assert body["error"]["type"] == error_type
    return body["error"]  # type: ignore[no-any-return]
