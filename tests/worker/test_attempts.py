"""Attempt fencing (worker/attempt.py): a run whose lease lapsed while it kept running writes nothing once
the job was requeued or re-run (issue #15, reproduction 1). Real Redis, rq, SeaweedFS and the tiny model.

The lapse is made deterministic: run A pauses inside its sampler callback at a chosen step while the reaper's
settlement (settle_abandoned, what Reaper does for a lapsed lease) and run B happen, then A resumes.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import av
import httpx
import pytest

from m4v_core import JobStore, Settings
from tests.worker.jobs_helpers import FAST, Hooks, PausedPipeline, events, make_job, queue, submit, work
from worker.attempt import Attempt, AttemptLostError
from worker.jobs import JobRun
from worker.main import build_worker
from worker.recovery import settle_abandoned
from worker.shutdown import requeue_drained
from worker.storage import Storage

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
def second_pipeline() -> Any:
    """Run A's own tiny pipeline: run B uses tiny_pipeline while A is paused inside its generate()."""
    from model.pipeline import VideoPipeline

    return VideoPipeline.from_preset("tiny", device="cpu")


def named(settings: Settings, name: str) -> Settings:
    return settings.model_copy(update={"worker_name": name})


def video_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_lapsed_run_after_its_first_chunk_leaves_the_rerun_s_finished_video_alone(
    settings: Settings, store: JobStore, tiny_pipeline: Any, second_pipeline: Any
) -> None:
    """A's lease lapses after its first latent frame is decoded; the reaper requeues the job and B runs it to
    the end. Before fencing, A resumed, saw the record `succeeded`, took it for a cancel and uploaded its
    1-frame partial over B's MP4 (the record kept B's sha256)."""
    job = make_job(webhook_url=HOOK, events=["completed", "failed", "canceled"], **FAST)  # 6 steps
    submit(store, queue(store), job)
    hooks = Hooks()

    def lapse_and_rerun() -> None:
        assert settle_abandoned(store, job.id, max_attempts=3, reason="lease lapsed").outcome == "requeued"
        work(named(settings, "B"), tiny_pipeline, hooks)

    a = build_worker(
        named(settings, "A"),
        pipeline=PausedPipeline(second_pipeline, at_step=4, action=lapse_and_rerun),
        webhook_transport=httpx.MockTransport(hooks),
    )
    assert JobRun(a.context, job.id).run() == "superseded"
    a.context.webhooks.deliver_due()  # anything A queued would go out now

    final = store.get(job.id)
    assert (final.status, final.worker, final.attempts) == ("succeeded", "B", 2)
    assert final.result is not None and not final.result.partial
    video = Storage.from_settings(settings).download(final.result.video_key)
    assert hashlib.sha256(video).hexdigest() == final.result.sha256
    assert video_frames(video) == job.spec.num_frames == 5
    assert [t for t, _ in events(store, job.id)].count("done") == 1
    assert hooks.types == ["job.completed"]


def test_a_lapsed_run_cannot_finish_a_job_another_run_owns(
    settings: Settings, store: JobStore, tiny_pipeline: Any, second_pipeline: Any
) -> None:
    """A's lease lapses at its last step; the job is requeued and B starts it. Before fencing, A resumed and
    marked the record `succeeded` with its own video while the record was B's (worker=B, attempts=2)."""
    job = make_job(webhook_url=HOOK, events=["completed", "failed", "canceled"], **FAST)
    submit(store, queue(store), job)
    b = build_worker(named(settings, "B"), pipeline=tiny_pipeline)

    def lapse_and_restart() -> None:
        settle_abandoned(store, job.id, max_attempts=3, reason="lease lapsed")
        assert JobRun(b.context, job.id).start() is not None

    a = build_worker(named(settings, "A"), pipeline=PausedPipeline(second_pipeline, 6, lapse_and_restart))
    assert JobRun(a.context, job.id).run() == "superseded"

    rec = store.get(job.id)
    assert (rec.status, rec.worker, rec.attempts, rec.result) == ("running", "B", 2, None)
    assert "done" not in [t for t, _ in events(store, job.id)]
    assert a.context.webhooks.pending() == 0  # no terminal webhook queued (none other subscribed)


def test_a_superseded_run_cannot_requeue_the_job_on_drain(store: JobStore) -> None:
    """SIGTERM drain of a run that no longer owns the record: the record (now another run's) is untouched."""
    job = make_job()
    job.status, job.attempts, job.worker, job.attempt_id = "running", 2, "B", "attempt-b"
    store.create(job)
    stale = job.model_copy(update={"attempt_id": "attempt-a"})
    assert not requeue_drained(store, stale, "worker stopping")
    rec = store.get(job.id)
    assert (rec.status, rec.attempts, rec.attempt_id) == ("running", 2, "attempt-b")
    assert events(store, job.id) == []
    assert store.r.zcard(store.keys.draining()) == 0


def test_a_fenced_write_with_a_stale_attempt_writes_nothing(store: JobStore) -> None:
    job = make_job()
    job.status, job.attempt_id = "running", "current"
    store.create(job)
    stale = Attempt(store, job.id, "old")
    with pytest.raises(AttemptLostError, match="superseded"):
        stale.write(lambda rec: setattr(rec, "eta_s", 1.0), stale.events(("progress", {"x": 1})))
    assert store.get(job.id).eta_s is None and events(store, job.id) == []
    current = Attempt(store, job.id, "current")
    current.write(lambda rec: setattr(rec, "eta_s", 2.0), current.events(("progress", {"x": 2})))
    assert store.get(job.id).eta_s == 2.0 and events(store, job.id) == [("progress", {"x": 2})]
