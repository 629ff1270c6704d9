"""Idempotency-Key: the same key and body give the same job; another body under the key is a conflict."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from m4v_core import Settings
from m4v_core.keys import Keys
from tests.service.conftest import assert_error_shape


def post(client: TestClient, key: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    return client.post("/generate", json=body, headers={"Idempotency-Key": key})


def test_same_key_and_body_return_the_same_job(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    first = post(client, "k1", {"prompt": "a cat", "seed": 1})
    # Same body with a different key order and spacing: hashed after validation, so still the same.
    second = client.post(
        "/generate",
        content=b'{ "seed": 1,   "prompt": "a cat" }',
        headers={"Idempotency-Key": "k1", "content-type": "application/json"},
    )
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    depth = redis.Redis.from_url(redis_url).llen(Keys(settings.key_prefix).rq_queue("normal"))
    assert depth == 1  # enqueued once


def test_same_key_with_another_body_is_409(client: TestClient) -> None:
    first = post(client, "k2", {"prompt": "a cat"})
    assert first.status_code == 202
    error = assert_error_shape(post(client, "k2", {"prompt": "a dog"}), 409, "idempotency_conflict")
    assert error["details"]["job_id"] == first.json()["id"]


def test_different_keys_create_different_jobs(client: TestClient) -> None:
    a = post(client, "k3", {"prompt": "a cat", "seed": 1})
    b = post(client, "k4", {"prompt": "a cat", "seed": 1})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_a_refused_request_frees_its_key_for_a_retry(settings: Settings) -> None:
    from service.app import create_app

    with TestClient(create_app(settings.model_copy(update={"max_queue_depth": 0}))) as full:
        assert post(full, "k5", {"prompt": "a cat"}).status_code == 503
    with TestClient(create_app(settings)) as client:
        assert post(client, "k5", {"prompt": "a cat"}).status_code == 202


def test_empty_idempotency_key_is_422(client: TestClient) -> None:
    error = assert_error_shape(post(client, "", {"prompt": "a cat"}), 422)
    assert "Idempotency-Key" in error["message"]


def test_openapi_describes_what_the_idempotency_key_guarantees(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/generate", "/v1/videos"):
        header = next(p for p in paths[path]["post"]["parameters"] if p["name"] == "Idempotency-Key")
        text = header["description"]
        assert "same key and body" in text and "409" in text and "10 s" in text, (path, text)
