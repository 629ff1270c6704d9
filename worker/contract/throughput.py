"""FLOP bookkeeping in Redis that the workers write and the API reads (ETAs, admission, m4v_queue_flops).

Keys (prefix p):
  {p}:throughput:{preset}  hash {flops, seconds}: exponentially decayed sums of the FLOPs the workers spent
                           and the wall time they took, per preset; rate = flops / seconds (a FLOP-weighted
                           moving average that survives worker restarts and scale-to-zero)
  {p}:job_flops            hash job id -> FLOPs the job still has to spend: the whole-request estimate at
                           submission, the remaining FLOPs after every sampler step, deleted when it ends
Each worker's own rate also travels in its heartbeat (flops_per_s), so the fleet's throughput is the sum
over live workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

DECAY_PER_STEP = 0.97  # a window of ~30 sampler steps: adapts within a job, smooth over single steps


def throughput_key(prefix: str, preset: str) -> str:
    return f"{prefix}:throughput:{preset}"


def job_flops_key(prefix: str) -> str:
    return f"{prefix}:job_flops"


@dataclass
class ThroughputMeter:
    """Decayed (FLOPs, seconds) sums of one preset, loaded from and written back to Redis."""

    r: redis.Redis
    key: str
    flops: float = 0.0
    seconds: float = 0.0

    @classmethod
    def load(cls, r: redis.Redis, prefix: str, preset: str) -> ThroughputMeter:
        key = throughput_key(prefix, preset)
        raw = r.hmget(key, ["flops", "seconds"])
        flops, seconds = (float(v) if v is not None else 0.0 for v in raw)
        return cls(r, key, flops, seconds)

    @property
    def rate(self) -> float | None:
        """FLOP/s, or None before anything was measured."""
        return self.flops / self.seconds if self.flops > 0 and self.seconds > 0 else None

    def add(self, flops: float, seconds: float) -> None:
        if flops <= 0 or seconds <= 0:
            return
        self.flops = DECAY_PER_STEP * self.flops + flops
        self.seconds = DECAY_PER_STEP * self.seconds + seconds
        self.r.hset(self.key, mapping={"flops": self.flops, "seconds": self.seconds})


def preset_rate(r: redis.Redis, prefix: str, preset: str) -> float | None:
    return ThroughputMeter.load(r, prefix, preset).rate


def set_job_flops(r: redis.Redis, prefix: str, job_id: str, flops: float, ttl_s: int) -> None:
    key = job_flops_key(prefix)
    with r.pipeline(transaction=False) as pipe:
        pipe.hset(key, job_id, flops)
        pipe.expire(key, ttl_s)
        pipe.execute()


def drop_job_flops(r: redis.Redis, prefix: str, job_id: str) -> None:
    r.hdel(job_flops_key(prefix), job_id)


def job_flops(r: redis.Redis, prefix: str, job_ids: Sequence[str]) -> list[float]:
    """FLOPs still to spend per job id (0 for unknown ids)."""
    if not job_ids:
        return []
    values = r.hmget(job_flops_key(prefix), list(job_ids))
    return [float(v) if v is not None else 0.0 for v in values]


@dataclass(frozen=True)
class FleetWorker:
    name: str
    preset: str | None
    ready: bool
    busy_job: str | None
    flops_per_s: float | None
    device_memory_bytes: int | None


def fleet(r: redis.Redis, prefix: str) -> list[FleetWorker]:
    """Live workers from their heartbeat keys ({p}:worker:*)."""
    names = list(r.scan_iter(match=f"{prefix}:worker:*", count=1000))
    out: list[FleetWorker] = []
    for raw in r.mget(names) if names else []:
        if raw is None:
            continue
        hb = json.loads(raw)
        out.append(
            FleetWorker(
                name=str(hb.get("name")),
                preset=hb.get("preset"),
                ready=bool(hb.get("model_loaded")),
                busy_job=hb.get("busy_job"),
                flops_per_s=hb.get("flops_per_s"),
                device_memory_bytes=hb.get("device_memory_bytes"),
            )
        )
    return out


def fleet_rate(workers: Iterable[FleetWorker], preset: str, shared: float | None) -> float | None:
    """The fleet's FLOP/s for a preset: each ready worker's own rate (or the preset's shared one); with no
    worker up (scale to zero), the shared rate: one worker will start for the queue."""
    rates = [w.flops_per_s or shared for w in workers if w.ready and w.preset == preset]
    known = [x for x in rates if x]
    return sum(known) if known else shared
