"""API-side Prometheus metrics in a per-app registry; queue gauges are read from Redis at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from m4v_core import JobStore
from service.eta import QueueFlopsCollector
from service.fleet_metrics import WorkersCollector
from service.queue import JobQueue

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class QueueCollector(Collector):
    """m4v_queue_depth{priority} and m4v_queue_oldest_age_seconds, computed when scraped."""

    def __init__(self, queue: JobQueue, store: JobStore):
        self.queue = queue
        self.store = store

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("m4v_queue_depth", "jobs waiting in each rq queue", labels=["priority"])
        oldest = GaugeMetricFamily("m4v_queue_oldest_age_seconds", "age of the oldest queued job (0 if none)")
        try:
            for d in self.queue.depths():
                depth.add_metric([d.priority], d.depth)
            oldest.add_metric([], self._oldest_age_s())
        except redis.RedisError as exc:  # a scrape must not fail because Redis is down
            log.warning("queue metrics unavailable: %s", exc)
            return
        yield depth
        yield oldest

    def _oldest_age_s(self) -> float:
        jobs = [j for j in self.store.get_many(self.queue.oldest_job_ids()) if j is not None]
        if not jobs:
            return 0.0
        created = min(j.created_at for j in jobs)
        return max(0.0, (datetime.now(UTC) - created).total_seconds())


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "m4v_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "m4v_http_request_duration_seconds",
            "HTTP request duration by route template (SSE: the whole stream)",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Counter(
            "m4v_jobs",
            "jobs by status change the API makes (submitted, canceled)",
            ["status"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "m4v_webhook_deliveries",
            "webhook delivery attempts made by this API process's dispatcher, by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def watch_queues(self, queue: JobQueue, store: JobStore) -> None:
        self.registry.register(QueueCollector(queue, store))
        self.registry.register(QueueFlopsCollector(store.r, store.keys.prefix, queue))
        self.registry.register(WorkersCollector(store.r, store.keys))

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, code=str(code)).inc()
        self.duration.labels(route=route).observe(seconds)
