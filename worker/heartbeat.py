"""Worker liveness in Redis: a HeartbeatWriter thread publishes this worker's m4v_core.heartbeat.Heartbeat
every period with a TTL of 3 periods; GET /workers lists it, and a worker that dies simply lets it expire.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Self

import redis

from m4v_core.background import BackgroundThread
from m4v_core.heartbeat import Heartbeat, remove_heartbeat, write_heartbeat
from m4v_core.keys import Keys

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
    gpu_count: int = 0  # GPUs one job runs on (0 on CPU, 2 for a CFG pair; worker/capacity.py)
    vae_tile_px: int | None = None  # decode tile size (M4V_VAE_TILE_PX), for admission's memory estimate
    weights: str | None = None  # checkpoint path the model was loaded from, or "random"
    weights_sha256: str | None = None  # None with random weights

    @property
    def random_weights(self) -> bool:
        """Serving random weights, all ("random") or part ("<path> (RANDOM vae)")."""
        return self.weights is not None and (self.weights == "random" or "(RANDOM" in self.weights)

    def as_heartbeat(self) -> Heartbeat:
        return Heartbeat(
            name=self.name,
            preset=self.preset,
            device=self.device,
            model_loaded=self.model_loaded,
            loaded_at=self.loaded_at,
            busy_job=self.busy_job,
            flops_per_s=self.flops_per_s,
            device_memory_bytes=self.device_memory_bytes,
            gpu_count=self.gpu_count,
            vae_tile_px=self.vae_tile_px,
            weights=self.weights,
            weights_sha256=self.weights_sha256,
            random_weights=self.random_weights,
            heartbeat_at=datetime.now(UTC),
            pid=os.getpid(),
        )


class HeartbeatWriter(BackgroundThread):
    """Writes the heartbeat every period_s from a daemon thread; stop() removes it."""

    thread_name = "m4v-heartbeat"

    def __init__(self, client: redis.Redis, keys: Keys, state: WorkerState, period_s: float = 5.0) -> None:
        self.r = client
        self.keys = keys
        self.state = state
        self.period_s = period_s
        self.last_beat_s: float | None = None  # unix time of the last successful write (worker metrics)
        super().__init__()

    @property
    def key(self) -> str:
        return self.keys.worker(self.state.name)

    def beat(self) -> None:
        write_heartbeat(self.r, self.keys, self.state.as_heartbeat(), ttl_s=3 * self.period_s)
        self.last_beat_s = time.time()

    def start(self) -> Self:
        self.beat()  # visible (and ready) before the first period has passed
        return super().start()

    def stop(self, timeout_s: float = 5.0) -> None:
        super().stop(timeout_s)
        try:
            remove_heartbeat(self.r, self.keys, self.state.name)
        except redis.RedisError:
            log.warning("could not remove heartbeat key", extra={"key": self.key})

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.beat()
            except redis.RedisError:  # Redis blip: the next beat retries; the TTL covers two misses
                log.warning("heartbeat write failed", exc_info=True)
