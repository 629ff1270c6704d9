"""The sampler's per-step callback on the worker side: progress into Redis, cancel and deadline checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from m4v_core import JobProgress, JobRecord, JobStore

if TYPE_CHECKING:
    from m4v_core.webhooks import WebhookSender
    from model.pipeline_types import StepProgress
    from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PROGRESS_WEBHOOK_EVERY_PERCENT = 10.0  # a webhook per step would flood receivers (hundreds of steps)


class JobCanceledError(Exception):
    """The client canceled the job (cancel key set, or the record left `running`)."""


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
    """Called after every sampler step; raises JobCanceledError / JobTimedOutError to stop the sampler."""

    store: JobStore
    job_id: str
    deadline: datetime | None
    preset: str
    metrics: WorkerMetrics | None = None
    webhooks: WebhookSender | None = None
    eta: Callable[[StepProgress], float | None] | None = None  # worker/eta.py JobEta
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
        still_running = True

        def change(job: JobRecord) -> bool:
            nonlocal still_running
            if job.status != "running":
                still_running = False
                return False
            job.progress = progress
            job.eta_s = eta_s
            return True

        job = self.store.update(self.job_id, change)
        if not still_running or self.store.cancel_requested(self.job_id):
            raise JobCanceledError(f"job {self.job_id} canceled at step {p.steps_done}/{p.steps_all}")
        self.store.append_event(
            self.job_id, "progress", {"job_id": self.job_id, **progress.model_dump(), "eta_s": eta_s}
        )
        if (
            self.webhooks is not None
            and progress.percent - self.last_webhook_percent >= PROGRESS_WEBHOOK_EVERY_PERCENT
        ):
            self.last_webhook_percent = progress.percent
            self.webhooks.submit(job, "progress")
        deadline = job.deadline or self.deadline  # the record is the truth (an operator may move it)
        if deadline is not None and datetime.now(UTC) >= deadline:
            raise JobTimedOutError(
                f"deadline {deadline.isoformat()} passed at step {p.steps_done}/{p.steps_all}"
            )
