"""/metrics: the names in docs/ARCHITECTURE.md, route templates as labels, queue gauges from Redis."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from m4v_core import Settings
from service.app import create_app
from tests.service.conftest import submit


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_exposes_design_names_with_route_templates(client: TestClient) -> None:
    job_id = submit(client, priority="high")["id"]
    submit(client, priority="low")
    client.get(f"/jobs/{job_id}")
    client.get("/jobs/unknown")
    client.delete(f"/jobs/{job_id}")
    got = samples(client)
    assert (
        got[("m4v_http_requests_total", (("code", "202"), ("method", "POST"), ("route", "/generate")))] == 2
    )
    assert (
        got[("m4v_http_requests_total", (("code", "200"), ("method", "GET"), ("route", "/jobs/{id}")))] == 1
    )
    assert (
        got[("m4v_http_requests_total", (("code", "404"), ("method", "GET"), ("route", "/jobs/{id}")))] == 1
    )
    assert got[("m4v_http_request_duration_seconds_count", (("route", "/jobs/{id}"),))] == 3
    assert got[("m4v_jobs_total", (("status", "submitted"),))] == 2
    assert got[("m4v_jobs_total", (("status", "canceled"),))] == 1
    assert got[("m4v_queue_depth", (("priority", "high"),))] == 0  # canceled: out of the queue
    assert got[("m4v_queue_depth", (("priority", "low"),))] == 1
    assert got[("m4v_queue_depth", (("priority", "normal"),))] == 0
    assert 0 <= got[("m4v_queue_oldest_age_seconds", ())] < 60
    assert not any(re.search(r"/jobs/[0-9a-f]{32}", labels_route(k)) for k in got)  # no raw paths


def labels_route(key: tuple[str, tuple[tuple[str, str], ...]]) -> str:
    return dict(key[1]).get("route", "")


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        a.get("/healthz")
        route_200 = ("m4v_http_requests_total", (("code", "200"), ("method", "GET"), ("route", "/healthz")))
        assert samples(a)[route_200] == 1
        assert route_200 not in samples(b)


def test_metrics_scrape_survives_redis_down(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as client:
        response = client.get("/metrics")
        assert response.status_code == 200 and "m4v_http_requests_total" in response.text
