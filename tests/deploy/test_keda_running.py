"""The chart's ScaledObject counts running jobs, not only queued ones (issue 15, item 4): KEDA never wants
fewer workers than there are busy ones. Real Redis: jobs enter {prefix}:active the way a worker's start
transaction puts them there, and real rq queues hold the queued ones. What KEDA would do is computed from the
rendered ScaledObject the way KEDA computes it (below)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import redis
from rq import Queue

from m4v_core.keys import Keys
from tests.deploy.chart_render import VARIANTS, render
from worker.leases import ActiveLeases

# KEDA's redis scaler (pkg/scalers/redis_scaler.go) measures `listName` by its type: a list's LLEN, a zset's
# ZCARD, a set's SCARD, a hash's HLEN (a missing key: 0).
_MEASURE_LUA = """
local kind = redis.call('TYPE', KEYS[1]).ok
local count = {list = 'LLEN', zset = 'ZCARD', set = 'SCARD', hash = 'HLEN'}
if count[kind] then return redis.call(count[kind], KEYS[1]) end
return 0
"""


def keda_replicas(spec: dict[str, Any], r: redis.Redis, metrics: dict[str, float] | None = None) -> int:
    """Workers KEDA asks for. Each redis trigger's value is its list's measure (`metrics` gives the others,
    e.g. a Prometheus query's). With scalingModifiers, the formula over the triggers' names is the one
    metric (AverageValue: ceil(value / target); at or below activationTarget, minReplicaCount); without,
    the HPA takes the largest of ceil(value / listLength) over the triggers, 0 below activation."""
    values = dict(metrics or {})
    for trigger in spec["triggers"]:
        if trigger["type"] == "redis":
            values[trigger["name"]] = float(r.eval(_MEASURE_LUA, 1, trigger["metadata"]["listName"]))
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers:
        value = eval(modifiers["formula"], {"__builtins__": {}, "max": max, "min": min}, values)  # noqa: S307
        active = value > float(modifiers.get("activationTarget", "0"))
        wanted = math.ceil(value / float(modifiers["target"]))
    else:
        redis_triggers = [t for t in spec["triggers"] if t["type"] == "redis"]
        active = any(
            values[t["name"]] > float(t["metadata"].get("activationListLength", "0")) for t in redis_triggers
        )
        wanted = max(
            math.ceil(values[t["name"]] / float(t["metadata"]["listLength"])) for t in redis_triggers
        )
    if not active:
        return int(spec["minReplicaCount"])
    return max(int(spec["minReplicaCount"]), min(int(spec["maxReplicaCount"]), wanted))


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def spec_for(key_prefix: str, **keda: Any) -> dict[str, Any]:
    values = {
        "keda": {"enabled": True, "maxReplicaCount": 20, **keda},
        "settings": {"key_prefix": key_prefix},
    }
    return render(values).one("ScaledObject", "worker")["spec"]  # type: ignore[no-any-return]


def start_jobs(r: redis.Redis, key_prefix: str, n: int) -> None:
    """n running attempts, entered into {prefix}:active as the worker's start transaction does."""
    leases = ActiveLeases(r, Keys(key_prefix), lease_s=30)
    with r.pipeline(transaction=True) as pipe:
        for _ in range(n):
            leases.enter(pipe, uuid.uuid4().hex, uuid.uuid4().hex[:8])
        pipe.execute()


def queue_jobs(r: redis.Redis, key_prefix: str, n: int, priority: str = "normal") -> None:
    queue = Queue(Keys(key_prefix).queue(priority), connection=r)  # type: ignore[arg-type]
    for _ in range(n):
        queue.enqueue("builtins.print", "x")


def test_busy_workers_are_kept_when_the_queues_run_empty(r: redis.Redis, key_prefix: str) -> None:
    """Before: 3 busy workers and empty queues made KEDA want 0 workers (after the cooldown, every busy pod
    was drained and its job started again from step 0)."""
    start_jobs(r, key_prefix, 3)
    assert keda_replicas(spec_for(key_prefix), r) == 3


def test_queued_jobs_add_workers_beyond_the_busy_ones(r: redis.Redis, key_prefix: str) -> None:
    """Before: max over the queues of ceil(queued / listLength) = 3, fewer than the 4 busy workers."""
    start_jobs(r, key_prefix, 4)
    queue_jobs(r, key_prefix, 5)
    queue_jobs(r, key_prefix, 1, "high")
    assert keda_replicas(spec_for(key_prefix, listLength=2), r) == 4 + 3


def test_no_jobs_scales_to_zero_and_one_queued_job_wakes_a_worker(r: redis.Redis, key_prefix: str) -> None:
    spec = spec_for(key_prefix, listLength=2)
    assert keda_replicas(spec, r) == 0
    queue_jobs(r, key_prefix, 1, "low")
    assert keda_replicas(spec, r) == 1


def test_queued_flops_weigh_against_queued_jobs_on_top_of_the_running_ones(
    r: redis.Redis, key_prefix: str
) -> None:
    values = VARIANTS["keda-prometheus"] | {"settings": {"key_prefix": key_prefix}}
    values["keda"] = values["keda"] | {"maxReplicaCount": 20}
    spec = render(values).one("ScaledObject", "worker")["spec"]
    per_worker = float(values["keda"]["prometheus"]["flopsPerWorker"])
    start_jobs(r, key_prefix, 2)
    queue_jobs(r, key_prefix, 2)
    assert keda_replicas(spec, r, {"queue_flops": 6 * per_worker}) == 2 + 6  # 6 workers' worth of FLOPs
    assert keda_replicas(spec, r, {"queue_flops": 0.0}) == 2 + 1  # 2 queued jobs / listLength 2
