"""One error shape for every failure, including the framework's own (unknown route, wrong method)."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
