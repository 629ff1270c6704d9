"""Every producer of a `done` event (and of a terminal webhook) renders a job exactly as GET /jobs/{id}.

Producers: the worker (succeeded, and a deadline that passed before start), the reaper (worker_lost), the
spool (a late upload), the API's cancel of a queued job, and the API's synthetic `done` for a finished job
whose stream holds none. Real Redis, rq, SeaweedFS and the tiny model.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobError, JobResult, JobStore, Settings
from m4v_core.store import utcnow
from service.app import create_app
from tests.worker.jobs_helpers import service_settings
from worker.main import run_burst
from worker.recovery import settle_abandoned
from worker.spool import Spool, SpooledObject
from worker.storage import Storage

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
FAST = {"num_frames": 5, "first_frame_steps": [1, 1, 1], "later_frame_steps": [1, 1, 1]}
# Fields that legitimately differ between two renderings of the same record: fresh presigned URLs, and the
# webhook attempts recorded after the event was written.
VOLATILE_RESULT = {"video_url", "thumbnail_url", "expires_at"}


@pytest.fixture
def settings(redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str) -> Settings:
    return service_settings(
        redis_url,
        key_prefix,
        s3_server,
        s3_bucket,
        webhook_secret=SECRET,
        worker_name=f"shape-{key_prefix}",
        fleet_view_ttl_s=0,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    # No signing secret: the API then runs no webhook dispatcher, and the worker's (to Hooks) sends them all.
    with TestClient(create_app(settings.model_copy(update={"webhook_secret": None}))) as c:
        yield c


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore(redis.Redis.from_url(settings.redis_url), settings.key_prefix, settings.job_ttl_s)


class Hooks:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.payloads.append(Webhook(SECRET).verify(request.content, dict(request.headers)))
        return httpx.Response(200)

    def last(self, type_: str) -> dict[str, Any]:
        return [p for p in self.payloads if p["type"] == type_][-1]["data"]  # type: ignore[no-any-return]


def submit(api: TestClient, **body: Any) -> str:
    body = {"prompt": "a red ball bouncing", "seed": 7, "webhook_url": "http://127.0.0.1:9/hook", **body}
    response = api.post("/generate", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def done_event(store: JobStore, job_id: str) -> dict[str, Any]:
    dones = [data for _, typ, data in store.read_events(job_id, count=10_000) if typ == "done"]
    assert len(dones) == 1, dones
    return dones[0]


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in view.items() if k != "webhook_deliveries"}
    if out.get("result") is not None:
        out["result"] = {k: v for k, v in out["result"].items() if k not in VOLATILE_RESULT}
    return out


def assert_like_get(api: TestClient, job_id: str, produced: dict[str, Any]) -> dict[str, Any]:
    got = api.get(f"/jobs/{job_id}").json()
    assert set(produced) == set(got)
    if got.get("result") is not None:
        assert set(produced["result"]) == set(got["result"])
    assert comparable(produced) == comparable(got)
    return got


@pytest.mark.slow
def test_worker_done_and_webhooks_equal_get(
    api: TestClient, store: JobStore, settings: Settings, tiny_pipeline: Any
) -> None:
    ok = submit(api, **FAST)
    late = submit(api, **FAST, timeout_s=0.001)  # its deadline passes before a worker takes it
    hooks = Hooks()
    run_burst(
        settings,
        pipeline=tiny_pipeline,
        webhook_transport=httpx.MockTransport(hooks),
        drain_webhooks_s=5.0,
    )

    got = assert_like_get(api, ok, done_event(store, ok))
    assert got["status"] == "succeeded" and got["result"]["video_url"].startswith("http")
    assert done_event(store, ok)["result"]["video_url"].startswith("http")  # presigned by the worker
    assert_like_get(api, ok, hooks.last("job.completed"))
    got = assert_like_get(api, late, done_event(store, late))
    assert got["status"] == "timed_out"
    assert_like_get(api, late, hooks.last("job.failed"))


def test_api_cancel_and_synthetic_done_equal_get(api: TestClient, store: JobStore) -> None:
    job_id = submit(api)
    assert api.delete(f"/jobs/{job_id}").status_code == 200
    assert_like_get(api, job_id, done_event(store, job_id))

    store.r.delete(store.keys.events(job_id))  # expired stream: the API makes up the final event
    with api.stream("GET", f"/jobs/{job_id}/events") as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert_like_get(api, job_id, json.loads(lines[-1].removeprefix("data:").strip()))


def test_reaper_done_equals_get(api: TestClient, store: JobStore) -> None:
    job_id = submit(api)
    store.transition(job_id, {"queued"}, "running", started_at=utcnow(), attempts=3)
    assert settle_abandoned(store, job_id, max_attempts=3, reason="test").outcome == "failed"
    got = assert_like_get(api, job_id, done_event(store, job_id))
    assert got["error"]["type"] == "worker_lost"


def test_spool_late_result_event_equals_get(
    api: TestClient, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    job_id = submit(api)
    error = JobError(type="upload_failed", message="S3 down")
    store.transition(job_id, {"queued"}, "failed", error=error, finished_at=utcnow())
    data = b"\x00mp4" * 100
    key = f"videos/{job_id}.mp4"
    sizes = {"width": 16, "height": 16, "frames": 1, "fps": 8, "seed": 1, "frames_done": 1}
    result = JobResult(video_key=key, bytes=len(data), sha256="0", **sizes)
    spool = Spool(tmp_path / "spool")
    spool.keep(job_id, [SpooledObject(key, data, "video/mp4")], result)
    assert spool.retry_all(Storage.from_settings(settings), store) == {job_id: "failed"}
    late = [data for _, typ, data in store.read_events(job_id, count=10_000) if typ == "result"]
    assert len(late) == 1 and late[0].pop("uploaded_at")
    got = assert_like_get(api, job_id, late[0])
    assert got["result"]["video_url"].startswith("http") and "video_key" not in got["result"]
