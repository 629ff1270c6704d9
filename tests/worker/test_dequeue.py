"""A popped job is never in no list (issue #15, reproduction 2): worker/dequeue.py's atomic pop over our
three queues, and the reaper requeueing a job whose worker died between the pop and starting it.
Real Redis, real rq (the worker's own dequeue), the tiny model for the normal path.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from rq import Queue

from m4v_core import JobStore, Settings
from tests.worker.jobs_helpers import SINGLE_FRAME, make_job, queue, submit, work
from worker.main import build_worker
from worker.recovery import INTERMEDIATE_STUCK_S, Reaper
from worker.rqworker import M4VWorker


def listening_worker(store: JobStore) -> M4VWorker:
    """A worker on our three queues (high, normal, low), as worker/main.py builds it."""
    queues = [Queue(name, connection=store.r) for name in store.keys.queues()]
    worker = M4VWorker(queues, context=None, lease_s=30, connection=store.r)  # type: ignore[arg-type]
    worker.register_birth()
    return worker


def test_a_job_popped_by_a_worker_that_died_before_starting_it_goes_back_to_its_queue(
    store: JobStore,
) -> None:
    """Before the fix rq popped from three queues with BLPOP: the popped job was in no list and no registry,
    and its record said `queued` for ever; nothing could find it."""
    normal = queue(store)
    job = make_job()
    submit(store, normal, job)
    popped = listening_worker(store).dequeue_job_and_maintain_ttl(timeout=1)
    assert popped is not None and popped[0].id == job.id  # ...and the worker dies here
    assert normal.job_ids == []

    reaper = Reaper(store.r, store, max_attempts=3)
    seen_at = time.time()
    assert reaper.reap_once(now=seen_at) == []  # first sight: a live worker registers within milliseconds
    assert reaper.reap_once(now=seen_at + INTERMEDIATE_STUCK_S / 2) == []
    settled = reaper.reap_once(now=seen_at + INTERMEDIATE_STUCK_S + 5)
    assert [(s.job_id, s.outcome) for s in settled] == [(job.id, "requeued")]
    assert normal.job_ids == [job.id] and store.get(job.id).status == "queued"
    assert normal.intermediate_queue.get_job_ids() == []


def test_the_worker_reaper_waits_two_leases_for_a_popped_job_to_start(
    store: JobStore, settings: Settings, tiny_pipeline: Any
) -> None:
    """60 s with the default 30 s lease, as rq; 4 s with the 2 s lease of the e2e tests, so the chaos test's
    job stranded by its `after_pop` kill is not its slowest."""
    for lease_s, stuck_s in ((2, 4), (30, INTERMEDIATE_STUCK_S)):
        leased = settings.model_copy(update={"job_lease_s": lease_s})
        reaper = build_worker(leased, pipeline=tiny_pipeline).worker.reaper
        assert reaper is not None and reaper.intermediate_stuck_s == stuck_s


def test_the_pop_keeps_priority_order(store: JobStore) -> None:
    low, high = make_job(), make_job()
    submit(store, queue(store, "low"), low)
    submit(store, queue(store, "high"), high)
    worker = listening_worker(store)
    got = [worker.dequeue_job_and_maintain_ttl(timeout=1) for _ in range(2)]
    assert [(r[0].id, r[1].name) for r in got if r is not None] == [
        (high.id, store.keys.queue("high")),
        (low.id, store.keys.queue("low")),
    ]
    keys = [Queue(name, connection=store.r).key for name in store.keys.queues()]
    assert worker.queue_class.lpop(keys, None, connection=store.r) is None  # empty, non-blocking


def test_a_started_job_leaves_the_intermediate_list(
    settings: Settings, store: JobStore, tiny_pipeline: Any
) -> None:
    job = make_job(**SINGLE_FRAME)
    submit(store, queue(store), job)
    work(settings, tiny_pipeline)
    assert store.get(job.id).status == "succeeded"
    client: redis.Redis = store.r
    for name in store.keys.queues():
        assert client.llen(Queue(name, connection=client).intermediate_queue_key) == 0
