"""A job as clients see it, rendered by ONE function for every way it leaves the system.

GET /jobs/{id}, DELETE /jobs/{id}, POST /generate, the SSE `done` event (written by the worker, by the
reaper, by the spool, by the API's cancel of a queued job, or made up by the API for a finished job whose
stream holds no `done`) and every webhook body carry render_job(job).model_dump(mode="json"). It hides the
owner, the worker's name and the storage keys, presigns the video and thumbnail when a signer is given, and
adds the job's links.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from m4v_core.models import (
    GenerateRequest,
    JobError,
    JobMetrics,
    JobProgress,
    JobRecord,
    JobResult,
    JobSpec,
    JobStatus,
    Priority,
    PublicJobResult,
    WebhookAttempt,
)

Signer = Callable[[str], str]  # storage key -> presigned GET URL; may raise if it cannot sign
HIDDEN = frozenset({"owner", "worker", "links_base", "attempt_id"})


class JobResultOut(PublicJobResult):
    """The result without storage keys; URLs are presigned fresh every time a job is rendered."""


class JobOut(BaseModel):
    """A job as clients see it (the owner is never shown)."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    priority: Priority
    request: GenerateRequest = Field(description="the request as sent")
    spec: JobSpec = Field(description="the request with every default resolved, the seed included")
    progress: JobProgress
    queue_position: int | None = Field(None, description="jobs ahead of this one over all queues; 0 = next")
    eta_s: float | None = None
    result: JobResultOut | None = None
    metrics: JobMetrics
    error: JobError | None = None
    attempts: int = 0
    deadline: datetime | None = None
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)
    status_url: str
    events_url: str
    cancel_url: str
    video_url: str | None = Field(None, description="GET redirects to a fresh presigned URL once succeeded")


def public_result(result: JobResult, sign: Signer | None = None, expiry_s: int = 3600) -> JobResultOut:
    """The stored result without its storage keys; with `sign`, fresh URLs valid for expiry_s.
    If `sign` raises, the exception propagates (the caller decides whether URLs are optional)."""
    hidden = {"video_key", "thumbnail_key", "video_url", "thumbnail_url"}
    out = JobResultOut(**result.model_dump(exclude=hidden))
    if sign is not None:
        out.video_url = sign(result.video_key)
        out.thumbnail_url = sign(result.thumbnail_key) if result.thumbnail_key else None
        out.expires_at = datetime.now(UTC) + timedelta(seconds=expiry_s)
    return out


def render_job(
    job: JobRecord,
    base_url: str | None = None,
    result: JobResultOut | None = None,
    queue_position: int | None = None,
    eta_s: float | None = None,
) -> JobOut:
    """The client view of `job`.

    base_url: where the links point; default the base the job was submitted through (JobRecord.links_base).
    result: the public result with URLs (public_result); default the stored one without URLs.
    queue_position, eta_s: live values for a queued job (the API computes them); a running job keeps the
    ETA its worker last wrote; a finished job has neither.
    """
    base = (base_url or job.links_base or "").rstrip("/")
    status_url = f"{base}/jobs/{job.id}"
    if result is None and job.result is not None:
        result = public_result(job.result)
    fields: dict[str, Any] = job.model_dump(exclude={*HIDDEN, "result", "queue_position", "eta_s"})
    if job.status == "queued":
        live_eta = eta_s
    elif job.finished:
        live_eta, queue_position = None, None
    else:
        live_eta, queue_position = job.eta_s, None
    return JobOut(
        **fields,
        result=result,
        queue_position=queue_position,
        eta_s=live_eta,
        status_url=status_url,
        events_url=f"{status_url}/events",
        cancel_url=status_url,
        video_url=f"{status_url}/video" if job.result is not None else None,
    )


def render_job_json(job: JobRecord, **kwargs: Any) -> dict[str, Any]:
    """render_job as the JSON-ready dict that events and webhook bodies carry."""
    return render_job(job, **kwargs).model_dump(mode="json")
