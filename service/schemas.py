"""Response schemas of the HTTP API (requests use m4v_core.GenerateRequest; jobs render through
m4v_core.jobview, shared with the workers' events and webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from m4v_core.jobview import JobOut, JobResultOut

__all__ = [
    "ErrorDetail",
    "ErrorOut",
    "HealthOut",
    "JobListOut",
    "JobOut",
    "JobResultOut",
    "WorkerOut",
    "WorkersOut",
]


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
    gpu_count: int = Field(
        default=0, description="GPUs one job of this worker runs on (0 on CPU, 2 for a CFG-parallel pair)"
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


class JobListOut(BaseModel):
    """A page of the caller's jobs."""

    data: list[JobOut]
    has_more: bool
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last")
