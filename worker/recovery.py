"""Abandoned jobs: a worker that dies mid-job (SIGKILL, node loss, OOM killer) leaves its job `running`.

Two detectors, both settled by worker/settle.py. First rq's: every running job has an execution in the
queue's StartedJobRegistry scored by a lease expiry. A SimpleWorker never renews it during a job (its lease
would be job_timeout + 60 s), so M4VWorker uses a short lease (Settings.job_lease_s) that the LeaseRenewer
thread (worker/leases.py) renews every heartbeat_s while the job runs. StartedJobRegistry.cleanup() then
finds lapsed leases and calls our exception handler with AbandonedJobError before deciding between rq's
retry and its FailedJobRegistry:

  record running/queued, attempts < max_attempts -> record back to queued, rq's own job.retry() requeues it
                                                     (its {prefix}:job_flops entry: the full estimate again)
  record running, attempts >= max_attempts        -> record failed, error.type worker_lost, rq marks it failed
                                                     (and its {prefix}:job_flops entry is dropped)
  record already terminal                         -> left alone (the worker died after finishing it)

Then our own records: every running attempt has a {prefix}:active entry with a lease deadline on the Redis
server's clock (worker/leases.py). An entry whose deadline passed is settled the same way, fenced on its
attempt id, whatever rq's registries say (rq drops its entry when it records a failure), and a requeued job
is enqueued again here (noted in {prefix}:draining first, so a reaper that dies halfway is caught up).

At-least-once: a re-run gets a new attempt id; the lapsed run, if still alive, writes nothing more
(worker/attempt.py) and its uploads went to keys of its own attempt.
Every worker process runs a Recovery thread; a Redis lock lets one of them reap at a time (each settlement
is conditional on the record, so two passes over the same lapse settle it once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job

from m4v_core import JobStore
from m4v_core.background import BackgroundThread
from m4v_core.store import JobNotFoundError
from worker.leases import ActiveLeases
from worker.settle import Settlement, settle_abandoned
from worker.shutdown import DRAIN_GRACE_S, enqueue_again

if TYPE_CHECKING:
    from m4v_core.webhooks import WebhookSender

log = logging.getLogger(__name__)

INTERMEDIATE_STUCK_S = 60  # rq's own threshold for a job dequeued but never registered as started
# worker/main.py gives its Reaper two leases instead (60 s with the default 30 s lease): a live worker
# registers a popped job within milliseconds, so one that has not within two leases is as lost as one whose
# lease lapsed.
INTERMEDIATE_STUCK_LEASES = 2


@dataclass
class Reaper:
    """rq StartedJobRegistry.cleanup over our queues under one Redis lock, settling each abandoned job."""

    client: redis.Redis
    store: JobStore
    max_attempts: int
    webhooks: WebhookSender | None = None
    lock_timeout_s: float = 60.0
    leases: ActiveLeases | None = None  # {prefix}:active; None: rq's registries only
    intermediate_stuck_s: float = INTERMEDIATE_STUCK_S  # popped, unstarted this long after first sight: lost
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
            self._settle_lapsed_active(now)
            self._requeue_lost_drains(now)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("reaper lock expired before release", extra={"key": self.lock_key})
        return list(self.settled)

    def _requeue_stuck_intermediate(self, queue: Queue, now: float | None = None) -> None:
        """A job popped (worker/dequeue.py) by a worker that died before registering it: rq would fail it; we
        requeue it once it has sat there, unstarted, intermediate_stuck_s since a reaper first saw it."""
        inter = queue.intermediate_queue
        now = time.time() if now is None else now
        for job_id in inter.get_job_ids():
            if job_id in queue.started_job_registry:
                continue
            if inter.set_first_seen(job_id):
                continue
            first_seen = inter.get_first_seen(job_id)
            if first_seen is None or now - first_seen.timestamp() <= self.intermediate_stuck_s:
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

    def _settle_lapsed_active(self, now: float | None = None) -> None:
        """Every {prefix}:active entry past its deadline (the server's clock, or ``now`` in tests): its run
        is lost. Requeue or fail the record if that attempt still owns it; drop the entry either way."""
        if self.leases is None:
            return
        for job_id, attempt_id in self.leases.lapsed(now):
            settlement = settle_abandoned(
                self.store,
                job_id,
                self.max_attempts,
                "worker lost (lease expired)",
                self.webhooks,
                attempt=attempt_id,
                note_draining=True,
            )
            self.leases.leave(self.client, job_id, attempt_id)  # already gone unless ignored
            if settlement.outcome == "ignored":
                continue
            self.settled.append(settlement)
            if settlement.outcome == "requeued":
                self._enqueue(job_id)

    def _enqueue(self, job_id: str) -> None:
        """Put a requeued job's rq job at the front of its queue (rq may hold it as failed or started)."""
        record = self.store.get(job_id)
        queue = Queue(self.store.keys.queue(record.priority), connection=self.client)
        job = queue.fetch_job(job_id)
        if job is None:
            queue.enqueue("worker.jobs.run_job", job_id, job_id=job_id, at_front=True)
            self.client.zrem(self.store.keys.draining(), job_id)
            return
        queue.failed_job_registry.remove(job)
        enqueue_again(self.store, queue, job)

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
    """Background thread of a worker: reaps every reap_every_s and retries spooled uploads every
    spool_every_s (leases are renewed by worker/leases.py's LeaseRenewer, never here: a slow spool retry
    must not let a live job's lease lapse)."""

    thread_name = "m4v-recovery"

    def __init__(
        self,
        reaper: Reaper,
        period_s: float,
        reap_every_s: float,
        retry_spool: Callable[[], object] | None = None,
        spool_every_s: float = 60.0,
    ) -> None:
        self.reaper = reaper
        self.period_s = period_s
        self.reap_every_s = reap_every_s
        self.retry_spool = retry_spool
        self.spool_every_s = spool_every_s
        super().__init__()

    def _run(self) -> None:
        last_reap = last_spool = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
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
