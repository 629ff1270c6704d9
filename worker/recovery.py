"""Abandoned jobs: a worker that dies mid-job (SIGKILL, node loss, OOM killer) leaves its job `running`.

rq's own mechanism does the detection: every running job has an execution in the queue's
StartedJobRegistry scored by a lease expiry. A SimpleWorker never renews it during a job (its lease would be
job_timeout + 60 s), so M4VWorker uses a short lease (Settings.job_lease_s) that the Recovery thread renews
every heartbeat_s while the job runs. StartedJobRegistry.cleanup() then finds lapsed leases and calls our
exception handler with AbandonedJobError before deciding between rq's retry and its FailedJobRegistry:

  record running/queued, attempts < max_attempts -> record back to queued, rq's own job.retry() requeues it
                                                     (its {prefix}:job_flops entry: the full estimate again)
  record running, attempts >= max_attempts        -> record failed, error.type worker_lost, rq marks it failed
                                                     (and its {prefix}:job_flops entry is dropped)
  record already terminal                         -> left alone (the worker died after finishing it)

At-least-once: a re-run gets a new attempt id; the lapsed run, if still alive, writes nothing more
(worker/attempt.py) and its uploads went to keys of its own attempt.
Every worker process runs a Recovery thread; a Redis lock lets exactly one of them reap at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job

from m4v_core import JobError, JobProgress, JobRecord, JobStore
from m4v_core.background import BackgroundThread
from m4v_core.store import JobNotFoundError
from m4v_core.throughput import drop_job_flops
from worker.eta import restore_job_flops
from worker.job_view import client_view
from worker.shutdown import DRAIN_GRACE_S, enqueue_again

if TYPE_CHECKING:
    from m4v_core.webhooks import WebhookSender

log = logging.getLogger(__name__)

INTERMEDIATE_STUCK_S = 60  # rq's own threshold for a job dequeued but never registered as started


@dataclass(frozen=True)
class Settlement:
    job_id: str
    outcome: str  # "requeued", "failed", "ignored"
    attempts: int


def settle_abandoned(
    store: JobStore, job_id: str, max_attempts: int, reason: str, webhooks: WebhookSender | None = None
) -> Settlement:
    """Decide an abandoned job's fate on its record: back to queued, or failed with worker_lost."""
    outcome = "ignored"
    now = datetime.now(UTC)

    def change(job: JobRecord) -> bool:
        nonlocal outcome
        if job.status not in ("running", "queued"):
            outcome = "ignored"
            return False
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

    try:
        job = store.update(job_id, change)
    except JobNotFoundError:
        return Settlement(job_id, "ignored", 0)
    if outcome == "requeued":
        restore_job_flops(store.r, store.keys.prefix, job, store.ttl_s)  # it restarts from its first step
        store.append_event(
            job_id, "status", {"job_id": job_id, "status": "queued", "at": now.isoformat(), "reason": reason}
        )
    elif outcome == "failed":
        drop_job_flops(store.r, store.keys.prefix, job_id)  # ahead of no one now (ETAs, m4v_queue_flops)
        view = client_view(job)
        store.append_event(job_id, "done", view)
        if webhooks is not None:
            webhooks.submit(job, "failed", data=view)
    log.warning(
        "abandoned job settled",
        extra={"job_id": job_id, "outcome": outcome, "attempts": job.attempts, "reason": reason},
    )
    return Settlement(job_id, outcome, job.attempts)


