"""SIGTERM at a step boundary: the sampler finishes its current step, then the job goes back to the queue.

M4VWorker.request_stop sets JobContext.drain; StepGate (wrapping the per-step progress callback) raises
DrainRequestedError after the step unless the sampler is at least `finish_fraction` through, in which case the
job runs to the end. requeue_drained() puts the record back to `queued`; the attempt counts (a job whose
pods are scaled away again and again fails at max_attempts instead of looping: worker/jobs.py).

Then rq finishes its copy of the job and M4VWorker puts a fresh rq job (same id) at the front of the queue
(enqueue_again). A SIGKILL between those two leaves a `queued` record in no queue: so the record's move also
notes the job in {prefix}:draining, the enqueue removes it, and the reaper (worker/recovery.py) enqueues
what is still noted after DRAIN_GRACE_S.

Last, before the process exits, flush_spool() uploads what the spool holds (worker/spool.py), within
drain_spool_flush_s: a pod's spool is an emptyDir unless worker.spool.existingClaim is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from m4v_core import JobProgress, JobRecord, JobStore
from worker.attempt import Attempt, AttemptLostError

if TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job

    from model.pipeline_types import StepProgress
    from worker.leases import ActiveLeases
    from worker.spool import Spool
    from worker.storage import Storage

DRAIN_GRACE_S = 30.0  # the worker re-enqueues within milliseconds of rq finishing its copy

log = logging.getLogger(__name__)


class DrainRequestedError(Exception):
    """The worker was asked to stop (SIGTERM); the job is to be requeued at this step boundary."""


@dataclass
class StepGate:
    """on_progress wrapper: runs the reporter, then stops the job if a drain was requested."""

    inner: Callable[[StepProgress], None]
    drain: threading.Event
    finish_fraction: float

    def __call__(self, p: StepProgress) -> None:
        self.inner(p)
        if self.drain.is_set() and p.fraction < self.finish_fraction:
            raise DrainRequestedError(f"worker stopping at step {p.steps_done}/{p.steps_all}")


def requeue_drained(store: JobStore, job: JobRecord, reason: str, leases: ActiveLeases | None = None) -> bool:
    """running -> queued (the attempt stays counted); False if the record is no longer this run's (left
    `running`, or another attempt owns it). The record, its `queued` event and the {prefix}:draining note
    are one transaction, conditional on the run's attempt id (worker/attempt.py)."""
    now = datetime.now(UTC)

    def change(rec: JobRecord) -> None:
        rec.status = "queued"
        rec.attempt_id = None
        rec.started_at = None
        rec.worker = None
        rec.progress = JobProgress()

    def also(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
        pipe.zadd(store.keys.draining(), {job.id: now.timestamp()})
        event = {"job_id": job.id, "status": "queued", "at": now.isoformat(), "reason": reason}
        store.queue_event(pipe, job.id, "status", event)
        if leases is not None:
            leases.leave(pipe, job.id, job.attempt_id)

    try:
        Attempt(store, job.id, job.attempt_id).write(change, also)
    except AttemptLostError:
        return False
    log.info("job requeued on worker shutdown", extra={"job_id": job.id, "reason": reason})
    return True


def enqueue_again(store: JobStore, queue: Queue, job: Job) -> None:
    """A fresh rq job with the same id and settings at the front of its queue, for a drained job whose record
    is `queued` again; the finished copy's expiry is dropped and the job leaves {prefix}:draining."""
    queue.enqueue(
        job.func_name,
        *job.args,
        job_id=job.id,
        job_timeout=job.timeout,
        result_ttl=job.result_ttl,
        failure_ttl=job.failure_ttl,
        at_front=True,
    )
    store.r.persist(job.key)
    store.r.zrem(store.keys.draining(), job.id)


def flush_spool(
    spool: Spool,
    storage: Storage,
    store: JobStore,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Upload the spool's entries one by one until `budget_s` has passed by `clock`; entry -> outcome as in
    Spool.retry_all (entries not tried are absent). It runs on a thread of its own, joined for at most
    budget_s: the LeaseRenewer and the dispatcher keep running meanwhile, and an upload still hanging at the
    deadline is left behind (the process exits; its entry stays for any worker's next spool pass)."""
    from worker.storage import StorageError

    deadline = clock() + budget_s
    done: list[tuple[str, str]] = []

    def work() -> None:
        for entry in spool.pending():
            if clock() >= deadline:
                return
            try:
                done.append((entry, spool.reupload(entry, storage, store)))
            except StorageError as exc:
                done.append((entry, f"error: {exc}"))
            except OSError as exc:  # another worker's spool pass took the entry meanwhile (a shared PVC)
                done.append((entry, f"gone: {exc}"))

    thread = threading.Thread(target=work, name="m4v-spool-flush", daemon=True)
    thread.start()
    thread.join(budget_s)
    left = spool.pending()
    log.info("spool flushed before exit", extra={"uploaded": len(done), "left": len(left)})
    return dict(list(done))
