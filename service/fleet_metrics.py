"""m4v_workers{state} and m4v_worker_heartbeat_age_seconds{worker}, read from the workers' Redis heartbeats
when /metrics is scraped. The API exports them, not the workers: a fleet scaled to zero (or all crashed) has
no worker left to say so, and "jobs queued but no ready worker" is the alert that matters then."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from m4v_core.heartbeat import live_heartbeats
from m4v_core.keys import Keys

log = logging.getLogger(__name__)


class WorkersCollector(Collector):
    def __init__(self, client: redis.Redis, keys: Keys):
        self.r = client
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "m4v_workers",
            "workers with a live heartbeat: live (all), ready (model loaded), busy (running a job)",
            labels=["state"],
        )
        ages = GaugeMetricFamily(
            "m4v_worker_heartbeat_age_seconds", "age of each live worker's last heartbeat", labels=["worker"]
        )
        try:
            beats = live_heartbeats(self.r, self.keys)
        except redis.RedisError as exc:  # a scrape must not fail because Redis is down
            log.warning("worker metrics unavailable: %s", exc)
            return
        now = datetime.now(UTC)
        counts = {"live": 0, "ready": 0, "busy": 0}
        for beat in beats:
            counts["live"] += 1
            counts["ready"] += beat.model_loaded
            counts["busy"] += beat.busy_job is not None
            if (age := beat.age_s(now)) is not None:
                ages.add_metric([beat.name], age)
        for state, n in counts.items():
            workers.add_metric([state], n)
        yield workers
        yield ages