@dataclass
class Reaper:
    """rq StartedJobRegistry.cleanup over our queues under one Redis lock, settling each abandoned job."""

    client: redis.Redis
    store: JobStore
    max_attempts: int
    webhooks: WebhookSender | None = None
    lock_timeout_s: float = 60.0
    settled: list[Settlement] = field(default_factory=list)

    @property
    def lock_key(self) -> str:
        return self.store.keys.reaper_lock()

    def handle(self, job: Job, exc_type: type[BaseException], exc_value: Any, tb: Any) -> bool:
        """rq exception handler; for AbandonedJobError it sets retries so rq's cleanup requeues the job."""
        if not issubclass(exc_type, AbandonedJobError):
            return True
        settlement = settle_abandoned(
            self.store, job.id, self.max_attempts, "worker lost (lease expired)", self.webhooks
        )
        self.settled.append(settlement)
        if settlement.outcome == "requeued":
            job.retries_left = 1  # rq's cleanup: retries_left > 0 -> job.retry(queue) -> back in the queue
            job.retry_intervals = None
            job.enqueue_at_front_on_retry = True
        return False

    def reap_once(self, now: float | None = None) -> list[Settlement]:
        """One pass over every queue; [] if another process holds the lock. ``now`` (unix time, tests): when
        leases are judged lapsed; default the current time."""
        lock = self.client.lock(self.lock_key, timeout=self.lock_timeout_s)
        if not lock.acquire(blocking=False):
            return []
        self.settled = []
        try:
            for name in self.store.keys.queues():
                queue = Queue(name, connection=self.client)
                queue.started_job_registry.cleanup(timestamp=now, exception_handlers=[self.handle])
                self._requeue_stuck_intermediate(queue, now)
            self._requeue_lost_drains(now)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("reaper lock expired before release", extra={"key": self.lock_key})
        return list(self.settled)

    def _requeue_stuck_intermediate(self, queue: Queue, now: float | None = None) -> None:
        """A job popped (worker/dequeue.py) by a worker that died before registering it: rq would fail it; we
        requeue it once it has sat there, unstarted, INTERMEDIATE_STUCK_S since a reaper first saw it."""
        inter = queue.intermediate_queue
        now = time.time() if now is None else now
        for job_id in inter.get_job_ids():
            if job_id in queue.started_job_registry:
                continue
            if inter.set_first_seen(job_id):
                continue
            first_seen = inter.get_first_seen(job_id)
            if first_seen is None or now - first_seen.timestamp() <= INTERMEDIATE_STUCK_S:
                continue
            inter.remove(job_id)
            self.client.delete(inter.get_first_seen_key(job_id))  # a later pop starts a fresh clock
            job = queue.fetch_job(job_id)
            if job is None:
                continue
            settlement = settle_abandoned(
                self.store, job_id, self.max_attempts, "worker lost before start", self.webhooks
            )
            self.settled.append(settlement)
            if settlement.outcome == "requeued":
                queue.enqueue_job(job, at_front=True)

    def _requeue_lost_drains(self, now: float | None = None) -> None:
        """Drained jobs whose worker died between rq finishing its copy and enqueueing the fresh one: the
        record says `queued`, no queue holds the job. Enqueue them again (worker/shutdown.py)."""
        key = self.store.keys.draining()
        cutoff = (now if now is not None else time.time()) - DRAIN_GRACE_S
        for raw in self.client.zrangebyscore(key, "-inf", cutoff):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                record = self.store.get(job_id)
            except JobNotFoundError:
                record = None
            queue = Queue(self.store.keys.queue(record.priority), connection=self.client) if record else None
            if record is None or record.status != "queued" or queue is None:
                self.client.zrem(key, job_id)
                continue
            if queue.get_job_position(job_id) is not None or job_id in queue.started_job_registry:
                self.client.zrem(key, job_id)  # the worker did enqueue it (or another one already runs it)
                continue
            job = queue.fetch_job(job_id)
            if job is None:
                log.error("drained job lost its rq job; left in the draining set", extra={"job_id": job_id})
                continue
            enqueue_again(self.store, queue, job)
            self.settled.append(Settlement(job_id, "requeued", record.attempts))
            log.warning("drained job was in no queue: enqueued again", extra={"job_id": job_id})


class Recovery(BackgroundThread):
    """Background thread of a worker: renews the running job's lease every period_s, reaps every
    reap_every_s, and retries spooled uploads every spool_every_s."""

    thread_name = "m4v-recovery"

    def __init__(
        self,
        reaper: Reaper,
        renew_lease: Callable[[], None],
        period_s: float,
        reap_every_s: float,
        retry_spool: Callable[[], object] | None = None,
        spool_every_s: float = 60.0,
    ) -> None:
        self.reaper = reaper
        self.renew_lease = renew_lease
        self.period_s = period_s
        self.reap_every_s = reap_every_s
        self.retry_spool = retry_spool
        self.spool_every_s = spool_every_s
        super().__init__()

    def _run(self) -> None:
        last_reap = last_spool = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self._guard(self.renew_lease, "lease renewal failed")
            if now - last_reap >= self.reap_every_s:
                last_reap = now
                self._guard(self.reaper.reap_once, "reaper pass failed")
            if self.retry_spool is not None and now - last_spool >= self.spool_every_s:
                last_spool = now
                self._guard(self.retry_spool, "spool retry failed")
            self._stop.wait(self.period_s)

    @staticmethod
    def _guard(fn: Callable[[], object], message: str) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a Redis/S3 blip must not end the recovery thread
            log.warning(message, exc_info=True)
