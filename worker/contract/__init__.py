"""Job wire format shared by service/ and worker/: pydantic models, Redis key layout, settings. No torch."""

from worker.contract.models import (
    TERMINAL_STATUSES,
    WEBHOOK_EVENTS,
    GenerateRequest,
    JobError,
    JobMetrics,
    JobProgress,
    JobRecord,
    JobResult,
    JobSpec,
    JobStatus,
    Priority,
    WebhookAttempt,
    WebhookEvent,
)
from worker.contract.settings import Settings
from worker.contract.store import JobStore, keys

__all__ = [
    "TERMINAL_STATUSES",
    "WEBHOOK_EVENTS",
    "GenerateRequest",
    "JobError",
    "JobMetrics",
    "JobProgress",
    "JobRecord",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "JobStore",
    "Priority",
    "Settings",
    "WebhookAttempt",
    "WebhookEvent",
    "keys",
]
