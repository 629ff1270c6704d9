"""The rq worker class: SimpleWorker (jobs run in this process: no fork after CUDA init).

Jobs are enqueued by name ("worker.jobs.run_job"); the loaded pipeline and clients reach run_job through
a context variable set around each job, so nothing global is created at import.

Lease: a running job's StartedJobRegistry entry lives job_lease_s (not rq's job_timeout + 60 s) and the
LeaseRenewer thread (worker/leases.py) renews it via renew_lease(); a SIGKILLed worker's job lapses quickly.

SIGTERM (one, as docker/worker_drain.py sends): rq's warm shutdown plus a drain request; the job stops at
the next sampler step boundary and goes back to the queue (or finishes if nearly done, see
worker/shutdown.py), then the worker exits. A second SIGTERM is rq's cold shutdown (the job is abandoned
and recovered by the reaper).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rq import Queue, SimpleWorker, worker_registration
from rq.job import Job
from rq.utils import now

from worker.context import JobContext, use_context
from worker.dequeue import M4VQueue
from worker.shutdown import enqueue_again

if TYPE_CHECKING:
    from worker.recovery import Reaper

log = logging.getLogger(__name__)


class M4VWorker(SimpleWorker):
    """Dequeues in the order the queues are given (high, normal, low) and runs jobs with its context.
    The pop moves the job into its queue's intermediate list atomically (worker/dequeue.py)."""

    queue_class = M4VQueue

    def __init__(
        self, queues: Sequence[Queue], *, context: JobContext, lease_s: int = 30, **kwargs: Any
    ) -> None:
        atomic = [q if isinstance(q, M4VQueue) else M4VQueue(q.name, connection=q.connection) for q in queues]
        super().__init__(atomic, **kwargs)
        self.context = context
        self.lease_s = lease_s
        self.reaper: Reaper | None = None  # set by worker/main.py: rq's maintenance goes through it
        self._lease_job: Job | None = None
        self._lease_lock = threading.Lock()

    def clean_registries(self) -> None:
        """rq's registry maintenance (at start and every maintenance interval), with lapsed leases settled by
        our Reaper. rq's own StartedJobRegistry cleanup would move an abandoned job to its FailedJobRegistry
        and leave our record `running` for ever (a restarted worker ran it before the reaper saw the lapse:
        the chaos test's stuck jobs); its intermediate-queue cleanup would fail jobs our reaper requeues."""
        if self.reaper is None:
            super().clean_registries()
            return
        self.reaper.reap_once()  # started registries and intermediate queues, under the reaper's lock
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                queue.finished_job_registry.cleanup()
                queue.failed_job_registry.cleanup()
                queue.deferred_job_registry.cleanup()
                worker_registration.clean_worker_registry(queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """rq's registration as started; the job leaves the intermediate list M4VQueue popped it into in the
        same transaction (rq does that only for a worker of one queue)."""
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.lease_s

    def renew_lease(self) -> None:
        """Extend the running job's StartedJobRegistry entry (called from the LeaseRenewer thread)."""
        with self._lease_lock:
            job = self._lease_job
            if job is not None and self.execution is not None:
                self.maintain_heartbeats(job)

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.context.drain.set()
        super().request_stop(signum, frame)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        with self._lease_lock:
            self._lease_job = job
        try:
            with use_context(self.context):
                ok = bool(super().perform_job(job, queue))
        finally:
            with self._lease_lock:
                self._lease_job = None
        self._requeue_if_drained(job, queue)
        return ok

    def _requeue_if_drained(self, job: Job, queue: Queue) -> None:
        """A job stopped by SIGTERM has its record back at `queued`; rq just finished its copy, so put a
        fresh rq job (same id) at the front of its queue and drop the finished copy's expiry."""
        from m4v_core.store import JobNotFoundError

        store = self.context.store
        try:
            if store.get(job.id).status != "queued":
                return  # not drained (a drained job that moved on meanwhile leaves the set by the reaper)
        except JobNotFoundError:
            return
        enqueue_again(store, queue, job)
        log.info("drained job requeued", extra={"job_id": job.id, "queue": queue.name})
