"""ETAs of queued jobs and the m4v_queue_flops gauge, from the FLOP bookkeeping the workers keep in Redis
(worker/contract/throughput.py). Running jobs get their eta_s from their worker (worker/eta.py).

A queued job's eta_s = (FLOPs ahead of it + its own FLOPs) / the fleet's FLOP/s, where "ahead" is every job
in a higher-priority queue, the jobs before it in its own queue, and what the running jobs still have to
spend. It is the expected time until the job *finishes*; null while no throughput has been measured yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.queue import JobQueue
from worker.contract import JobRecord
from worker.contract.models import PRIORITIES
from worker.contract.throughput import fleet, fleet_rate, job_flops, preset_rate

log = logging.getLogger(__name__)


def ids_ahead(queue: JobQueue, job: JobRecord) -> list[str]:
    """Queued job ids dequeued before this one (rq pops from the left; high, normal, low in that order)."""
    ahead: list[str] = []
    for priority in PRIORITIES:
        ids = queue.queues[priority].get_job_ids()
        if priority == job.priority:
            return ahead + ids[: ids.index(job.id)] if job.id in ids else ahead + ids
        ahead += ids
    return ahead


def queued_eta_s(r: redis.Redis, prefix: str, queue: JobQueue, job: JobRecord) -> float | None:
    workers = fleet(r, prefix)
    rate = fleet_rate(workers, job.spec.preset, preset_rate(r, prefix, job.spec.preset))
    if not rate:
        return None
    running = [w.busy_job for w in workers if w.busy_job]
    flops = sum(job_flops(r, prefix, [*running, *ids_ahead(queue, job), job.id]))
    return round(flops / rate, 3)


def queued_flops(r: redis.Redis, prefix: str, queue: JobQueue) -> float:
    ids = [i for q in queue.queues.values() for i in q.get_job_ids()]
    return float(sum(job_flops(r, prefix, ids)))


class QueueFlopsCollector(Collector):
    """m4v_queue_flops: estimated FLOPs of every queued job, computed when scraped (KEDA scales on it)."""

    def __init__(self, r: redis.Redis, prefix: str, queue: JobQueue):
        self.r = r
        self.prefix = prefix
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("m4v_queue_flops", "estimated FLOPs of all queued jobs (model/flops.py)")
        try:
            gauge.add_metric([], queued_flops(self.r, self.prefix, self.queue))
        except redis.RedisError as exc:  # a scrape must not fail because Redis is down
            log.warning("queue flops unavailable: %s", exc)
            return
        yield gauge
