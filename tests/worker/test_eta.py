"""The running-job ETA against the real time left: real Redis, rq SimpleWorker(burst=True), tiny model."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from m4v_core import JobStore, Settings
from m4v_core.throughput import job_flops, preset_rate
from model.config import get_preset
from model.pipeline_types import StepProgress
from tests.worker.jobs_helpers import ONE_STEP_PER_STAGE, make_job, queue, submit, work
from worker.eta import JobEta, job_schedule

log = logging.getLogger(__name__)


@pytest.mark.slow
def test_a_running_tiny_job_reports_an_eta_on_every_step_after_warm_up(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    """Through the real worker: the rate is learned, every progress event carries an ETA, the job's FLOP
    entry is dropped at the end. (How close the ETA is: the injected-clock test below, not wall time.)"""
    warm = make_job(num_frames=5, **ONE_STEP_PER_STAGE)  # 6 steps: the throughput meter learns the rate
    job = make_job(num_frames=9, **ONE_STEP_PER_STAGE)  # 9 steps, measured
    submit(store, queue(store), warm)
    submit(store, queue(store), job)
    work(settings, tiny_pipeline)

    final = store.get(job.id)
    assert final.status == "succeeded" and final.finished_at is not None
    assert preset_rate(store.r, store.keys.prefix, "tiny") is not None
    assert job_flops(store.r, store.keys.prefix, [job.id, warm.id]) == [0.0, 0.0]  # dropped at the end
    progress = [d for _, t, d in store.read_events(job.id, count=1000) if t == "progress"]
    assert len(progress) == 9
    assert all(d["eta_s"] is not None and d["eta_s"] >= 0 for d in progress)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    store: JobStore,
    clock: FakeClock,
    num_frames: int,
    seed: int,
    gpu_count: int = 0,
    speedup: float = 1.0,
    tail_s: float = 0.5,
) -> list[tuple[float, float]]:
    """One tiny job through JobEta on an injected clock: each step takes 40 ms + FLOPs at 2 TFLOP/s
    (+-15% jitter, seeded), divided by `speedup` (a CFG pair on `gpu_count` GPUs), then a tail of tail_s
    (encode + upload). Returns (eta_s, actual seconds left) after every step."""
    rng = random.Random(seed)
    spec = make_job(num_frames=num_frames, **ONE_STEP_PER_STAGE).spec
    schedule = job_schedule(get_preset("tiny"), spec, cached=True)
    eta = JobEta.start(
        store.r, store.keys.prefix, f"sim-{seed}", schedule, "tiny", clock=clock, gpu_count=gpu_count
    )
    reports: list[tuple[float | None, float]] = []
    for i, cost in enumerate(schedule):
        clock.now += (0.04 + cost.total / 2e12) * rng.uniform(0.85, 1.15) / speedup
        reports.append((eta(progress(i + 1, len(schedule))), clock.now))
    clock.now += tail_s
    eta.record_tail()
    eta.finish()
    end = clock.now
    return [(e, end - t) for e, t in reports if e is not None]


def progress(done: int, total: int) -> StepProgress:
    return StepProgress(0, 1, 0, 3, 1, 1, steps_done=done, steps_all=total, step_seconds=0.0)


def test_eta_is_within_30_percent_of_the_time_left_after_warm_up_on_an_injected_clock(
    store: JobStore,
) -> None:
    clock = FakeClock()
    simulate(store, clock, num_frames=5, seed=1)  # warm-up: the meter learns step cost and tail
    reports = simulate(store, clock, num_frames=9, seed=2)
    assert len(reports) == 9  # an ETA on every step once the rate is known
    errors = [(e - actual) / actual for e, actual in reports[2:-1]]  # from the first unit's last stage on
    log.warning("ETA relative errors (eta - actual) / actual: %s", [round(e, 3) for e in errors])
    median = sorted(abs(e) for e in errors)[len(errors) // 2]
    assert median <= 0.30, errors


def test_eta_without_the_tail_would_miss_by_more_than_30_percent(store: JobStore) -> None:
    """The check above can fail: a meter that never learned the tail is far off near the end."""
    clock = FakeClock()
    reports = simulate(store, clock, num_frames=5, seed=1)  # no warm-up: first job, tail still unknown
    errors = [(e - actual) / actual for e, actual in reports[-3:]]
    assert all(e < -0.3 for e in errors), errors


def mixed_fleet_errors(store: JobStore, pair_gpu_count: int) -> list[float]:
    """A one-GPU worker and a CFG pair (sampling twice as fast) of the tiny preset take turns, with a short
    tail (sampling dominates, as at 768p); the pair's meter is kept under pair_gpu_count. Returns the
    relative ETA errors (eta - actual) / actual of the pair's last job, after every step."""
    clock, tail = FakeClock(), 0.05
    simulate(store, clock, num_frames=5, seed=1, gpu_count=1, tail_s=tail)
    simulate(store, clock, num_frames=5, seed=2, gpu_count=pair_gpu_count, speedup=2.0, tail_s=tail)
    simulate(store, clock, num_frames=9, seed=3, gpu_count=1, tail_s=tail)
    reports = simulate(store, clock, 9, seed=4, gpu_count=pair_gpu_count, speedup=2.0, tail_s=tail)
    errors = [(e - actual) / actual for e, actual in reports]
    log.warning("pair ETA errors (meter of gpu_count %d): %s", pair_gpu_count, [round(e, 3) for e in errors])
    return errors


def test_a_cfg_pair_keeps_its_own_rate_beside_one_gpu_workers_of_the_preset(store: JobStore) -> None:
    errors = mixed_fleet_errors(store, pair_gpu_count=2)
    assert len(errors) == 9 and abs(errors[0]) <= 0.15  # right from the job's first step
    assert sorted(abs(e) for e in errors[2:-1])[len(errors[2:-1]) // 2] <= 0.30, errors
    one = preset_rate(store.r, store.keys.prefix, "tiny", gpu_count=1)
    pair = preset_rate(store.r, store.keys.prefix, "tiny", gpu_count=2)
    assert one is not None and pair is not None and 1.6 <= pair / one <= 2.4


def test_a_pair_sharing_the_one_gpu_meter_starts_with_an_eta_over_30_percent_long(store: JobStore) -> None:
    """The check above can fail: metered with the one-GPU workers (as before GPU counts were kept apart),
    the pair's job starts with the one-GPU workers' step cost."""
    errors = mixed_fleet_errors(store, pair_gpu_count=1)
    assert errors[0] > 0.30, errors


def test_step_cost_fit_separates_per_step_overhead_from_flop_rate(store: JobStore) -> None:
    """Small pyramid stages cost more than their FLOPs: the fit recovers seconds = a + b * flops."""
    from m4v_core.throughput import ThroughputMeter

    meter = ThroughputMeter.load(store.r, store.keys.prefix, "tiny")
    assert meter.seconds_left(1e12, 10) is None  # nothing measured yet
    a, b = 0.05, 1e-12  # 50 ms per step + 1 TFLOP/s
    for flops in [1e9, 4e10, 1e11, 5e11] * 5:
        meter.add(flops, a + b * flops)
    fit = ThroughputMeter.load(store.r, store.keys.prefix, "tiny").step_cost()
    assert fit is not None
    assert abs(fit[0] - a) < 1e-6 and abs(fit[1] - b) / b < 1e-6
    meter.add_tail(2.0)
    assert meter.seconds_left(3e11, 4) == pytest.approx(4 * a + 3e11 * b + 2.0)
