"""Worker liveness in Redis: {prefix}:worker:{name} holds a JSON heartbeat with a TTL of 3 periods.

GET /workers lists these keys; a worker that dies simply lets its key expire.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import redis

from worker.background import BackgroundThread

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    """What this worker process is doing, shared by the job code and the heartbeat thread."""

    name: str
    preset: str
    device: str
    model_loaded: bool = False
    loaded_at: datetime | None = None
    busy_job: str | None = None
    flops_per_s: float | None = None  # measured throughput (worker/eta.py), for fleet ETAs
    device_memory_bytes: int | None = None  # total device memory, for admission (None on CPU)
    weights: str | None = None  # checkpoint path the model was loaded from, or "random"
    weights_sha256: str | None = None  # None with random weights

    @property
    def random_weights(self) -> bool:
        """Serving random weights, all ("random") or part ("<path> (RANDOM vae)")."""
        return self.weights is not None and (self.weights == "random" or "(RANDOM" in self.weights)

    def as_heartbeat(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "preset": self.preset,
            "device": self.device,
            "model_loaded": self.model_loaded,
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
            "busy_job": self.busy_job,
            "flops_per_s": self.flops_per_s,
            "device_memory_bytes": self.device_memory_bytes,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "heartbeat_at": datetime.now(UTC).isoformat(),
            "pid": os.getpid(),
        }


class Heartbeat(BackgroundThread):
    """Writes the heartbeat key every period_s from a daemon thread; stop() removes the key."""

    thread_name = "m4v-heartbeat"

    def __init__(self, client: redis.Redis, key: str, state: WorkerState, period_s: float = 5.0) -> None:
        self.r = client
        self.key = key
        # key is {prefix}:worker:{name}; the fleet index {prefix}:workers lists it (Keys.worker_index)
        self.index = key.rsplit(":worker:", 1)[0] + ":workers"
        self.state = state
        self.period_s = period_s
        self.last_beat_s: float | None = None  # unix time of the last successful write (worker metrics)
        super().__init__()

    def beat(self) -> None:
        ttl_ms = max(1, int(3 * self.period_s * 1000))
        with self.r.pipeline(transaction=False) as pipe:
            pipe.set(self.key, json.dumps(self.state.as_heartbeat()), px=ttl_ms)
            pipe.zadd(self.index, {self.state.name: time.time() + ttl_ms / 1000})
            pipe.execute()
        self.last_beat_s = time.time()

    def start(self) -> Self:
        self.beat()  # visible (and ready) before the first period has passed
        return super().start()

    def stop(self, timeout_s: float = 5.0) -> None:
        super().stop(timeout_s)
        try:
            self.r.delete(self.key)
            self.r.zrem(self.index, self.state.name)
        except redis.RedisError:
            log.warning("could not remove heartbeat key", extra={"key": self.key})

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.beat()
            except redis.RedisError:  # Redis blip: the next beat retries; the TTL covers two misses
                log.warning("heartbeat write failed", exc_info=True)
