"""The rq side of the API: enqueue by priority, positions, removal on cancel, depths for /metrics.

The worker's job function is named by its import path; the API never imports worker.jobs (nor torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from rq import Queue

from model.config import ModelConfig
from worker.contract import JobSpec, Priority
from worker.contract.models import PRIORITIES
from worker.contract.store import Keys

log = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.run_job"
# Generous run-time limits per preset family until model.flops gives an estimate.
DEFAULT_JOB_TIMEOUT_S = {"tiny": 900, "default": 4 * 3600}
TIMEOUT_GRACE_S = 120


def estimate_job_timeout_s(spec: JobSpec, cfg: ModelConfig, deadline_s: float | None) -> int:
    """rq's job_timeout: the client's deadline plus grace if given, else a generous per-preset default.

    TODO(model.flops): derive from the FLOP estimate of (preset, resolution, frames, steps) once
    model/flops.py exists, scaled by a conservative sustained TFLOP/s of the slowest served card.
    """
    if deadline_s is not None:
        return int(deadline_s) + TIMEOUT_GRACE_S
    base = DEFAULT_JOB_TIMEOUT_S.get(cfg.name, DEFAULT_JOB_TIMEOUT_S["default"])
    # Longer videos take proportionally longer than the preset's default length.
    scale = max(1.0, spec.num_frames / cfg.default_frames)
    return int(base * scale)


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

    def enqueue(self, job_id: str, priority: Priority, job_timeout_s: int) -> None:
        self.queues[priority].enqueue(
            JOB_FUNCTION,
            job_id,
            job_id=job_id,
            job_timeout=job_timeout_s,
            result_ttl=self.result_ttl_s,
            failure_ttl=self.failure_ttl_s,
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
        """Jobs ahead of this one: everything in higher-priority queues plus those before it in its own."""
        own = self.queues[priority].get_job_position(job_id)
        if own is None:
            return None
        ahead = 0
        for p in PRIORITIES:
            if p == priority:
                break
            ahead += self.queues[p].count
        return ahead + own

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
