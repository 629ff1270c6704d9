"""Issue 16: GET /metrics is open by default and, with M4V_METRICS_TOKEN, answers only the Bearer token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from tests.service.conftest import assert_error_shape


def test_metrics_behind_a_token(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("scrape-token")})
    with TestClient(create_app(guarded)) as client:
        assert_error_shape(client.get("/metrics"), 401, "unauthorized")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert_error_shape(wrong, 401, "unauthorized")
        assert "scrape-token" not in wrong.text
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
        assert ok.status_code == 200 and "m4v_http_requests_total" in ok.text


def test_metrics_are_open_without_a_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
