"""A worker's heartbeat: the one typed model the worker writes and every reader (API, probes, CLI) parses.

The worker (worker/heartbeat.py) writes {p}:worker:{name} with a TTL of 3 periods and scores the name in the
{p}:workers index by the key's expiry; a worker that dies lets both lapse. Readers go through
live_heartbeats() (the fleet: GET /workers, admission, ETAs) or read_heartbeat() (one worker: probes, CLI).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import redis
from pydantic import BaseModel, ConfigDict, ValidationError

from m4v_core.keys import Keys
from m4v_core.store import live_worker_keys

log = logging.getLogger(__name__)


class Heartbeat(BaseModel):
    """What a worker publishes about itself every heartbeat period."""

    model_config = ConfigDict(extra="ignore")  # a newer worker may publish more than this reader knows

    name: str
    preset: str | None = None
    device: str | None = None
    model_loaded: bool = False
    loaded_at: datetime | None = None
    busy_job: str | None = None
    flops_per_s: float | None = None  # measured throughput (worker/eta.py), for fleet ETAs
    device_memory_bytes: int | None = None  # total device memory, for admission (None on CPU)
    gpu_count: int = 0  # GPUs one job runs on (0 on CPU, 2 for a CFG pair); admission and ETAs key on it
    vae_tile_px: int | None = None  # the worker's decode tile size (M4V_VAE_TILE_PX; None: the VAE's own)
    weights: str | None = None  # checkpoint path the model was loaded from, or "random"
    weights_sha256: str | None = None  # None with random weights
    random_weights: bool = False  # serving random weights, all or part (M4V_ALLOW_RANDOM_WEIGHTS)
    heartbeat_at: datetime | None = None
    pid: int | None = None

    def age_s(self, now: datetime | None = None) -> float | None:
        """Seconds since it was written (never negative), or None if it carries no time."""
        if self.heartbeat_at is None:
            return None
        beat = self.heartbeat_at if self.heartbeat_at.tzinfo else self.heartbeat_at.replace(tzinfo=UTC)
        return max(0.0, ((now or datetime.now(UTC)) - beat).total_seconds())


def parse_heartbeat(key: str, raw: bytes | str | None) -> Heartbeat | None:
    """The heartbeat stored at `key`, or None if it is gone or unreadable (logged)."""
    if raw is None:  # expired between the index read and the GET
        return None
    try:
        fields = json.loads(raw)
        fields.setdefault("name", key.rsplit(":", 1)[-1])
        return Heartbeat.model_validate(fields)
    except (ValueError, TypeError, AttributeError, ValidationError) as exc:
        log.warning("unreadable heartbeat", extra={"key": key, "error": str(exc)})
        return None


def read_heartbeat(client: redis.Redis, keys: Keys, name: str) -> Heartbeat | None:
    key = keys.worker(name)
    return parse_heartbeat(key, client.get(key))  # type: ignore[arg-type]


def live_heartbeats(client: redis.Redis, keys: Keys) -> list[Heartbeat]:
    """The heartbeats of every live worker (from the {p}:workers index, no SCAN), sorted by key."""
    names = live_worker_keys(client, keys)
    raws = client.mget(names) if names else []
    found = (parse_heartbeat(k, r) for k, r in zip(names, raws, strict=True))  # type: ignore[arg-type]
    return [hb for hb in found if hb is not None]


def write_heartbeat(client: redis.Redis, keys: Keys, beat: Heartbeat, ttl_s: float) -> None:
    """Store the heartbeat with its TTL and keep the worker in the index until that TTL ends."""
    ttl_ms = max(1, int(ttl_s * 1000))
    with client.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(beat.name), beat.model_dump_json(), px=ttl_ms)
        pipe.zadd(keys.worker_index(), {beat.name: time.time() + ttl_ms / 1000})
        pipe.execute()


def remove_heartbeat(client: redis.Redis, keys: Keys, name: str) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(name))
        pipe.zrem(keys.worker_index(), name)
        pipe.execute()
