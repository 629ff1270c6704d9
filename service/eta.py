"""ETAs of queued jobs and the m4v_queue_flops gauge, from the FLOP bookkeeping the workers keep in Redis
(m4v_core/throughput.py). Running jobs get their eta_s from their worker (worker/eta.py).

A queued job's eta_s = (FLOPs ahead of it + its own FLOPs) / the fleet's FLOP/s, where "ahead" is every job
in a higher-priority queue, the jobs before it in its own queue, and what the running jobs still have to
spend (service/fleet_view.py, a snapshot at most fleet_view_ttl_s old). It is the expected time until the job
*finishes*; null while no throughput has been measured yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from m4v_core import JobRecord
from m4v_core.throughput import job_flops
from service.fleet_view import FleetView
from service.queue import JobQueue

log = logging.getLogger(__name__)


def queued_eta_s(
    view: FleetView, r: redis.Redis, prefix: str, job: JobRecord, own: float | None = None
) -> float | None:
    """Seconds until a queued job should finish, from the fleet view (at most its ttl old); ``own`` is the
    job's FLOP estimate when the caller has it (POST /generate), else it is looked up."""
    snap = view.get()
    rate = snap.rate(job.spec.preset)
    if not rate:
        return None
    if own is None:
        own = snap.own_flops(job)
    if own is None:
        own = job_flops(r, prefix, [job.id])[0]
    return round((snap.flops_ahead(job) + own) / rate, 3)


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
