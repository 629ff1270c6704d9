"""One error shape for every failure, including the framework's own (unknown route, wrong method)."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from m4v_core.logs import JsonFormatter
from tests.service.conftest import assert_error_shape


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    assert_error_shape(client.get("/no/such/route"), 404, "not_found")
    assert_error_shape(client.put("/generate", json={}), 405, "method_not_allowed")


def test_validation_error_details_name_nested_fields(client: TestClient) -> None:
    error = assert_error_shape(client.post("/generate", json={"prompt": "x", "webhook_events": ["ok?"]}), 422)
    assert error["details"][0]["field"] == "webhook_events.0"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/generate",
        "/jobs/{id}",
        "/jobs/{id}/events",
        "/jobs/{id}/video",
        "/healthz",
        "/readyz",
        "/workers",
        "/metrics",
    ):
        assert path in paths
    assert "delete" in paths["/jobs/{id}"]


def test_oversized_body_is_413_before_parsing(client: TestClient) -> None:
    body = b'{"prompt": "' + b"x" * 70_000 + b'"}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    error = assert_error_shape(response, 413, "payload_too_large")
    assert error["details"] == {"limit": 64 * 1024}


def test_each_request_is_logged_as_one_json_line_with_route_status_duration(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.get("/jobs/abc123")
    records = [r for r in caplog.records if r.name == "service.access"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["route"] == "/jobs/{id}" and entry["path"] == "/jobs/abc123"
    assert entry["status"] == 404 and entry["method"] == "GET" and entry["duration_ms"] >= 0


def test_an_s3_failure_answers_without_the_internal_endpoint(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's message names the S3 endpoint (an internal address): the operator's log gets it, the
    client's 503 does not (issue 16)."""
    from service.errors import StorageUnavailableError
    from service.objects import ObjectStore

    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one refused connect, no backoff
    keys = {"s3_access_key": SecretStr("k"), "s3_secret_key": SecretStr("s")}
    store = ObjectStore(settings.model_copy(update={"s3_endpoint": "http://127.0.0.1:9", **keys}))
    warnings = caplog.at_level(logging.WARNING, logger="service.objects")
    with warnings, pytest.raises(StorageUnavailableError) as err:
        store.open("videos/2026/12/06/x.mp4")
    assert "127.0.0.1" not in err.value.message and "unavailable" in err.value.message
    assert "127.0.0.1:9" in caplog.text
