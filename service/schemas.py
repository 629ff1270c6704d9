"""Response schemas of the HTTP API (requests use worker.contract.GenerateRequest unchanged)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from worker.contract import (
    GenerateRequest,
    JobError,
    JobMetrics,
    JobProgress,
    JobRecord,
    JobSpec,
    JobStatus,
    Priority,
    WebhookAttempt,
)
from worker.contract.models import PublicJobResult


class JobResultOut(PublicJobResult):
    """The result without storage keys; URLs are presigned fresh on every read."""


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

    @classmethod
    def from_record(cls, job: JobRecord, base_url: str, result: JobResultOut | None = None) -> JobOut:
        status_url = f"{base_url.rstrip('/')}/jobs/{job.id}"
        fields: dict[str, Any] = job.model_dump(exclude={"owner", "result", "worker"})
        return cls(
            **fields,
            result=result,
            status_url=status_url,
            events_url=f"{status_url}/events",
            cancel_url=status_url,
            video_url=f"{status_url}/video" if job.result is not None else None,
        )


class WorkerOut(BaseModel):
    """A worker's heartbeat as the worker writes it, plus its age."""

    name: str
    preset: str | None = None
    device: str | None = None
    model_loaded: bool = False
    busy_job: str | None = None
    loaded_at: datetime | None = None
    heartbeat_at: datetime | None = None
    heartbeat_age_s: float | None = None
    weights: str | None = Field(default=None, description='checkpoint path the model came from, or "random"')
    weights_sha256: str | None = Field(default=None, description="sha256 of those weights; null when random")
    random_weights: bool = Field(
        default=False, description="serving random weights, all or part (M4V_ALLOW_RANDOM_WEIGHTS)"
    )


class WorkersOut(BaseModel):
    workers: list[WorkerOut]
    count: int
    ready: int = Field(description="workers with the model loaded")
    busy: int


class HealthOut(BaseModel):
    status: str
    preset: str | None = None


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorDetail
