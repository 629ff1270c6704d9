"""What the API (service/) and the workers (worker/) share: the job model and its client view, the Redis
keys and transactions, the heartbeat, the webhook outbox and its SSRF guard, and the settings. No torch;
imports neither service nor worker (import-linter contracts in pyproject.toml)."""

from m4v_core.keys import Keys, keys
from m4v_core.models import (
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
from m4v_core.settings import ApiSettings, CommonSettings, ModelSettings, Settings, WorkerSettings
from m4v_core.store import JobStore

__all__ = [
    "ApiSettings",
    "CommonSettings",
    "ModelSettings",
    "WorkerSettings",
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
    "Keys",
    "Priority",
    "Settings",
    "WebhookAttempt",
    "WebhookEvent",
    "keys",
]
