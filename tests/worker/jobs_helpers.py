"""Building job records the way the API does, and running them through a real worker (tests only)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rq import Queue
from standardwebhooks import Webhook

from m4v_cli.seaweed import SeaweedS3
from m4v_core import GenerateRequest, JobRecord, JobResult, JobSpec, JobStore, Settings
from m4v_core.models import Priority
from model.config import get_preset
from worker.main import WorkerProcess, run_burst


def make_job(
    webhook_url: str | None = None,
    events: list[str] | None = None,
    preset: str = "tiny",
    timeout_s: float | None = None,
    **spec_overrides: Any,
) -> JobRecord:
    cfg = get_preset(preset)
    req_kwargs: dict[str, Any] = {"prompt": "a red ball bouncing", "seed": 7}
    if webhook_url is not None:
        req_kwargs["webhook_url"] = webhook_url
    if events is not None:
        req_kwargs["webhook_events"] = events
    if timeout_s is not None:
        req_kwargs["timeout_s"] = timeout_s
    request = GenerateRequest(**req_kwargs)
    width, height = cfg.default_resolution
    spec_kwargs: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": None,
        "width": width,
        "height": height,
        "num_frames": cfg.default_frames,
        "fps": cfg.default_fps,
        "seed": 7,
        "guidance_scale": cfg.sampler.guidance_scale,
        "video_guidance_scale": cfg.sampler.video_guidance_scale,
        "first_frame_steps": list(cfg.sampler.first_frame_steps),
        "later_frame_steps": list(cfg.sampler.later_frame_steps),
        "preset": preset,
    }
    spec_kwargs.update(spec_overrides)
    now = datetime.now(UTC)
    return JobRecord(
        id=uuid.uuid4().hex,
        created_at=now,
        request=request,
        spec=JobSpec(**spec_kwargs),
        deadline=now + timedelta(seconds=timeout_s) if timeout_s is not None else None,
    )


def result_for(key: str, data: bytes) -> JobResult:
    """A one-frame 16x16 result for `data` stored at `key` (what a spool entry or a transition carries)."""
    return JobResult(
        video_key=key,
        bytes=len(data),
        width=16,
        height=16,
        frames=1,
        fps=8,
        seed=1,
        sha256="0",
        frames_done=1,
    )


def submit(store: JobStore, queue: Queue, job: JobRecord) -> None:
    """Store the record, append the creation event and enqueue, as POST /generate does."""
    store.create(job)
    store.append_event(job.id, "status", {"status": job.status})
    queue.enqueue(
        "worker.jobs.run_job", job.id, job_id=job.id, job_timeout=600, result_ttl=60, failure_ttl=3600
    )


# --- the job flow through a real worker (test_jobs.py, test_eta.py, test_preview.py; fixtures in conftest.py)
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
# The tiny model is ~1 s per step on a busy 2-core CPU: keep jobs to a handful of steps.
ONE_STEP_PER_STAGE = {"first_frame_steps": [1, 1, 1], "later_frame_steps": [1, 1, 1]}
FAST = {"num_frames": 5, **ONE_STEP_PER_STAGE}  # 2 latent frames, 6 steps
SINGLE_FRAME = {"num_frames": 1, **ONE_STEP_PER_STAGE}  # 1 latent frame, 3 steps


def queue(store: JobStore, priority: Priority = "normal") -> Queue:
    return Queue(store.keys.queue(priority), connection=store.r)


def events(store: JobStore, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(typ, data) for _, typ, data in store.read_events(job_id, count=10_000)]


class Hooks:
    """Webhook receiver through httpx.MockTransport; verifies every signature."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.payloads.append(Webhook(SECRET).verify(request.content, dict(request.headers)))
        return httpx.Response(200)

    @property
    def types(self) -> list[str]:
        return [p["type"] for p in self.payloads]


def work(settings: Settings, pipeline: Any, hooks: Hooks | None = None, **kw: Any) -> WorkerProcess:
    transport = httpx.MockTransport(hooks or Hooks())
    return run_burst(settings, pipeline=pipeline, webhook_transport=transport, drain_webhooks_s=5.0, **kw)


FAST_STEPS = {"first_frame_steps": [1, 1, 1], "later_frame_steps": [1, 1, 1]}


def service_settings(
    redis_url: str, key_prefix: str, s3: SeaweedS3, bucket: str, *, webhook_secret: str, **overrides: Any
) -> Settings:
    """Settings against the tests' real services (Redis, SeaweedFS), webhooks signed with ``webhook_secret``
    and allowed to loopback receivers, worker metrics on a free port; ``overrides`` per test module."""
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        s3_endpoint=s3.endpoint,
        s3_bucket=bucket,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        webhook_secret=webhook_secret,
        webhook_allow_hosts=["127.0.0.1"],
        worker_metrics_port=0,
        **overrides,
    )


def make_settings(redis_url: str, key_prefix: str, s3: SeaweedS3, bucket: str, **extra: Any) -> Settings:
    """The end-to-end tests' settings: three quick webhook retries, a worker name of its own."""
    return service_settings(
        redis_url,
        key_prefix,
        s3,
        bucket,
        webhook_secret=SECRET,
        webhook_retry_delays_s=[0.1, 0.1, 0.1],
        worker_name=f"e2e-{key_prefix}",
        **extra,
    )


class PausedPipeline:
    """A pipeline whose run calls `action` inside the sampler callback of step `at_step`, before the
    worker's own callback sees that step: what happens to the record while the run is stalled there."""

    def __init__(self, inner: Any, at_step: int, action: Callable[[], None]) -> None:
        self.inner, self.at_step, self.action = inner, at_step, action

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, request: Any, on_progress: Any = None, on_chunk: Any = None) -> Any:
        def progress(p: Any) -> None:
            if p.steps_done == self.at_step:
                self.action()
            on_progress(p)

        return self.inner.generate(request, on_progress=progress, on_chunk=on_chunk)
