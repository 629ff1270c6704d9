"""worker/recovery.py, shutdown.py, spool.py, faults.py and storage retries with real Redis, rq and SeaweedFS.

An abandoned job is made the way a SIGKILLed worker leaves one: a real M4VWorker dequeues it and registers
its execution with a 1 s lease, then nobody renews the lease.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from rq import Queue

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobError, JobStore
from m4v_core.keys import Keys
from m4v_core.throughput import job_flops, set_job_flops, spec_flops
from m4v_core.webhooks import WebhookSender
from model.pipeline_types import StepProgress
from worker.faults import oom_error
from worker.recovery import Reaper
from worker.rqworker import M4VWorker
from worker.shutdown import DRAIN_GRACE_S, DrainRequestedError, StepGate, requeue_drained
from worker.spool import Spool, SpooledObject
from worker.storage import Storage, StorageError

from .jobs_helpers import make_job, result_for, submit


def abandon(client: redis.Redis, store: JobStore, attempts: int) -> tuple[str, Queue]:
    """Submit a job, let a real rq worker take it with a 1 s lease and mark the record running, then die."""
    queue = Queue(store.keys.queue("normal"), connection=client)
    job = make_job()
    submit(store, queue, job)
    worker = M4VWorker([queue], context=None, lease_s=1, connection=client)  # type: ignore[arg-type]
    worker.register_birth()
    dequeued = Queue.dequeue_any([queue], None, connection=client)
    assert dequeued is not None and dequeued[0].id == job.id
    worker.prepare_execution(dequeued[0])

    def run(rec: Any) -> None:
        rec.status, rec.attempts, rec.worker = "running", attempts, worker.name

    store.update(job.id, run)
    return job.id, queue


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def store(client: redis.Redis, key_prefix: str) -> JobStore:
    return JobStore(client, prefix=key_prefix)


def wait_for_lapse() -> None:
    time.sleep(2.2)  # lease 1 s; rq scores in whole seconds


def test_abandoned_job_under_max_attempts_is_requeued_by_rq_retry(
    client: redis.Redis, store: JobStore
) -> None:
    job_id, queue = abandon(client, store, attempts=1)
    reaper = Reaper(client, store, max_attempts=3)
    assert reaper.reap_once() == []  # lease still valid: nothing abandoned yet
    wait_for_lapse()
    settled = reaper.reap_once()
    assert [(s.job_id, s.outcome) for s in settled] == [(job_id, "requeued")]
    rec = store.get(job_id)
    assert rec.status == "queued" and rec.attempts == 1 and rec.worker is None
    assert queue.job_ids == [job_id]
    assert job_id not in queue.started_job_registry
    assert store.read_events(job_id)[-1][2]["reason"].startswith("worker lost")


def test_abandoned_job_at_max_attempts_fails_with_worker_lost(client: redis.Redis, store: JobStore) -> None:
    job_id, queue = abandon(client, store, attempts=3)
    wait_for_lapse()
    settled = Reaper(client, store, max_attempts=3).reap_once()
    assert [s.outcome for s in settled] == ["failed"]
    rec = store.get(job_id)
    assert rec.status == "failed" and rec.error is not None and rec.error.type == "worker_lost"
    assert "3 of 3 attempts" in rec.error.message
    assert queue.job_ids == []
    assert store.read_events(job_id)[-1][1] == "done"


def test_job_failed_at_max_attempts_drops_its_flop_estimate(client: redis.Redis, store: JobStore) -> None:
    """A failed job is ahead of no one: its {prefix}:job_flops entry (queued ETAs, m4v_queue_flops) goes."""
    failing, _ = abandon(client, store, attempts=3)
    retried, _ = abandon(client, store, attempts=1)
    prefix = store.keys.prefix
    for job_id in (failing, retried):
        set_job_flops(client, prefix, job_id, 5e12, ttl_s=600)
    wait_for_lapse()
    settled = Reaper(client, store, max_attempts=3).reap_once()
    outcomes = {s.job_id: s.outcome for s in settled}
    assert outcomes == {failing: "failed", retried: "requeued"}
    assert not client.hexists(Keys(prefix).job_flops(), failing)
    # requeued: queued work again, all of it (it restarts from its first step), not what was left of it
    assert job_flops(client, prefix, [retried]) == [pytest.approx(spec_flops(store.get(retried).spec))]


def test_finished_record_of_abandoned_job_is_left_alone(client: redis.Redis, store: JobStore) -> None:
    job_id, queue = abandon(client, store, attempts=1)
    store.transition(job_id, ["running"], "succeeded")
    wait_for_lapse()
    assert [s.outcome for s in Reaper(client, store, max_attempts=3).reap_once()] == ["ignored"]
    assert store.get(job_id).status == "succeeded" and queue.job_ids == []


def test_only_one_reaper_runs_at_a_time(client: redis.Redis, store: JobStore) -> None:
    job_id, _queue = abandon(client, store, attempts=1)
    wait_for_lapse()
    reaper = Reaper(client, store, max_attempts=3)
    held = client.lock(reaper.lock_key, timeout=10)
    assert held.acquire(blocking=False)
    try:
        assert reaper.reap_once() == []
        assert store.get(job_id).status == "running"
    finally:
        held.release()
    assert [s.outcome for s in reaper.reap_once()] == ["requeued"]


def test_renewed_lease_keeps_a_live_job_from_being_reaped(client: redis.Redis, store: JobStore) -> None:
    queue = Queue(store.keys.queue("normal"), connection=client)
    job = make_job()
    submit(store, queue, job)
    worker = M4VWorker([queue], context=None, lease_s=2, connection=client)  # type: ignore[arg-type]
    worker.register_birth()
    rq_job, _ = Queue.dequeue_any([queue], None, connection=client)  # type: ignore[misc]
    worker.prepare_execution(rq_job)
    started = time.time()
    worker._lease_job = rq_job
    time.sleep(1.2)  # the clock must move for a renewal to move the lease (rq scores whole seconds)
    worker.renew_lease()
    renewed = time.time()
    reaper = Reaper(client, store, max_attempts=3)
    # Judged (injected reap time) after the first lease ended but within the renewed one: nothing lapsed...
    assert started + 2 < renewed + 1
    assert reaper.reap_once(now=renewed + 1) == []
    assert job.id in queue.started_job_registry
    # ...judged after the renewed lease, the same job is abandoned (so the check above could have failed).
    assert [s.job_id for s in reaper.reap_once(now=renewed + 4)] == [job.id]


def step(done: int, total: int) -> StepProgress:
    return StepProgress(0, 1, 0, 1, done, total, done, total, 0.1)


def test_step_gate_stops_on_drain_unless_nearly_done() -> None:
    import threading

    seen: list[int] = []
    drain = threading.Event()
    gate = StepGate(lambda p: seen.append(p.steps_done), drain, finish_fraction=0.9)
    gate(step(1, 10))
    drain.set()
    with pytest.raises(DrainRequestedError, match="2/10"):
        gate(step(2, 10))
    gate(step(9, 10))  # 90 % done: finish rather than requeue
    assert seen == [1, 2, 9]


def test_drained_job_goes_back_to_queued_and_its_attempt_counts(store: JobStore) -> None:
    job = make_job()
    job.status, job.attempts, job.worker = "running", 1, "w1"
    store.create(job)
    assert requeue_drained(store, job, "worker stopping")
    rec = store.get(job.id)
    assert (rec.status, rec.attempts, rec.worker) == ("queued", 1, None)
    assert not requeue_drained(store, job, "again")  # no longer running


def test_oom_maps_to_out_of_memory_with_a_hint() -> None:
    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")
    err = oom_error(exc)
    assert err.type == "out_of_memory"
    assert err.message.startswith("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "more detail" not in err.message and "fewer frames" in err.message


def test_upload_to_a_dead_endpoint_fails_after_bounded_backoff() -> None:
    storage = Storage(
        "b",
        endpoint_url="http://127.0.0.1:9",
        access_key="a",
        secret_key="s",
        upload_attempts=3,
        retry_base_s=0.05,
        retry_max_s=0.1,
    )
    began = time.monotonic()
    with pytest.raises(StorageError, match="after 3 tries"):
        storage.upload("videos/x.mp4", b"x", "video/mp4")
    assert 0.15 <= time.monotonic() - began < 30


def test_a_spooled_video_uploaded_later_is_a_new_fact_not_a_second_terminal_status(
    tmp_path: Path, store: JobStore, s3_server: SeaweedS3, s3_bucket: str
) -> None:
    """Issue #15, reproduction 5: the late re-upload used to move the record failed -> succeeded and queue a
    `completed` webhook after the `failed` one. Now the status stays `failed`, the record gains the video
    (result) and a `result` event, and no second terminal webhook is queued."""
    job = make_job(webhook_url="http://127.0.0.1:9/hook", events=["completed", "failed"])
    job.status, job.error = "failed", JobError(type="upload_failed", message="S3 down")
    store.create(job)
    webhooks = WebhookSender(store.r, store, secret=None)
    spool = Spool(tmp_path / "spool")
    data = b"\x00mp4" * 100
    spool.keep(job.id, [SpooledObject(f"videos/{job.id}.mp4", data, "video/mp4")], result_for("k", data))
    assert spool.pending() == [job.id]

    dead = Storage("b", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="s", upload_attempts=1)
    assert spool.retry_all(dead, store, webhooks)[job.id].startswith("error:")
    assert spool.pending() == [job.id] and store.get(job.id).status == "failed"

    live = Storage(
        s3_bucket,
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert spool.retry_all(live, store, webhooks) == {job.id: "failed"}
    assert live.download(f"videos/{job.id}.mp4") == data
    rec = store.get(job.id)
    assert rec.status == "failed" and rec.error is not None and rec.error.type == "upload_failed"
    assert rec.result is not None and rec.result.video_key == "k"
    assert [typ for _, typ, _ in store.read_events(job.id)] == ["result"]
    assert webhooks.pending() == 0
    assert spool.pending() == []


def test_a_spooled_video_waits_while_another_run_owns_the_job_and_never_replaces_a_result(
    tmp_path: Path, store: JobStore, s3_server: SeaweedS3, s3_bucket: str
) -> None:
    job = make_job()
    job.status, job.attempt_id = "running", "b"
    store.create(job)
    spool = Spool(tmp_path / "spool")
    data = b"\x00mp4" * 10
    objects = [SpooledObject(f"videos/{job.id}.a.mp4", data, "video/mp4")]
    spool.keep(job.id, objects, result_for("a", data), attempt_id="a")
    live = Storage(
        s3_bucket,
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert spool.retry_all(live, store) == {f"{job.id}.a": "running"}  # kept for later
    store.transition(job.id, ["running"], "succeeded", result=result_for("b", data))
    assert spool.retry_all(live, store) == {f"{job.id}.a": "succeeded"}
    rec = store.get(job.id)
    assert rec.result is not None and rec.result.video_key == "b"  # the winner's video stays
    assert store.read_events(job.id) == [] and spool.pending() == []


def test_oom_mapping_frees_what_the_failed_job_still_held() -> None:
    """The traceback keeps the failed job's frames (and tensors) alive inside the except block: the mapping
    must clear them, or a real CUDA OOM would leave the activations allocated while the worker moves on."""
    import weakref

    held: list[weakref.ref[torch.Tensor]] = []

    def job_step() -> None:
        activations = torch.ones(1024, 1024)
        held.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    try:
        job_step()
    except torch.cuda.OutOfMemoryError as exc:
        err = oom_error(exc)
        assert held[0]() is None, "the failed step's tensor is still alive after the OOM mapping"
    assert err.type == "out_of_memory"


def test_a_drained_job_whose_worker_died_before_requeueing_it_is_enqueued_by_the_reaper(
    client: redis.Redis, store: JobStore
) -> None:
    """SIGTERM drain, then SIGKILL after rq finished its copy but before the fresh enqueue: the record is
    `queued` but no queue holds the job. The draining set lets the reaper put it back, once."""
    lost, kept = make_job(), make_job()
    queue = Queue(store.keys.queue("normal"), connection=client)
    for job in (lost, kept):
        submit(store, queue, job)
        store.transition(job.id, ["queued"], "running")
        requeue_drained(store, store.get(job.id), "worker stopping")
    queue.remove(lost.id)  # rq finished its copy; the worker died before enqueue_again
    reaper = Reaper(client, store, max_attempts=3)
    reaper._requeue_lost_drains(now=time.time())  # within the grace period: left alone
    assert queue.get_job_ids() == [kept.id]
    reaper._requeue_lost_drains(now=time.time() + DRAIN_GRACE_S + 1)
    assert queue.get_job_ids() == [lost.id, kept.id]  # at the front; kept not enqueued twice
    assert client.zcard(store.keys.draining()) == 0
    assert [(s.job_id, s.outcome) for s in reaper.settled] == [(lost.id, "requeued")]
    assert store.get(lost.id).status == "queued"


def test_rq_maintenance_of_a_restarted_worker_settles_a_lapsed_lease_through_the_reaper(
    client: redis.Redis, store: JobStore
) -> None:
    """A worker starting up runs rq's registry maintenance. Plain rq moves the abandoned job to its
    FailedJobRegistry and our record stays `running` for ever (the chaos test's stuck jobs); M4VWorker routes
    it through the Reaper: the record goes back to queued and the job to its queue."""
    control_id, queue = abandon(client, store, attempts=1)
    wait_for_lapse()
    plain = M4VWorker([queue], context=None, connection=client)  # type: ignore[arg-type]
    plain.clean_registries()  # rq's own maintenance, no reaper: the failure mode
    assert store.get(control_id).status == "running"
    assert control_id in queue.failed_job_registry

    job_id, _ = abandon(client, store, attempts=1)
    wait_for_lapse()
    queue.release_maintenance_lock()
    fresh = M4VWorker([queue], context=None, connection=client)  # type: ignore[arg-type]
    fresh.reaper = Reaper(client, store, max_attempts=3)
    fresh.clean_registries()
    rec = store.get(job_id)
    assert rec.status == "queued" and rec.attempts == 1
    assert job_id not in queue.failed_job_registry and queue.job_ids == [job_id]
