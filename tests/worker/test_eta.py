"""The running-job ETA against the real time left: real Redis, rq SimpleWorker(burst=True), tiny model."""

# ruff: noqa: F811 - the job-flow fixtures are shared with test_jobs.py by import
from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.worker.jobs_helpers import make_job, submit
from tests.worker.test_jobs import ONE_STEP_PER_STAGE, queue, settings, store, tiny_pipeline, work  # noqa: F401
from worker.contract import JobStore, Settings
from worker.contract.throughput import job_flops, preset_rate

log = logging.getLogger(__name__)


def stream_ms(event_id: str) -> float:
    """Redis stream ids start with the server's time in ms: when the event was written."""
    return float(event_id.split("-")[0])


def test_eta_of_a_running_tiny_job_is_within_30_percent_after_warm_up(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    warm = make_job(num_frames=5, **ONE_STEP_PER_STAGE)  # 6 steps: the throughput meter learns the rate
    job = make_job(num_frames=9, **ONE_STEP_PER_STAGE)  # 9 steps, measured
    submit(store, queue(store), warm)
    submit(store, queue(store), job)
    work(settings, tiny_pipeline)

    final = store.get(job.id)
    assert final.status == "succeeded" and final.finished_at is not None
    assert preset_rate(store.r, store.keys.prefix, "tiny") is not None
    assert job_flops(store.r, store.keys.prefix, [job.id, warm.id]) == [0.0, 0.0]  # dropped at the end
    finished_ms = final.finished_at.timestamp() * 1000
    progress = [(eid, d) for eid, t, d in store.read_events(job.id, count=1000) if t == "progress"]
    assert all(d["eta_s"] is not None for _, d in progress)
    errors = []
    for eid, data in progress[2:-1]:  # from the first unit's last stage on (the last one: ~0 s left)
        actual = (finished_ms - stream_ms(eid)) / 1000
        errors.append((data["eta_s"] - actual) / actual)
    log.warning("ETA relative errors (eta - actual) / actual: %s", [round(e, 3) for e in errors])
    median = sorted(abs(e) for e in errors)[len(errors) // 2]
    assert median <= 0.30, errors


def test_step_cost_fit_separates_per_step_overhead_from_flop_rate(store: JobStore) -> None:
    """Small pyramid stages cost more than their FLOPs: the fit recovers seconds = a + b * flops."""
    from worker.contract.throughput import ThroughputMeter

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
