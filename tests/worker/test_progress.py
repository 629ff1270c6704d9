"""worker/progress.py: the per-step callback writes progress, and stops the sampler on cancel or deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from m4v_core import JobStore
from model.pipeline_types import StepProgress
from tests.worker.jobs_helpers import make_job
from worker.attempt import AttemptLostError
from worker.progress import JobCanceledError, JobTimedOutError, ProgressReporter, to_job_progress


def step(unit: int, stage: int, step_no: int, done: int, steps_total: int = 2) -> StepProgress:
    return StepProgress(
        unit=unit,
        units_total=2,
        stage=stage,
        stages_total=3,
        step=step_no,
        steps_total=steps_total,
        steps_done=done,
        steps_all=12,
        step_seconds=0.01,
    )


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), prefix=key_prefix)


def running_job(store: JobStore, deadline: datetime | None = None) -> str:
    job = make_job()
    job.status = "running"
    job.deadline = deadline
    store.create(job)
    return job.id


def test_unit_counts_as_done_after_the_last_step_of_the_last_stage() -> None:
    assert to_job_progress(step(0, 2, 1, 5)).units_done == 0
    last = to_job_progress(step(0, 2, 2, 6))
    assert (last.units_done, last.units_total, last.percent) == (1, 2, 50.0)


def test_each_step_updates_the_record_and_appends_an_event(store: JobStore) -> None:
    job_id = running_job(store)
    reporter = ProgressReporter(store, job_id, None, "tiny")
    reporter(step(0, 0, 1, 1))
    reporter(step(0, 0, 2, 2))
    assert store.get(job_id).progress.step == 2
    got = [(t, d["step"]) for _, t, d in store.read_events(job_id)]
    assert got == [("progress", 1), ("progress", 2)]


def test_cancel_key_stops_at_the_next_step(store: JobStore) -> None:
    job_id = running_job(store)
    reporter = ProgressReporter(store, job_id, None, "tiny")
    reporter(step(0, 0, 1, 1))
    store.request_cancel(job_id)
    with pytest.raises(JobCanceledError):
        reporter(step(0, 0, 2, 2))


def test_record_no_longer_running_stops_the_sampler_and_writes_nothing(store: JobStore) -> None:
    """The record left `running` (the reaper requeued or failed it): this run is superseded."""
    job_id = running_job(store)
    store.transition(job_id, ["running"], "queued")
    with pytest.raises(AttemptLostError):
        ProgressReporter(store, job_id, None, "tiny")(step(0, 0, 1, 1))
    assert store.get(job_id).progress.step == 0 and store.read_events(job_id) == []


def test_passed_deadline_raises_timed_out(store: JobStore) -> None:
    job_id = running_job(store, deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(JobTimedOutError):
        ProgressReporter(store, job_id, datetime.now(UTC) - timedelta(seconds=1), "tiny")(step(0, 0, 1, 1))
