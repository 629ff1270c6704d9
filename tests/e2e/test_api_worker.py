"""The whole spine: POST /generate -> Redis/rq -> worker -> MP4 in SeaweedFS -> GET, video, webhooks.

Real Redis, rq SimpleWorker, tiny model and VAE, PyAV, SeaweedFS, and a real HTTP webhook receiver.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from m4v_cli.seaweed import SeaweedS3
from service.app import create_app
from tests.webhook_receiver import Receiver
from tests.worker.jobs_helpers import FAST_STEPS, SECRET, make_settings
from worker.main import run_burst


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(codes=[500, 500])  # the first two deliveries fail: the "started" event is retried
    yield r
    r.close()


@pytest.mark.slow
def test_generate_runs_through_worker_to_a_playable_video_and_signed_webhooks(
    redis_url: str,
    key_prefix: str,
    s3_server: SeaweedS3,
    s3_bucket: str,
    receiver: Receiver,
    tiny_pipeline: Any,
) -> None:
    settings = make_settings(redis_url, key_prefix, s3_server, s3_bucket)
    with TestClient(create_app(settings)) as api:
        body = {
            "prompt": "a red circle moving right",
            "seed": 3,
            "webhook_url": receiver.url,
            "webhook_events": ["started", "completed"],
            **FAST_STEPS,
        }
        r = api.post("/generate", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"

        process = run_burst(settings, pipeline=tiny_pipeline, drain_webhooks_s=10.0)

        job = api.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job
        assert job["result"]["frames"] == 17 and job["result"]["seed"] == 3
        assert job["metrics"]["flops"] > 0 and job["metrics"]["sampling_s"] > 0
        assert job["progress"]["percent"] == pytest.approx(100.0)

        # GET /jobs/{id}/video: a 302 to a presigned S3 URL that serves a playable MP4 of the requested size.
        redirect = api.get(f"/jobs/{job_id}/video", follow_redirects=False)
        assert redirect.status_code == 302
        video = httpx.get(redirect.headers["location"])
        assert video.status_code == 200
        with av.open(io.BytesIO(video.content)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 17 and frames[0].shape == (128, 128, 3)

        # Events: progress in order, "done" last.
        with api.stream("GET", f"/jobs/{job_id}/events") as stream:
            kinds = [
                line.split(":", 1)[1].strip() for line in stream.iter_lines() if line.startswith("event:")
            ]
        assert kinds[-1] == "done" and kinds.count("progress") >= 9
        metrics = api.get("/metrics").text

    # Webhooks (the receiver answers 500 twice): "started" is best-effort, sent once; "completed", a terminal
    # event, got the second 500 and arrived on its second try with the same webhook-id; all verify.
    assert receiver.events() == ["job.started", "job.completed", "job.completed"]
    ids = [headers["webhook-id"] for headers, _ in receiver.deliveries]
    assert ids[0] != ids[1] == ids[2]
    for headers, payload in receiver.deliveries:
        assert Webhook(SECRET).verify(payload, headers)["data"]["id"] == job_id
    with pytest.raises(Exception):  # noqa: B017 - any verification error: a wrong secret must not verify
        Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(
            receiver.deliveries[-1][1], receiver.deliveries[-1][0]
        )

    # Metrics on both sides carry the documented names with non-zero counts.
    assert 'm4v_http_requests_total{code="202",method="POST",route="/generate"} 1.0' in metrics
    worker_metrics = process.context.metrics
    assert worker_metrics.sample("m4v_jobs_total", {"status": "succeeded"}) == 1
    assert (
        worker_metrics.sample(
            "m4v_job_phase_seconds_count", {"phase": "total", "preset": "tiny", "resolution": "128x128"}
        )
        or 0
    ) >= 1
    flops_mamba = worker_metrics.sample(
        "m4v_model_flops_total", {"preset": "tiny", "component": "mixer_mamba"}
    )
    assert flops_mamba and flops_mamba > 0


@pytest.mark.slow
def test_presigned_video_url_expires(
    redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tiny_pipeline: Any
) -> None:
    # 3 s: X-Amz-Date is truncated to whole seconds, so a 1 s URL can be expired before its first use.
    settings = make_settings(redis_url, key_prefix, s3_server, s3_bucket, presign_expiry_s=3)
    with TestClient(create_app(settings)) as api:
        job_id = api.post(
            "/generate", json={"prompt": "a blue square", "num_frames": 1, **FAST_STEPS}
        ).json()["id"]
        run_burst(settings, pipeline=tiny_pipeline)
        url = api.get(f"/jobs/{job_id}/video", follow_redirects=False).headers["location"]
        assert httpx.get(url).status_code == 200
        time.sleep(4.5)
        assert httpx.get(url).status_code == 403
        fresh = api.get(f"/jobs/{job_id}/video", follow_redirects=False).headers["location"]
        assert httpx.get(fresh).status_code == 200
