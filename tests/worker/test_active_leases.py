"""Recovery from our own records (worker/leases.py, the reaper's {prefix}:active pass; issue #15,
reproduction 3): a running job whose rq lease entry is gone is still found, requeued or failed once.
Real Redis, real rq (a worker built as worker/main.py builds it), the tiny model where a job runs.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Queue

from m4v_core import JobStore, Settings
from m4v_core.webhooks import webhook_id_for
from tests.worker.jobs_helpers import SINGLE_FRAME, events, make_job, queue, submit, work
from worker.jobs import JobRun
from worker.leases import ActiveLeases, member
from worker.main import WorkerProcess, build_worker

HOOK = "http://127.0.0.1:9/hook"


def started_then_failed_by_rq(
    process: WorkerProcess, store: JobStore, attempts: int = 0
) -> tuple[str, Queue]:
    """A job dequeued and started by a real worker, whose final write then failed on a Redis error that
    outlasted the client's retries; Redis was back when rq recorded the failure, which drops rq's lease
    entry (StartedJobRegistry) and puts the job in rq's FailedJobRegistry. The record still says running."""
    job = make_job(webhook_url=HOOK, events=["failed"], **SINGLE_FRAME)
    job.attempts = attempts
    submit(store, queue(store), job)
    worker = process.worker
    worker.register_birth()
    popped = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert popped is not None
    rq_job, rq_queue = popped
    worker.prepare_execution(rq_job)
    worker.prepare_job_execution(rq_job)
    assert JobRun(process.context, job.id).start() is not None
    worker.handle_job_failure(rq_job, rq_queue, exc_string="redis.exceptions.ConnectionError: lost")
    assert job.id not in rq_queue.started_job_registry and job.id in rq_queue.failed_job_registry
    assert store.get(job.id).status == "running"
    return job.id, rq_queue


def test_a_running_job_rq_no_longer_tracks_is_requeued_and_then_finishes(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    """Before {prefix}:active the reaper found nothing: the record stayed `running` and the event stream never
    ended."""
    process = build_worker(settings, pipeline=tiny_pipeline)
    job_id, rq_queue = started_then_failed_by_rq(process, store)
    reaper = process.worker.reaper
    assert reaper is not None
    assert reaper.reap_once(now=time.time()) == []  # its lease is still running
    settled = reaper.reap_once(now=time.time() + settings.job_lease_s + 5)
    assert [(s.job_id, s.outcome) for s in settled] == [(job_id, "requeued")]
    assert rq_queue.job_ids == [job_id] and job_id not in rq_queue.failed_job_registry
    rec = store.get(job_id)
    assert (rec.status, rec.attempt_id) == ("queued", None)
    assert store.r.zcard(store.keys.active()) == 0 and store.r.zcard(store.keys.draining()) == 0

    work(settings, tiny_pipeline)
    final = store.get(job_id)
    assert (final.status, final.attempts) == ("succeeded", 2)
    assert events(store, job_id)[-1][0] == "done"
    assert store.r.zcard(store.keys.active()) == 0


def test_at_max_attempts_the_lapsed_job_fails_once_with_its_done_event_and_webhook(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    """Two reaper passes over the same lapse (leader-free): one settlement, one `done`, one webhook."""
    process = build_worker(settings, pipeline=tiny_pipeline)
    job_id, rq_queue = started_then_failed_by_rq(process, store, attempts=settings.max_attempts - 1)
    reaper = process.worker.reaper
    assert reaper is not None
    later = time.time() + settings.job_lease_s + 5
    assert [s.outcome for s in reaper.reap_once(now=later)] == ["failed"]
    assert reaper.reap_once(now=later) == []
    rec = store.get(job_id)
    assert rec.status == "failed" and rec.error is not None and rec.error.type == "worker_lost"
    assert [t for t, _ in events(store, job_id)].count("done") == 1
    payloads = store.r.hkeys(store.keys.webhooks_payload())
    assert payloads == [webhook_id_for(job_id, "failed").encode()]
    assert rq_queue.job_ids == []


def test_renewal_moves_a_live_entry_and_never_brings_back_a_removed_one(store: JobStore) -> None:
    leases = ActiveLeases(store.r, store.keys, lease_s=30)
    with store.r.pipeline() as pipe:
        leases.enter(pipe, "j1", "a1")
        pipe.execute()
    first = store.r.zscore(store.keys.active(), member("j1", "a1"))
    assert first is not None
    assert leases.lapsed(now=first - 1) == [] and leases.lapsed(now=first + 1) == [("j1", "a1")]
    leases.current = ("j1", "a1")
    leases.renew_current()
    renewed = store.r.zscore(store.keys.active(), member("j1", "a1"))
    assert renewed is not None and renewed >= first  # the server's clock moved forward (or not at all)
    leases.leave(store.r, "j1", "a1")
    assert leases.renew("j1", "a1") is False
    assert store.r.zcard(store.keys.active()) == 0
