"""POST /generate: validation, default resolution, enqueueing by priority, admission."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

from m4v_core import JobStore, Settings
from m4v_core.keys import Keys
from service.app import create_app
from tests.service.conftest import assert_error_shape, submit

INVALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("prompt", {"prompt": ""}),
    ("prompt", {"prompt": "x" * 2001}),
    ("prompt", {"prompt": 123}),
    ("negative_prompt", {"negative_prompt": "x" * 2001}),
    ("width", {"width": 8, "height": 128}),
    ("height", {"width": 128, "height": 5000}),
    ("width", {"width": 256, "height": 256}),  # not a resolution of the tiny preset
    ("width", {"width": 128}),  # width without height
    ("num_frames", {"num_frames": 0}),
    ("num_frames", {"num_frames": 242}),
    ("num_frames", {"num_frames": 6}),  # tiny: 4k+1
    ("num_frames", {"num_frames": 37}),  # 4k+1 but over the preset's 33
    ("num_frames", {"num_frames": 17, "duration_s": 2.0}),
    ("duration_s", {"duration_s": 0}),
    ("duration_s", {"duration_s": 61}),
    ("fps", {"fps": 0}),
    ("fps", {"fps": 61}),
    ("seed", {"seed": -1}),
    ("seed", {"seed": 2**32}),
    ("guidance_scale", {"guidance_scale": 31}),
    ("video_guidance_scale", {"video_guidance_scale": -1}),
    ("first_frame_steps", {"first_frame_steps": [4, 4]}),
    ("later_frame_steps", {"later_frame_steps": [0, 3, 3]}),
    ("priority", {"priority": "urgent"}),
    ("webhook_url", {"webhook_url": "ftp://example.com/hook"}),
    ("webhook_url", {"webhook_url": "not a url"}),
    ("webhook_url", {"webhook_url": "http://127.0.0.1:9/hook"}),  # no delivery could reach these
    ("webhook_url", {"webhook_url": "http://169.254.169.254/latest/meta-data"}),
    ("webhook_url", {"webhook_url": "http://[::1]:8080/hook"}),
    ("webhook_url", {"webhook_url": "http://localhost:8080/hook"}),
    ("webhook_events", {"webhook_events": ["bogus"]}),
    ("timeout_s", {"timeout_s": 0}),
    ("surprise", {"surprise": 1}),  # unknown fields are refused, not ignored
]


@pytest.mark.parametrize(
    ("field", "overrides"), INVALID_BODIES, ids=[Keys(f).queue(i) for i, (f, _) in enumerate(INVALID_BODIES)]
)
def test_generate_rejects_invalid_field_with_422_naming_it(
    client: TestClient, field: str, overrides: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"prompt": "a red ball"} | overrides
    error = assert_error_shape(client.post("/generate", json=body), 422, "validation_error")
    assert field in [d["field"].split(".")[0] for d in error["details"]]
    assert field in error["message"]


def test_webhook_urls_that_can_be_reached_or_are_allow_listed_are_accepted(settings: Settings) -> None:
    allowing = settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})
    with TestClient(create_app(allowing)) as c:
        for url in ("http://127.0.0.1:9/hook", "https://93.184.216.34/hook", "https://hooks.example.com/x"):
            response = c.post("/generate", json={"prompt": "a red ball", "webhook_url": url})
            assert response.status_code == 202, (url, response.text)


def test_generate_with_missing_prompt_names_prompt(client: TestClient) -> None:
    error = assert_error_shape(client.post("/generate", json={"seed": 1}), 422)
    assert [d["field"] for d in error["details"]] == ["prompt"]


def test_generate_rejects_malformed_json_with_422(client: TestClient) -> None:
    response = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert_error_shape(response, 422, "validation_error")


def test_generate_resolves_defaults_from_the_preset_and_returns_a_seed(client: TestClient) -> None:
    job = submit(client)
    spec = job["spec"]
    assert (spec["width"], spec["height"], spec["num_frames"], spec["fps"]) == (128, 128, 17, 8)
    assert spec["first_frame_steps"] == [4, 4, 4] and spec["later_frame_steps"] == [3, 3, 3]
    assert spec["guidance_scale"] == 7.0 and spec["video_guidance_scale"] == 5.0
    assert 0 <= spec["seed"] < 2**32 and job["request"]["seed"] is None
    assert spec["preset"] == "tiny"


def test_generate_keeps_given_values_and_converts_duration_to_valid_frames(client: TestClient) -> None:
    job = submit(client, seed=42, duration_s=1.0, fps=8, guidance_scale=3.5, first_frame_steps=[1, 2, 3])
    spec = job["spec"]
    assert spec["seed"] == 42 and spec["guidance_scale"] == 3.5 and spec["first_frame_steps"] == [1, 2, 3]
    assert spec["num_frames"] == 9  # 1 s at 8 fps -> 4k+1


def test_two_requests_without_seed_get_different_seeds(client: TestClient) -> None:
    assert submit(client)["spec"]["seed"] != submit(client)["spec"]["seed"]


def test_generate_answers_202_with_links_and_location(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a cat"})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == job["status_url"] == f"http://testserver/jobs/{job['id']}"
    assert job["events_url"] == f"{job['status_url']}/events"
    assert job["cancel_url"] == job["status_url"]
    assert "owner" not in job


def test_generate_stores_the_record_and_a_queued_event(client: TestClient, store: JobStore) -> None:
    job = submit(client)
    record = store.get(job["id"])
    assert record.status == "queued" and record.spec.seed == job["spec"]["seed"]
    events = store.read_events(job["id"])
    assert [(t, d["status"]) for _, t, d in events] == [("status", "queued")]


def test_generate_enqueues_run_job_by_path_in_the_priority_queue(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    job = submit(client, priority="high", timeout_s=100)
    conn = redis.Redis.from_url(redis_url)
    queue = Queue(Keys(settings.key_prefix).queue("high"), connection=conn)
    assert queue.job_ids == [job["id"]]
    rq_job = queue.fetch_job(job["id"])
    assert rq_job is not None
    assert rq_job.func_name == "worker.jobs.run_job" and rq_job.args == (job["id"],)
    assert rq_job.timeout == 100 + 120  # deadline plus grace
    assert Queue(Keys(settings.key_prefix).queue("normal"), connection=conn).count == 0


def test_queue_position_counts_higher_priority_queues_ahead(client: TestClient) -> None:
    low = submit(client, priority="low")["id"]
    normal_1 = submit(client, priority="normal")["id"]
    normal_2 = submit(client, priority="normal")["id"]
    high = submit(client, priority="high")["id"]
    positions = {
        j: client.get(f"/jobs/{j}").json()["queue_position"] for j in (high, normal_1, normal_2, low)
    }
    assert positions == {high: 0, normal_1: 1, normal_2: 2, low: 3}


def test_generate_answers_503_with_retry_after_when_queue_is_full(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_queue_depth": 2}))) as client:
        submit(client)
        submit(client, priority="low")
        response = client.post("/generate", json={"prompt": "one too many"})
        error = assert_error_shape(response, 503, "queue_full")
        assert int(response.headers["retry-after"]) > 0
        assert error["details"] == {"queued": 2, "limit": 2}


def test_generate_answers_503_not_500_when_redis_is_down(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down), raise_server_exceptions=False) as client:
        response = client.post("/generate", json={"prompt": "a cat"})
        assert_error_shape(response, 503, "store_unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert_error_shape(client.get(f"/jobs/{'a' * 32}"), 503, "store_unavailable")


def test_links_use_public_url_when_configured(settings: Settings) -> None:
    behind_proxy = settings.model_copy(update={"public_url": "https://video.example.com/api/"})
    with TestClient(create_app(behind_proxy)) as client:
        job = submit(client)
    assert job["status_url"] == f"https://video.example.com/api/jobs/{job['id']}"


def test_job_timeout_comes_from_the_flop_estimate_and_grows_with_length(
    settings: Settings, redis_url: str
) -> None:
    served = settings.model_copy(update={"preset": "m4v-768p"})
    conn = redis.Redis.from_url(redis_url)
    queue = Queue(Keys(settings.key_prefix).queue("normal"), connection=conn)
    with TestClient(create_app(served)) as client:
        short = submit(client, num_frames=9, width=640, height=384)["id"]
        long = submit(client, num_frames=241)["id"]
    short_job, long_job = queue.fetch_job(short), queue.fetch_job(long)
    assert short_job is not None and long_job is not None
    assert short_job.timeout == 900  # the floor
    assert long_job.timeout is not None and long_job.timeout > 2 * short_job.timeout
