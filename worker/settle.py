"""The fate of a job whose run was lost (lease lapsed, popped and never started): back to `queued`, or
`failed` with error.type worker_lost once it has had max_attempts starts.

One transaction per settlement: the record, its event (`status queued`, or `done` with the terminal
webhook and the drop of its FLOP estimate) and the removal of the lost attempt's {prefix}:active entry
(worker/leases.py). With `attempt` given, only that attempt's run is settled: a record another run owns,
or one already settled by another reaper, is left alone, so any number of reapers can settle the same entry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from m4v_core import JobError, JobProgress, JobRecord, JobStore
from m4v_core.store import JobNotFoundError
from m4v_core.throughput import drop_job_flops
from worker.eta import restore_job_flops
from worker.job_view import client_view
from worker.leases import member

if TYPE_CHECKING:
    from m4v_core.webhooks import WebhookSender

log = logging.getLogger(__name__)

ANY_ATTEMPT = "*"


@dataclass(frozen=True)
class Settlement:
    job_id: str
    outcome: str  # "requeued", "failed", "ignored"
    attempts: int


def settle_abandoned(
    store: JobStore,
    job_id: str,
    max_attempts: int,
    reason: str,
    webhooks: WebhookSender | None = None,
    attempt: str | None = ANY_ATTEMPT,
    note_draining: bool = False,
) -> Settlement:
    """Decide an abandoned job's fate on its record: back to queued, or failed with worker_lost.

    attempt: settle only if the record is `running` with this attempt id (the {prefix}:active reconciler);
    ANY_ATTEMPT (rq's registries): any running or queued record. note_draining: note a requeued job in
    {prefix}:draining in the same transaction, so it is enqueued even if this process dies before it does."""
    outcome = "ignored"
    lost_attempt: str | None = None
    now = datetime.now(UTC)

    def change(job: JobRecord) -> bool:
        nonlocal outcome, lost_attempt
        outcome = "ignored"
        if attempt != ANY_ATTEMPT and (job.status != "running" or job.attempt_id != attempt):
            return False
        if job.status not in ("running", "queued"):
            return False
        lost_attempt = job.attempt_id
        if job.status == "running" and job.attempts >= max_attempts:
            job.status = "failed"
            job.finished_at = now
            job.error = JobError(
                type="worker_lost",
                message=f"{reason}; gave up after {job.attempts} of {max_attempts} attempts",
            )
            outcome = "failed"
        else:
            job.status = "queued"
            job.started_at = None
            job.attempt_id = None  # the lapsed run no longer owns the record: its next write fails
            job.worker = None
            job.progress = JobProgress()
            outcome = "requeued"
        return True

    def also(pipe: redis.client.Pipeline, job: JobRecord) -> None:
        pipe.zrem(store.keys.active(), member(job_id, lost_attempt))
        if outcome == "requeued":
            event = {"job_id": job_id, "status": "queued", "at": now.isoformat(), "reason": reason}
            store.queue_event(pipe, job_id, "status", event)
            if note_draining:
                pipe.zadd(store.keys.draining(), {job_id: now.timestamp()})
        else:
            view = client_view(job)
            store.queue_event(pipe, job_id, "done", view)
            if webhooks is not None:
                webhooks.queue(pipe, job, "failed", data=view)
            drop_job_flops(pipe, store.keys.prefix, job_id)  # ahead of no one now (ETAs, m4v_queue_flops)

    try:
        job = store.update(job_id, change, also=also)
    except JobNotFoundError:
        return Settlement(job_id, "ignored", 0)
    if outcome == "requeued":
        restore_job_flops(store.r, store.keys.prefix, job, store.ttl_s)  # it restarts from its first step
    log.warning(
        "abandoned job settled",
        extra={"job_id": job_id, "outcome": outcome, "attempts": job.attempts, "reason": reason},
    )
    return Settlement(job_id, outcome, job.attempts)
