"""The rq side of the API: enqueue by priority, positions, removal on cancel, depths for /metrics.

The worker's job function is named by its import path; the API never imports worker.jobs (nor torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from rq import Queue

from m4v_core import JobSpec, Priority
from m4v_core.keys import Keys
from m4v_core.models import PRIORITIES
from m4v_core.throughput import spec_flops
from model.config import ModelConfig

log = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.run_job"
# rq's job_timeout must never kill a healthy job, so the estimate is deliberately pessimistic: a sustained
# rate well below any served card's bf16 throughput, a safety factor, and fixed time for load/encode/upload.
CONSERVATIVE_FLOPS_PER_S = 20e12
SAFETY_FACTOR = 2.0
OVERHEAD_S = 300
MIN_JOB_TIMEOUT_S = 900  # also covers the tiny preset on CPU, where FLOP rates say little
TIMEOUT_GRACE_S = 120


def estimate_job_timeout_s(spec: JobSpec, cfg: ModelConfig, deadline_s: float | None) -> int:
    """rq's job_timeout: the client's deadline plus grace if given (the worker enforces the deadline
    itself), else a pessimistic run time from model.flops' whole-request FLOP estimate."""
    if deadline_s is not None:
        return int(deadline_s) + TIMEOUT_GRACE_S
    flops = spec_flops(spec, cfg)
    return max(MIN_JOB_TIMEOUT_S, int(OVERHEAD_S + SAFETY_FACTOR * flops / CONSERVATIVE_FLOPS_PER_S))


@dataclass(frozen=True)
class QueueDepth:
    priority: Priority
    depth: int


class JobQueue:
    """One rq Queue per priority ({prefix}-high/normal/low); workers dequeue high first."""

    def __init__(self, client: redis.Redis, keys: Keys, result_ttl_s: int, failure_ttl_s: int):
        self.client = client
        self.queues: dict[Priority, Queue] = {p: Queue(keys.queue(p), connection=client) for p in PRIORITIES}
        self.result_ttl_s = result_ttl_s
        self.failure_ttl_s = failure_ttl_s

    def enqueue(
        self, job_id: str, priority: Priority, job_timeout_s: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Put the job on its rq queue; with ``pipe`` rq's writes join the caller's transaction (rq then
        runs nothing itself: the caller executes the pipeline)."""
        self.queues[priority].enqueue_call(
            JOB_FUNCTION,
            args=(job_id,),
            job_id=job_id,
            timeout=job_timeout_s,
            result_ttl=self.result_ttl_s,
            failure_ttl=self.failure_ttl_s,
            pipeline=pipe,
        )
        log.info("enqueued", extra={"job_id": job_id, "priority": priority, "job_timeout_s": job_timeout_s})

    def depths(self) -> list[QueueDepth]:
        with self.client.pipeline(transaction=False) as pipe:
            for q in self.queues.values():
                pipe.llen(q.key)
            counts = pipe.execute()
        return [QueueDepth(p, int(n)) for p, n in zip(self.queues, counts, strict=True)]

    def total_depth(self) -> int:
        return sum(d.depth for d in self.depths())

    def position(self, job_id: str, priority: Priority) -> int | None:
        """Jobs ahead of this one: everything in higher-priority queues plus those before it in its own
        (one round trip: LPOS in its queue, LLEN of the queues above)."""
        higher = PRIORITIES[: PRIORITIES.index(priority)]
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lpos(self.queues[priority].key, job_id)
            for p in higher:
                pipe.llen(self.queues[p].key)
            own, *above = pipe.execute()
        if own is None:
            return None
        return int(own) + sum(int(n) for n in above)

    def remove(self, job_id: str, priority: Priority) -> bool:
        """Take a job out of its rq queue and drop rq's copy; False if it was no longer queued."""
        removed = bool(self.queues[priority].remove(job_id))
        rq_job = self.queues[priority].fetch_job(job_id)
        if rq_job is not None:
            rq_job.delete(remove_from_queue=False)
        return removed

    def oldest_job_ids(self) -> list[str]:
        """The head of every non-empty queue (rq pushes right and pops left, so the head is the oldest)."""
        with self.client.pipeline(transaction=False) as pipe:
            for q in self.queues.values():
                pipe.lindex(q.key, 0)
            heads = pipe.execute()
        return [h.decode() if isinstance(h, bytes) else h for h in heads if h is not None]
