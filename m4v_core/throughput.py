"""FLOP bookkeeping in Redis that the workers write and the API reads (ETAs, admission, m4v_queue_flops).

Keys (prefix p):
  {p}:throughput:{preset}  hash of exponentially decayed sums per preset and GPU count, surviving worker
                           restarts and scale-to-zero: flops, seconds (rate = flops / seconds, a FLOP-weighted
                           moving average) and n, sf, st, sff, sft (per-step count, FLOPs, seconds and their
                           products) for the affine step-cost fit seconds = a + b * flops, plus tail_s, a
                           moving average of the time after sampling (encode + upload). Workers whose jobs
                           run on one device (one GPU, or CPU) use these plain field names (as before GPU
                           counts were kept apart), workers whose jobs span n >= 2 GPUs (M4V_PARALLEL=cfg:
                           2) the same names prefixed "gpus{n}.", so their rates never blend
  {p}:job_flops            hash job id -> FLOPs the job still has to spend: the whole-request estimate at
                           submission, the remaining FLOPs after every sampler step, deleted when it ends
Each worker's own rate also travels in its heartbeat (flops_per_s), with its GPU count, so the fleet's
throughput is the sum over live workers.
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


def meter_gpus(gpu_count: int) -> int:
    """The GPU count a worker's measurements are kept under: its heartbeat's gpu_count (the GPUs one job
    runs on), with CPU workers (0) counted as one device."""
    return max(1, gpu_count)


def _rate(flops: float, seconds: float) -> float | None:
    return flops / seconds if flops > 0 and seconds > 0 else None


def _field(name: str, gpus: int) -> str:
    return name if gpus == 1 else f"gpus{gpus}.{name}"


def _parse_field(field: str) -> tuple[int, str] | None:
    """(gpus, sum name) of a hash field; None for a field this reader does not know."""
    head, _, name = field.rpartition(".")
    if not head:
        gpus = 1
    elif head.startswith("gpus") and head[4:].isdigit():
        gpus = int(head[4:])
    else:
        return None
    return (gpus, name) if name in _FIELDS else None


@dataclass
class ThroughputMeter:
    """Decayed (FLOPs, seconds) sums of one preset on workers of one GPU count (meter_gpus), loaded from and
    written back to Redis."""

    r: redis.Redis
    key: str
    gpus: int = 1
    flops: float = 0.0
    seconds: float = 0.0
    n: float = 0.0
    sf: float = 0.0
    st: float = 0.0
    sff: float = 0.0
    sft: float = 0.0
    tail_s: float = 0.0

    @classmethod
    def load(cls, r: redis.Redis, prefix: str, preset: str, gpu_count: int = 1) -> ThroughputMeter:
        """The meter of `preset` on workers with this heartbeat gpu_count."""
        key, gpus = Keys(prefix).throughput(preset), meter_gpus(gpu_count)
        raw = r.hmget(key, [_field(name, gpus) for name in _FIELDS])
        return cls(r, key, gpus, *(float(v) if v is not None else 0.0 for v in raw))

    @property
    def rate(self) -> float | None:
        """FLOP/s, or None before anything was measured."""
        return _rate(self.flops, self.seconds)

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
        self.r.hset(self.key, mapping={_field(name, self.gpus): getattr(self, name) for name in _FIELDS})

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


def preset_rate(r: redis.Redis, prefix: str, preset: str, gpu_count: int = 1) -> float | None:
    return ThroughputMeter.load(r, prefix, preset, gpu_count).rate


def preset_rates(r: redis.Redis, prefix: str, preset: str) -> dict[int, float]:
    """The measured FLOP/s of a preset per GPU count (meter_gpus), from one read of its hash."""
    sums: dict[int, dict[str, float]] = {}
    for raw_field, raw_value in r.hgetall(Keys(prefix).throughput(preset)).items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        parsed = _parse_field(field)
        if parsed is not None:
            sums.setdefault(parsed[0], {})[parsed[1]] = float(raw_value)
    rates = {gpus: _rate(s.get("flops", 0.0), s.get("seconds", 0.0)) for gpus, s in sums.items()}
    return {gpus: rate for gpus, rate in rates.items() if rate is not None}


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
    gpu_count: int = 0  # GPUs one job of this worker runs on (0 on CPU)
    vae_tile_px: int | None = None  # its decode tile size (None: the VAE's own)


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
            gpu_count=hb.gpu_count,
            vae_tile_px=hb.vae_tile_px,
        )
        for hb in live_heartbeats(r, Keys(prefix))
    ]


def fleet_rate(workers: Iterable[FleetWorker], preset: str, measured: dict[int, float]) -> float | None:
    """The fleet's FLOP/s for a preset: each ready worker's own rate, or else the preset's measured rate on
    workers of its GPU count (`measured`, from preset_rates). With no worker up (scale to zero), or none
    with a rate, the slowest measured rate of any GPU count: one worker will start for the queue, and which
    kind is not known here, so the ETA errs long."""
    up = [w for w in workers if w.ready and w.preset == preset]
    known = [x for w in up if (x := w.flops_per_s or measured.get(meter_gpus(w.gpu_count)))]
    if known:
        return sum(known)
    return min(measured.values()) if measured else None
