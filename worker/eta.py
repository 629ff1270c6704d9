"""ETA of a running job from the FLOPs and steps it still has (model/flops.py step schedule) and the
measured step cost of this preset on workers with this worker's GPU count (m4v_core/throughput.py: seconds =
a + b * FLOPs per step, fitted on a moving window, plus the measured encode + upload tail; a CFG-parallel
pair learns its own, it does not blend with one-GPU workers).

Every sampler step feeds the meter with (FLOPs of the steps since the last call, wall time since then), so
text encoding, the streamed decodes, preview uploads and Redis writes are all part of the measured rate,
which is what an ETA needs. The first job of a fresh fleet has no rate yet (eta_s null) until its first
step ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from m4v_core.throughput import ThroughputMeter, drop_job_flops, set_job_flops, spec_flops
from model.flops import StepCost, remaining_flops, step_schedule

if TYPE_CHECKING:
    import redis

    from m4v_core import JobRecord, JobSpec
    from model.config import ModelConfig
    from model.pipeline_types import StepProgress
    from worker.context import JobContext
    from worker.heartbeat import WorkerState

log = logging.getLogger(__name__)


def job_schedule(cfg: ModelConfig, spec: JobSpec, cached: bool) -> list[StepCost]:
    return step_schedule(
        cfg,
        width=spec.width,
        height=spec.height,
        num_frames=spec.num_frames,
        first_frame_steps=tuple(spec.first_frame_steps),
        later_frame_steps=tuple(spec.later_frame_steps),
        cached=cached,
    )


def restore_job_flops(r: redis.Redis, prefix: str, job: JobRecord, ttl_s: int) -> float:
    """A job back in the queue will run from its first step: its {prefix}:job_flops entry (ETAs,
    m4v_queue_flops) becomes the whole request's estimate again."""
    flops = spec_flops(job.spec)
    set_job_flops(r, prefix, job.id, flops, ttl_s)
    return flops


@dataclass
class JobEta:
    """Called after every sampler step (before the progress is written); returns eta_s or None."""

    r: redis.Redis
    prefix: str
    job_id: str
    schedule: list[StepCost]
    meter: ThroughputMeter
    state: WorkerState | None = None
    ttl_s: int = 7 * 24 * 3600
    clock: Callable[[], float] = time.perf_counter  # injected by tests (deterministic step times)
    steps_done: int = 0
    last: float | None = None  # clock at the last report (None: the job has not started yet)

    def __post_init__(self) -> None:
        if self.last is None:
            self.last = self.clock()

    @classmethod
    def start(
        cls,
        r: redis.Redis,
        prefix: str,
        job_id: str,
        schedule: list[StepCost],
        preset: str,
        state: WorkerState | None = None,
        ttl_s: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.perf_counter,
        gpu_count: int = 0,
    ) -> JobEta:
        """gpu_count: the GPUs one job of this worker runs on (its heartbeat's), which picks the meter."""
        meter = ThroughputMeter.load(r, prefix, preset, gpu_count)
        return cls(r, prefix, job_id, schedule, meter, state, ttl_s, clock)

    @classmethod
    def for_job(cls, ctx: JobContext, job: JobRecord) -> JobEta:
        pipe = ctx.pipeline
        schedule = job_schedule(pipe.cfg, job.spec, cached=bool(getattr(pipe, "cached", True)))
        s = ctx.settings
        return cls.start(
            ctx.store.r,
            s.key_prefix,
            job.id,
            schedule,
            job.spec.preset,
            ctx.state,
            s.job_ttl_s,
            gpu_count=ctx.state.gpu_count,
        )

    def __call__(self, p: StepProgress) -> float | None:
        now = self.clock()
        assert self.last is not None
        done = min(p.steps_done, len(self.schedule))
        spent = sum(s.total for s in self.schedule[self.steps_done : done])
        self.meter.add(spent, now - self.last, steps=done - self.steps_done)
        self.steps_done, self.last = done, now
        left = remaining_flops(self.schedule, done)
        set_job_flops(self.r, self.prefix, self.job_id, left, self.ttl_s)
        if self.state is not None:
            self.state.flops_per_s = self.meter.rate
        # The measured tail already holds the last unit's decode (it runs after the last step's report).
        last_decode = self.schedule[-1].decode if done < len(self.schedule) else 0.0
        eta = self.meter.seconds_left(left - last_decode, len(self.schedule) - done)
        return round(eta, 3) if eta is not None else None

    def record_tail(self) -> None:
        """The job's video is stored: learn the time from the last sampler step to here (last decode,
        encode, upload), which every ETA adds."""
        assert self.last is not None
        self.meter.add_tail(self.clock() - self.last)

    def finish(self) -> None:
        drop_job_flops(self.r, self.prefix, self.job_id)
