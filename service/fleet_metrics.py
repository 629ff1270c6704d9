"""m4v_workers{state} and m4v_worker_heartbeat_age_seconds{worker}, read from the workers' Redis heartbeats
when /metrics is scraped. The API exports them, not the workers: a fleet scaled to zero (or all crashed) has
no worker left to say so, and "jobs queued but no ready worker" is the alert that matters then."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.contract.store import Keys, live_worker_keys

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
            keys = live_worker_keys(self.r, self.keys)
            raws = self.r.mget(keys) if keys else []
        except redis.RedisError as exc:  # a scrape must not fail because Redis is down
            log.warning("worker metrics unavailable: %s", exc)
            return
        now = datetime.now(UTC)
        counts = {"live": 0, "ready": 0, "busy": 0}
        for key, raw in zip(keys, raws, strict=True):
            try:
                beat = json.loads(raw) if raw is not None else None
            except ValueError:
                beat = None
            if not isinstance(beat, dict):
                continue
            counts["live"] += 1
            counts["ready"] += bool(beat.get("model_loaded"))
            counts["busy"] += beat.get("busy_job") is not None
            if at := _parse_time(beat.get("heartbeat_at")):
                name = str(beat.get("name") or key.rsplit(":", 1)[-1])
                ages.add_metric([name], max(0.0, (now - at).total_seconds()))
        for state, n in counts.items():
            workers.add_metric([state], n)
        yield workers
        yield ages


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
