"""GET /jobs: the caller's jobs only, newest first, cursor pages that new jobs never shift, status filter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from m4v_core import JobStore, Settings
from m4v_core.store import utcnow
from service.app import create_app
from tests.service.conftest import assert_error_shape
from tests.service.keyed import ALICE, BOB, bearer, with_two_keys


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(with_two_keys(settings))) as c:
        yield c


def post(client: TestClient, key: str, prompt: str) -> str:
    response = client.post("/generate", json={"prompt": prompt}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def pages(client: TestClient, key: str, **params: object) -> list[list[str]]:
    """Every page of GET /jobs, following next_cursor."""
    out: list[list[str]] = []
    query = dict(params)
    while True:
        body = client.get("/jobs", params=query, headers=bearer(key)).json()
        out.append([job["id"] for job in body["data"]])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return out
        query["cursor"] = body["next_cursor"]


def test_each_key_lists_only_its_own_jobs_newest_first_in_pages(keyed: TestClient) -> None:
    alice = [post(keyed, ALICE, f"alice {i}") for i in range(5)]
    bob = [post(keyed, BOB, f"bob {i}") for i in range(2)]
    assert pages(keyed, ALICE, limit=2) == [alice[4:2:-1], alice[2:0:-1], alice[:1]]
    assert pages(keyed, BOB, limit=10) == [bob[::-1]]
    assert pages(keyed, ALICE, limit=3, order="asc") == [alice[:3], alice[3:]]
    first = keyed.get("/jobs", params={"limit": 1}, headers=bearer(BOB)).json()["data"][0]
    assert (
        first == keyed.get(f"/jobs/{bob[1]}", headers=bearer(BOB)).json()
    )  # the same view as GET /jobs/{id}


def test_a_cursor_is_not_shifted_by_jobs_created_after_it(keyed: TestClient) -> None:
    jobs = [post(keyed, ALICE, f"job {i}") for i in range(3)]
    first = keyed.get("/jobs", params={"limit": 2}, headers=bearer(ALICE)).json()
    post(keyed, ALICE, "a newer job")
    rest = keyed.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=bearer(ALICE))
    assert [j["id"] for j in rest.json()["data"]] == [jobs[0]]


def test_status_filter(keyed: TestClient, store: JobStore) -> None:
    jobs = [post(keyed, ALICE, f"job {i}") for i in range(4)]
    for job_id in jobs[1::2]:
        store.transition(job_id, {"queued"}, "canceled", finished_at=utcnow())
    assert pages(keyed, ALICE, status="canceled", limit=1) == [[jobs[3]], [jobs[1]]]
    assert pages(keyed, ALICE, status=["queued", "canceled"]) == [jobs[::-1]]


def test_expired_records_leave_the_listing(keyed: TestClient, store: JobStore) -> None:
    jobs = [post(keyed, ALICE, f"job {i}") for i in range(3)]
    store.r.delete(store.keys.job(jobs[1]))  # what the record TTL does
    assert pages(keyed, ALICE) == [[jobs[2], jobs[0]]]


def test_bad_list_parameters_are_422_naming_them(keyed: TestClient) -> None:
    for params, field in (
        ({"cursor": "nope"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"status": "done"}, "status.0"),
        ({"order": "up"}, "order"),
    ):
        error = assert_error_shape(keyed.get("/jobs", params=params, headers=bearer(ALICE)), 422)
        assert error["details"][0]["field"] == field, error
    assert_error_shape(keyed.get("/jobs"), 401, "unauthorized")
