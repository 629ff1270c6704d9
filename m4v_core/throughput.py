"""FLOP bookkeeping in Redis that the workers write and the API reads (ETAs, admission, m4v_queue_flops).

Keys (prefix p):
  {p}:throughput:{preset}  hash of exponentially decayed sums per preset, surviving worker restarts and
                           scale-to-zero: flops, seconds (rate = flops / seconds, a FLOP-weighted moving
                           average) and n, sf, st, sff, sft (per-step count, FLOPs, seconds and their
                           products) for the affine step-cost fit seconds = a + b * flops, plus tail_s, a
                           moving average of the time after sampling (encode + upload)
  {p}:job_flops            hash job id -> FLOPs the job still has to spend: the whole-request estimate at
                           submission, the remaining FLOPs after every sampler step, deleted when it ends
Each worker's own rate also travels in its heartbeat (flops_per_s), so the fleet's throughput is the sum
over live workers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from m4v_core.heartbeat import live_heartbeats
from m4v_core.keys import Keys
from m4v_core.models import JobSpec
from model.config import ModelConfig, get_preset
from model.flops import estimate_flops

DECAY_PER_STEP = 0.97  # a window of ~30 sampler steps: adapts within a job, smooth over single steps
TAIL_WEIGHT = 0.3  # moving average of the encode + upload time over the last few jobs
_FIELDS = ("flops", "seconds", "n", "sf", "st", "sff", "sft", "tail_s")


@dataclass
class ThroughputMeter:
    """Decayed (FLOPs, seconds) sums of one preset, loaded from and written back to Redis."""

    r: redis.Redis
    key: str
    flops: float = 0.0
    seconds: float = 0.0
    n: float = 0.0
    sf: float = 0.0
    st: float = 0.0
    sff: float = 0.0
    sft: float = 0.0
    tail_s: float = 0.0

    @classmethod
    def load(cls, r: redis.Redis, prefix: str, preset: str) -> ThroughputMeter:
        key = Keys(prefix).throughput(preset)
        raw = r.hmget(key, list(_FIELDS))
        return cls(r, key, *(float(v) if v is not None else 0.0 for v in raw))

    @property
    def rate(self) -> float | None:
        """FLOP/s, or None before anything was measured."""
        return self.flops / self.seconds if self.flops > 0 and self.seconds > 0 else None

    def add(self, flops: float, seconds: float, steps: int = 1) -> None:
        """One observation: `steps` sampler steps that spent `flops` in `seconds`."""
        if flops <= 0 or seconds <= 0 or steps <= 0:
            return
        d = DECAY_PER_STEP
        f, t = flops / steps, seconds / steps  # the fit is per step
        self.flops, self.seconds = d * self.flops + flops, d * self.seconds + seconds
        self.n, self.sf, self.st = d * self.n + steps, d * self.sf + f * steps, d * self.st + t * steps
        self.sff, self.sft = d * self.sff + f * f * steps, d * self.sft + f * t * steps
        self._save()

    def add_tail(self, seconds: float) -> None:
        """Time a job spent after its last sampler step (encode + upload)."""
        if seconds < 0:
            return
        self.tail_s = seconds if self.tail_s == 0 else (1 - TAIL_WEIGHT) * self.tail_s + TAIL_WEIGHT * seconds
        self._save()

    def _save(self) -> None:
        self.r.hset(self.key, mapping={name: getattr(self, name) for name in _FIELDS})

    def step_cost(self) -> tuple[float, float] | None:
        """(a seconds per step, b seconds per FLOP) of the fit seconds = a + b * flops, or None.

        Per-step overhead (kernel launches, Python, Redis writes) makes small pyramid stages cost more
        than their FLOPs say; a pure FLOP rate then over-estimates big steps and under-estimates small ones.
        Falls back to (0, 1 / rate) until the steps seen differ enough in size to separate the two terms.
        """
        if self.n < 3:
            return (0.0, 1.0 / self.rate) if self.rate else None
        mf, mt = self.sf / self.n, self.st / self.n
        var = self.sff / self.n - mf * mf
        cov = self.sft / self.n - mf * mt
        if var <= (0.05 * mf) ** 2 or cov <= 0:
            return (0.0, 1.0 / self.rate) if self.rate else None
        b = cov / var
        a = mt - b * mf
        if a < 0:  # no measurable overhead: the pure rate is the better model
            return (0.0, 1.0 / self.rate) if self.rate else None
        return a, b

    def seconds_left(self, flops_left: float, steps_left: int) -> float | None:
        """Sampling time for the steps left (fit above) plus the measured tail, or None before any data."""
        cost = self.step_cost()
        if cost is None:
            return None
        a, b = cost
        return a * steps_left + b * flops_left + self.tail_s


def preset_rate(r: redis.Redis, prefix: str, preset: str) -> float | None:
    return ThroughputMeter.load(r, prefix, preset).rate


def spec_flops(spec: JobSpec, cfg: ModelConfig | None = None) -> float:
    """A request's whole FLOP estimate (model/flops.py), as POST /generate records it and a requeued job gets
    back; cfg defaults to the spec's preset."""
    steps = (tuple(spec.first_frame_steps), tuple(spec.later_frame_steps))
    return _request_flops(cfg or get_preset(spec.preset), spec.width, spec.height, spec.num_frames, *steps)


@functools.lru_cache(maxsize=256)  # ~10 ms per call at 768p; clients repeat the same few shapes
def _request_flops(
    cfg: ModelConfig, width: int, height: int, frames: int, first: tuple[int, ...], later: tuple[int, ...]
) -> float:
    return estimate_flops(
        cfg, width=width, height=height, num_frames=frames, first_frame_steps=first, later_frame_steps=later
    ).total


def set_job_flops(r: redis.Redis, prefix: str, job_id: str, flops: float, ttl_s: int) -> None:
    with r.pipeline(transaction=False) as pipe:
        queue_job_flops(pipe, prefix, job_id, flops, ttl_s)
        pipe.execute()


def queue_job_flops(pipe: redis.client.Pipeline, prefix: str, job_id: str, flops: float, ttl_s: int) -> None:
    """set_job_flops as commands in the caller's pipeline."""
    key = Keys(prefix).job_flops()
    pipe.hset(key, job_id, flops)
    pipe.expire(key, ttl_s)


def drop_job_flops(r: redis.Redis, prefix: str, job_id: str) -> None:
    r.hdel(Keys(prefix).job_flops(), job_id)


def job_flops(r: redis.Redis, prefix: str, job_ids: Sequence[str]) -> list[float]:
    """FLOPs still to spend per job id (0 for unknown ids)."""
    if not job_ids:
        return []
    values = r.hmget(Keys(prefix).job_flops(), list(job_ids))
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
    return [
        FleetWorker(
            name=hb.name,
            preset=hb.preset,
            ready=hb.model_loaded,
            busy_job=hb.busy_job,
            flops_per_s=hb.flops_per_s,
            device_memory_bytes=hb.device_memory_bytes,
        )
        for hb in live_heartbeats(r, Keys(prefix))
    ]


def fleet_rate(workers: Iterable[FleetWorker], preset: str, shared: float | None) -> float | None:
    """The fleet's FLOP/s for a preset: each ready worker's own rate (or the preset's shared one); with no
    worker up (scale to zero), the shared rate: one worker will start for the queue."""
    rates = [w.flops_per_s or shared for w in workers if w.ready and w.preset == preset]
    known = [x for x in rates if x]
    return sum(known) if known else shared
