"""GET/DELETE /jobs/{id} and GET /jobs/{id}/video."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobResult, JobStore, Settings
from m4v_core.keys import Keys
from m4v_core.store import utcnow
from service.app import create_app
from tests.conftest import s3_client
from tests.service.conftest import assert_error_shape, submit


def test_unknown_job_is_404_with_error_shape(client: TestClient) -> None:
    for method, path in [
        ("GET", "/jobs/nope"),
        ("DELETE", "/jobs/nope"),
        ("GET", "/jobs/nope/video"),
        ("GET", "/jobs/nope/events"),
    ]:
        error = assert_error_shape(client.request(method, path), 404, "not_found")
        assert "nope" in error["message"]


def test_an_id_that_spells_another_key_is_404_not_500(client: TestClient) -> None:
    """`<id>:events` named the job's event stream (a Redis stream) when spelled into the record key."""
    job = submit(client)
    for suffix in (":events", ":x", "%3Aevents"):
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/jobs/{job['id']}{suffix}")
            assert response.status_code == 404, (method, suffix, response.text)
    # "<id>/.." is the path /jobs/: the caller's job list (GET /jobs), which has no DELETE
    assert [j["id"] for j in client.get(f"/jobs/{job['id']}/..").json()["data"]] == [job["id"]]
    assert client.delete(f"/jobs/{job['id']}/..").status_code == 405
    assert_error_shape(client.get(f"/jobs/{job['id'].upper()}"), 404, "not_found")
    assert client.get(f"/jobs/{job['id']}").status_code == 200


def test_get_job_returns_the_record_without_owner(client: TestClient) -> None:
    job = submit(client, seed=5)
    got = client.get(f"/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["status"] == "queued" and got["spec"]["seed"] == 5
    assert got["queue_position"] == 0 and "owner" not in got


def test_cancel_queued_job_cancels_at_once_and_removes_it_from_the_queue(
    client: TestClient, store: JobStore, settings: Settings, redis_url: str
) -> None:
    job = submit(client)
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled" and response.json()["finished_at"] is not None
    assert response.json()["queue_position"] is None
    conn = redis.Redis.from_url(redis_url)
    assert Queue(Keys(settings.key_prefix).queue("normal"), connection=conn).count == 0
    # A worker that dequeued it anyway cannot start it: queued -> running is refused.
    assert store.transition(job["id"], {"queued"}, "running") is None
    assert store.get(job["id"]).status == "canceled"
    types = [t for _, t, _ in store.read_events(job["id"])]
    assert types == ["status", "status", "done"]


def test_cancel_running_job_asks_the_worker_to_stop(client: TestClient, store: JobStore) -> None:
    job = submit(client)
    store.transition(job["id"], {"queued"}, "running", started_at=utcnow())
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 202 and response.json()["status"] == "running"
    assert store.cancel_requested(job["id"])


def test_cancel_finished_job_returns_it_unchanged(client: TestClient, store: JobStore) -> None:
    job = submit(client)
    store.transition(job["id"], {"queued"}, "failed", finished_at=utcnow())
    before = client.get(f"/jobs/{job['id']}").json()
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200 and response.json() == before
    assert not store.cancel_requested(job["id"])


def test_video_of_unfinished_job_is_409_naming_the_status(client: TestClient) -> None:
    job = submit(client)
    error = assert_error_shape(client.get(f"/jobs/{job['id']}/video"), 409, "video_not_ready")
    assert "queued" in error["message"]


def _succeed(store: JobStore, job_id: str, video_key: str, size: int) -> None:
    result = JobResult(
        video_key=video_key,
        thumbnail_key=f"{video_key}.jpg",
        bytes=size,
        width=128,
        height=128,
        frames=17,
        fps=8,
        seed=1,
        sha256="0" * 64,
        frames_done=17,
    )
    store.transition(job_id, {"queued"}, "succeeded", finished_at=utcnow(), result=result)


def test_succeeded_job_gets_fresh_presigned_urls_and_video_redirects(
    settings: Settings, store: JobStore, s3_server: SeaweedS3, s3_bucket: str
) -> None:
    s3 = s3_client(s3_server)
    key = f"videos/{uuid.uuid4().hex}.mp4"
    payload = b"\x00\x00\x00\x18ftypmp42 fake mp4 bytes"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=payload)
    s3.put_object(Bucket=s3_bucket, Key=f"{key}.jpg", Body=b"jpeg")
    served = Settings(
        redis_url=settings.redis_url,
        key_prefix=settings.key_prefix,
        s3_endpoint=s3_server.endpoint,
        s3_bucket=s3_bucket,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    with TestClient(create_app(served)) as client:
        job = submit(client)
        _succeed(store, job["id"], key, len(payload))
        got = client.get(f"/jobs/{job['id']}").json()
        assert got["status"] == "succeeded" and "video_key" not in got["result"]
        assert got["video_url"] == f"{got['status_url']}/video"
        assert httpx.get(got["result"]["video_url"]).content == payload
        assert httpx.get(got["result"]["thumbnail_url"]).content == b"jpeg"
        redirect = client.get(f"/jobs/{job['id']}/video", follow_redirects=False)
        assert redirect.status_code == 302
        assert httpx.get(redirect.headers["location"]).content == payload
        tampered = redirect.headers["location"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert httpx.get(tampered).status_code == 403  # the server really checks the signature


def test_video_without_storage_credentials_is_503_and_job_still_readable(
    settings: Settings, store: JobStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with TestClient(create_app(settings.model_copy(update={"s3_endpoint": "http://127.0.0.1:1"}))) as client:
        job = submit(client)
        _succeed(store, job["id"], "videos/x.mp4", 10)
        got = client.get(f"/jobs/{job['id']}")
        assert got.status_code == 200 and got.json()["result"]["video_url"] is None
        assert_error_shape(client.get(f"/jobs/{job['id']}/video"), 503, "storage_unavailable")


def test_presigned_links_are_signed_for_the_public_s3_endpoint() -> None:
    from service.presign import Presigner

    settings = Settings(
        s3_endpoint="http://seaweedfs.internal:8333",
        s3_public_endpoint="https://media.example.com",
        s3_access_key="k",
        s3_secret_key="s",
    )
    url = Presigner(settings).url("videos/2026/11/26/x.mp4")
    assert url.startswith("https://media.example.com/m4v-videos/videos/2026/11/26/x.mp4?")
    assert "seaweedfs.internal" not in url
