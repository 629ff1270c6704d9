"""The job flow end to end in-process: real Redis, rq SimpleWorker(burst=True), tiny model, SeaweedFS."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import av
import pytest

from m4v_core import JobRecord, JobStore, Settings
from m4v_core.keys import Keys
from m4v_core.throughput import job_flops, set_job_flops, spec_flops
from tests.worker.jobs_helpers import (
    FAST,
    ONE_STEP_PER_STAGE,
    SINGLE_FRAME,
    Hooks,
    PausedPipeline,
    events,
    make_job,
    queue,
    submit,
    work,
)
from worker.jobs import JobRun
from worker.main import build_worker
from worker.metrics import WorkerMetrics
from worker.storage import Storage


def test_job_succeeds_with_progress_events_video_in_s3_and_webhooks(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook", **FAST)
    submit(store, queue(store), job)
    hooks = Hooks()
    metrics = WorkerMetrics()
    work(settings, tiny_pipeline, hooks, metrics=metrics)

    final = store.get(job.id)
    assert final.status == "succeeded", final.error
    assert final.attempts == 1 and final.worker == settings.worker_name
    assert final.started_at is not None and final.finished_at is not None

    evs = events(store, job.id)
    types = [t for t, _ in evs]
    assert types[:2] == ["status", "status"] and types[-1] == "done"
    progress = [d for t, d in evs if t == "progress"]
    assert len(progress) == 6  # 2 latent frames x 3 stages x 1 step
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert progress[-1]["units_done"] == progress[-1]["units_total"] == 2
    assert evs[-1][1]["status"] == "succeeded" and evs[-1][1]["result"]["video_url"].startswith("http")

    result, m = final.result, final.metrics
    assert result is not None and not result.partial
    assert (result.width, result.height, result.frames, result.fps, result.seed) == (128, 128, 5, 8, 7)
    for value in (m.queue_s, m.text_s, m.sampling_s, m.decode_s, m.encode_s, m.upload_s, m.total_s):
        assert value is not None and value >= 0
    assert m.flops is not None and m.flops > 0 and m.tflops_per_s is not None and m.tflops_per_s > 0

    storage = Storage.from_settings(settings)
    data = storage.download(result.video_key)
    assert len(data) == result.bytes
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (128, 128)
    assert storage.download(result.thumbnail_key or "")[:2] == b"\xff\xd8"  # JPEG magic
    assert b'"sha256"' in storage.download(result.video_key.replace(".mp4", ".json"))

    assert hooks.types[0] == "job.started" and hooks.types[-1] == "job.completed"
    assert "job.progress" in hooks.types
    assert hooks.payloads[-1]["data"]["result"]["sha256"] == result.sha256
    assert metrics.sample("m4v_jobs_total", {"status": "succeeded"}) == 1
    assert metrics.sample("m4v_worker_busy") == 0
    assert b"m4v_model_flops_total{" in metrics.render()
    assert (
        metrics.sample(
            "m4v_job_phase_seconds_count", {"phase": "total", "preset": "tiny", "resolution": "128x128"}
        )
        == 1
    )


def test_running_job_is_canceled_within_one_step(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook", num_frames=9, **ONE_STEP_PER_STAGE)  # 9 steps
    submit(store, queue(store), job)
    canceled_after: list[int] = []

    def cancel_on_first_progress() -> None:
        last = "0-0"
        while True:
            for eid, typ, _ in store.read_events(job.id, after=last, block_ms=200):
                last = eid
                if typ == "progress":
                    store.request_cancel(job.id)
                    canceled_after.append(len([e for e in events(store, job.id) if e[0] == "progress"]))
                    return

    thread = threading.Thread(target=cancel_on_first_progress, daemon=True)
    thread.start()
    hooks = Hooks()
    work(settings, tiny_pipeline, hooks)
    thread.join(5)

    final = store.get(job.id)
    assert final.status == "canceled"
    evs = events(store, job.id)
    assert evs[-1][0] == "done" and evs[-1][1]["status"] == "canceled"
    progress_events = sum(1 for t, _ in evs if t == "progress")
    assert progress_events <= canceled_after[0] + 1  # at most the step already running when cancel landed
    assert progress_events < 9
    assert hooks.types[-1] == "job.canceled"


def test_invalid_spec_fails_with_type_and_message(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(width=96, height=96)  # tiny serves only 128x128: the pipeline raises ValueError
    submit(store, queue(store), job)
    set_job_flops(store.r, store.keys.prefix, job.id, 1e9, ttl_s=600)
    work(settings, tiny_pipeline)
    final = store.get(job.id)
    assert final.status == "failed"
    assert final.error is not None and final.error.type == "invalid_request"
    assert "96" in final.error.message
    assert events(store, job.id)[-1][0] == "done"
    assert final.result is None
    assert not store.r.hexists(Keys(store.keys.prefix).job_flops(), job.id)


@pytest.mark.slow
def test_upload_failure_is_reported_as_upload_failed(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(**SINGLE_FRAME)
    submit(store, queue(store), job)
    wrong = settings.model_copy(update={"s3_secret_key": settings.s3_access_key, "s3_create_bucket": False})
    work(wrong, tiny_pipeline)
    final = store.get(job.id)
    assert final.status == "failed" and final.error is not None and final.error.type == "upload_failed"


def test_a_partial_video_s3_refused_is_spooled_and_becomes_the_result_later(
    settings: Settings, store: JobStore, tiny_pipeline: Any, tmp_path: Path
) -> None:
    """Issue #15, reproduction 5: partial videos were never spooled (a cancel during an S3 outage lost the
    frames). The canceled job keeps its status; the partial becomes its result once S3 takes it."""
    job = make_job(**FAST)
    submit(store, queue(store), job)
    refused = settings.model_copy(
        update={
            "s3_secret_key": settings.s3_access_key,
            "s3_create_bucket": False,
            "s3_upload_attempts": 1,
            "spool_dir": str(tmp_path / "spool"),
        }
    )
    cancel_at_step_4 = PausedPipeline(tiny_pipeline, 4, lambda: store.request_cancel(job.id))
    process = build_worker(refused, pipeline=cancel_at_step_4)  # after the first latent frame's chunk
    assert JobRun(process.context, job.id).run() == "canceled"
    assert store.get(job.id).result is None
    spool = process.context.spool
    assert spool is not None and len(spool.pending()) == 1

    storage = Storage.from_settings(settings)
    assert list(spool.retry_all(storage, store).values()) == ["canceled"]
    final = store.get(job.id)
    assert final.status == "canceled" and final.result is not None and final.result.partial
    assert final.result.frames == 1 and storage.download(final.result.video_key)
    assert spool.pending() == []


@pytest.mark.slow
def test_job_past_its_deadline_times_out_without_running(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(timeout_s=0.001, **FAST)
    submit(store, queue(store), job)
    set_job_flops(store.r, store.keys.prefix, job.id, 1e9, ttl_s=600)  # as POST /generate records it
    work(settings, tiny_pipeline)
    final = store.get(job.id)
    assert final.status == "timed_out" and final.error is not None and final.error.type == "timeout"
    assert not any(t == "progress" for t, _ in events(store, job.id))
    assert events(store, job.id)[-1][0] == "done"
    assert not store.r.hexists(Keys(store.keys.prefix).job_flops(), job.id)  # no longer queued work


def test_canceled_before_start_is_skipped(settings: Settings, store: JobStore, tiny_pipeline: Any) -> None:
    job = make_job(**FAST)
    submit(store, queue(store), job)
    store.transition(job.id, ["queued"], "canceled")
    work(settings, tiny_pipeline)
    final: JobRecord = store.get(job.id)
    assert final.status == "canceled" and final.attempts == 0
    assert [t for t, _ in events(store, job.id)] == ["status"]


def test_high_priority_is_taken_before_low(settings: Settings, store: JobStore, tiny_pipeline: Any) -> None:
    low, high = make_job(**SINGLE_FRAME), make_job(**SINGLE_FRAME)
    submit(store, queue(store, "low"), low)
    submit(store, queue(store, "high"), high)
    work(settings, tiny_pipeline)
    a, b = store.get(high.id), store.get(low.id)
    assert a.status == b.status == "succeeded"
    assert a.started_at is not None and b.started_at is not None and a.started_at < b.started_at


def test_job_drained_on_sigterm_is_queued_again_with_its_full_flop_estimate(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    """SIGTERM at a step boundary: the job goes back to the queue and, since it restarts from its first
    step, its {prefix}:job_flops entry (ETAs, m4v_queue_flops) is the whole estimate again."""
    job = make_job(**FAST)
    submit(store, queue(store), job)
    process = build_worker(settings.model_copy(update={"drain_finish_fraction": 1.0}), pipeline=tiny_pipeline)
    process.context.drain.set()  # as the SIGTERM handler does; the first step boundary then requeues
    assert JobRun(process.context, job.id).run() == "requeued"
    assert store.get(job.id).status == "queued"
    assert job_flops(store.r, store.keys.prefix, [job.id]) == [pytest.approx(spec_flops(job.spec))]


def test_drains_count_toward_the_attempt_limit_so_a_job_scaled_away_again_and_again_fails(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    """Issue #15, reproduction 4: each drain used to requeue the job from step 0 without counting an
    attempt, so scale-down could restart a long job for ever. Now the max_attempts-th drain fails it."""
    job = make_job(webhook_url="http://127.0.0.1:9/hook", events=["failed"], **FAST)
    submit(store, queue(store), job)
    process = build_worker(settings.model_copy(update={"drain_finish_fraction": 1.0}), pipeline=tiny_pipeline)
    process.context.drain.set()  # every run meets a SIGTERM at its first step boundary
    outcomes = [JobRun(process.context, job.id).run() for _ in range(settings.max_attempts)]
    assert outcomes == ["requeued"] * (settings.max_attempts - 1) + ["failed"]
    final = store.get(job.id)
    assert final.status == "failed" and final.attempts == settings.max_attempts
    assert final.error is not None and final.error.type == "worker_lost"
    assert [t for t, _ in events(store, job.id)].count("done") == 1
    assert store.r.hkeys(store.keys.webhooks_payload()) == [f"msg_{job.id}_failed".encode()]
