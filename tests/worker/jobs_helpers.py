"""Building job records the way the API does (tests only)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Queue

from m4v_core import GenerateRequest, JobRecord, JobSpec, JobStore
from model.config import get_preset


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


def submit(store: JobStore, queue: Queue, job: JobRecord) -> None:
    """Store the record, append the creation event and enqueue, as POST /generate does."""
    store.create(job)
    store.append_event(job.id, "status", {"status": job.status})
    queue.enqueue(
        "worker.jobs.run_job", job.id, job_id=job.id, job_timeout=600, result_ttl=60, failure_ttl=3600
    )
