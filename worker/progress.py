"""The sampler's per-step callback on the worker side: progress into Redis, cancel and deadline checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from m4v_core import JobProgress, JobRecord, JobStore
from worker.attempt import Attempt

if TYPE_CHECKING:
    from m4v_core.webhooks import WebhookSender
    from model.pipeline_types import StepProgress
    from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PROGRESS_WEBHOOK_EVERY_PERCENT = 10.0  # a webhook per step would flood receivers (hundreds of steps)


class JobCanceledError(Exception):
    """The client canceled the job (its cancel key is set)."""


class JobTimedOutError(Exception):
    """The job's deadline (timeout_s from submission) passed."""


def to_job_progress(p: StepProgress) -> JobProgress:
    unit_finished = p.stage == p.stages_total - 1 and p.step == p.steps_total
    return JobProgress(
        unit="latent_frame",
        units_done=p.unit + (1 if unit_finished else 0),
        units_total=p.units_total,
        stage=p.stage,
        step=p.step,
        steps_total=p.steps_total,
        percent=round(100.0 * p.fraction, 2),
    )


@dataclass
class ProgressReporter:
    """Called after every sampler step; raises JobCanceledError / JobTimedOutError to stop the sampler, and
    worker/attempt.py's AttemptLostError (writing nothing) once the record is no longer this attempt's."""

    store: JobStore
    job_id: str
    deadline: datetime | None
    preset: str
    metrics: WorkerMetrics | None = None
    webhooks: WebhookSender | None = None
    eta: Callable[[StepProgress], float | None] | None = None  # worker/eta.py JobEta
    attempt_id: str | None = None  # the record's attempt_id when this run started it
    last_webhook_percent: float = -PROGRESS_WEBHOOK_EVERY_PERCENT
    steps_seen: int = 0

    def __call__(self, p: StepProgress) -> None:
        self.steps_seen += 1
        if self.metrics is not None:
            self.metrics.sampler_step_seconds.labels(preset=self.preset, stage=str(p.stage)).observe(
                p.step_seconds
            )
        progress = to_job_progress(p)
        eta_s = self.eta(p) if self.eta is not None else None
        attempt = Attempt(self.store, self.job_id, self.attempt_id)
        event = {"job_id": self.job_id, **progress.model_dump(), "eta_s": eta_s}
        webhook = (
            self.webhooks is not None
            and progress.percent - self.last_webhook_percent >= PROGRESS_WEBHOOK_EVERY_PERCENT
        )

        def change(job: JobRecord) -> None:
            job.progress = progress
            job.eta_s = eta_s

        def also(pipe: redis.client.Pipeline, job: JobRecord) -> None:
            attempt.events(("progress", event))(pipe, job)
            if webhook and self.webhooks is not None:
                self.webhooks.queue(pipe, job, "progress")

        job = attempt.write(change, also)  # AttemptLostError: superseded, nothing written
        if webhook:
            self.last_webhook_percent = progress.percent
        if self.store.cancel_requested(self.job_id):
            raise JobCanceledError(f"job {self.job_id} canceled at step {p.steps_done}/{p.steps_all}")
        deadline = job.deadline or self.deadline  # the record is the truth (an operator may move it)
        if deadline is not None and datetime.now(UTC) >= deadline:
            raise JobTimedOutError(
                f"deadline {deadline.isoformat()} passed at step {p.steps_done}/{p.steps_all}"
            )
