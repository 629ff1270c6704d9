"""The API's fleet/queue snapshot (service/fleet_view.py): reused within its ttl, exact sums, new last."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from m4v_core import JobRecord, JobStore, Settings
from m4v_core.keys import Keys
from m4v_core.throughput import ThroughputMeter, preset_rate, set_job_flops
from service.app import create_app
from service.fleet_view import FleetSnapshot, FleetView
from service.queue import JobQueue
from tests.service.conftest import submit
from tests.service.fleet_helpers import publish_worker, tiny_flops
from tests.worker.jobs_helpers import make_job


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view_of(store: JobStore, ttl_s: float, clock: Clock) -> tuple[FleetView, JobQueue]:
    queue = JobQueue(store.r, store.keys, result_ttl_s=60, failure_ttl_s=60)
    return FleetView(store.r, store.keys.prefix, queue, ("tiny",), ttl_s, clock=clock), queue


def queue_job(store: JobStore, queue: JobQueue, job_id: str, priority: str, flops: float) -> None:
    set_job_flops(store.r, store.keys.prefix, job_id, flops, 60)
    queue.enqueue(job_id, priority, 60)  # type: ignore[arg-type]


def test_snapshot_is_reused_within_its_ttl_and_read_again_after(store: JobStore) -> None:
    clock = Clock()
    view, _ = view_of(store, ttl_s=1.0, clock=clock)
    first = view.get()
    assert first.workers == []
    publish_worker(store, "w1", flops_per_s=2e9)
    clock.now += 0.5
    assert view.get() is first  # within the ttl: no Redis read, the new worker is not seen yet
    clock.now += 0.5
    assert view.get() is first  # stale: served as is while ONE background refresh reads Redis
    fresh = wait_for_new(view, first)
    assert [w.name for w in fresh.workers] == ["w1"] and fresh.rate("tiny") == 2e9
    assert view.get() is fresh


def wait_for_new(view: FleetView, old: FleetSnapshot, timeout_s: float = 10.0) -> FleetSnapshot:
    deadline = time.monotonic() + timeout_s
    while (snap := view.get()) is old:
        assert time.monotonic() < deadline, "the background refresh never landed"
        time.sleep(0.01)
    return snap


def test_jobs_noted_during_a_refresh_are_kept_until_a_snapshot_sees_them(store: JobStore) -> None:
    clock = Clock()
    view, queue = view_of(store, ttl_s=1.0, clock=clock)
    first = view.get()
    view.note_enqueued("mine", "normal", 7.0)  # this process enqueued it; Redis does not have it (yet)
    clock.now += 1.0
    view.get()
    fresh = wait_for_new(view, first)
    assert fresh.flops_ahead(store_job(store, "later", "normal")) == 7.0
    assert fresh.own_flops(store_job(store, "mine", "normal")) == 7.0


def test_flops_ahead_sums_higher_priorities_running_work_and_earlier_jobs(store: JobStore) -> None:
    clock = Clock()
    view, queue = view_of(store, ttl_s=0.0, clock=clock)
    queue_job(store, queue, "n1", "normal", 10.0)
    queue_job(store, queue, "n2", "normal", 20.0)
    queue_job(store, queue, "h1", "high", 100.0)
    queue_job(store, queue, "l1", "low", 1000.0)
    set_job_flops(store.r, store.keys.prefix, "busy", 5.0, 60)
    publish_worker(store, "w1", busy_job="busy")
    snap = view.get()
    job = store_job(store, "n2", "normal")
    assert snap.running_flops == 5.0
    assert snap.flops_ahead(job) == 5.0 + 100.0 + 10.0
    assert snap.own_flops(job) == 20.0
    unseen = store_job(store, "n3", "normal")  # enqueued after the snapshot: last of its queue
    assert snap.flops_ahead(unseen) == 5.0 + 100.0 + 10.0 + 20.0
    assert snap.own_flops(unseen) is None
    assert snap.flops_ahead(store_job(store, "l1", "low")) == 5.0 + 100.0 + 30.0


def store_job(store: JobStore, job_id: str, priority: str) -> JobRecord:
    return make_job().model_copy(update={"id": job_id, "priority": priority})


@pytest.mark.parametrize("ttl_s", [0.0, 60.0])
def test_post_generate_eta_counts_every_queued_job_with_a_cached_or_fresh_view(
    settings: Settings, store: JobStore, ttl_s: float
) -> None:
    ThroughputMeter.load(store.r, store.keys.prefix, "tiny").add(1e9, 1.0)
    publish_worker(store, "w1", flops_per_s=5e9)
    with TestClient(create_app(settings.model_copy(update={"fleet_view_ttl_s": ttl_s}))) as c:
        first = submit(c, num_frames=9)
        second = submit(c, num_frames=17)  # with a 60 s ttl the view predates this job: it counts as last
    assert first["eta_s"] == pytest.approx(tiny_flops(9) / 5e9, rel=1e-3)
    assert second["eta_s"] == pytest.approx((tiny_flops(9) + tiny_flops(17)) / 5e9, rel=1e-3)


def test_rates_are_kept_per_gpu_count_and_with_no_worker_up_the_slowest_counts(store: JobStore) -> None:
    view, _ = view_of(store, ttl_s=0.0, clock=Clock())
    assert view.get().rate("tiny") is None  # nothing measured
    ThroughputMeter.load(store.r, store.keys.prefix, "tiny", gpu_count=2).add(4e9, 1.0)
    assert view.get().preset_rates["tiny"] == {2: pytest.approx(4e9)}
    assert view.get().rate("tiny") == pytest.approx(4e9)  # scaled to zero: only pairs have run
    ThroughputMeter.load(store.r, store.keys.prefix, "tiny", gpu_count=1).add(2e9, 1.0)
    assert view.get().preset_rates["tiny"] == {1: pytest.approx(2e9), 2: pytest.approx(4e9)}
    assert view.get().rate("tiny") == pytest.approx(2e9)  # either kind may start: the ETA errs long
    publish_worker(store, "pair", gpu_count=2)
    assert view.get().rate("tiny") == pytest.approx(4e9)  # a pair is up: its kind's rate


def test_a_rate_stored_before_gpu_counts_is_the_one_gpu_rate(store: JobStore) -> None:
    """The plain field names of {p}:throughput:{preset} stay the one-device meter, so rates learned before
    the split keep serving one-GPU workers; fields this reader does not know are ignored."""
    key = Keys(store.keys.prefix).throughput("tiny")
    store.r.hset(key, mapping={"flops": 3e9, "seconds": 1.0, "gpusx.flops": 1.0, "gpus4.other": 2.0})
    assert preset_rate(store.r, store.keys.prefix, "tiny", gpu_count=1) == pytest.approx(3e9)
    assert preset_rate(store.r, store.keys.prefix, "tiny", gpu_count=0) == pytest.approx(3e9)  # CPU
    assert preset_rate(store.r, store.keys.prefix, "tiny", gpu_count=2) is None
    view, _ = view_of(store, ttl_s=0.0, clock=Clock())
    assert view.get().preset_rates["tiny"] == {1: pytest.approx(3e9)}
