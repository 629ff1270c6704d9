"""Per-key limits on work in flight, so one tenant cannot fill the queue or hold every GPU (issue 16).

Each API key may have at most `key_max_jobs` jobs queued or running at once, and at most `key_max_flops`
FLOPs still to spend over them (the compute cap; by default DEFAULT_CAP_JOBS default-sized jobs of the
served preset). Over either: 429 `key_limit_exceeded` with Retry-After and, in `details`, the limits and
the key's current use, so the caller knows what to wait for. The global queue limit (503) still applies.
Open mode has no tenants and no per-key limits.

Bookkeeping, one Lua script per submission (so concurrent requests of one key cannot both take the last
slot): `{p}:owner:{owner}:inflight` holds the ids of the key's jobs that may still be in flight. A job is in
flight while `{p}:job_flops` holds its remaining FLOPs: the API writes that entry at submit and drops it at a
queued cancel, the worker lowers it every step and drops it when the job ends, the reaper when it fails a
lost job. The script drops the ids whose entry is gone, counts and sums the rest, and, if the new job fits,
adds it to both (the job_flops entry too, so a concurrent check already counts it before the job is stored).
A reservation whose job record never appeared (the API died between reserving and storing) is dropped once
it is RESERVATION_GRACE_S old: the inflight hash keeps each reservation's wall-clock time. Its cost is
O(jobs the key has in flight), which the limit bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.errors import RateLimitedError
from service.state import ServiceState

DEFAULT_CAP_JOBS = 20  # default compute cap: FLOPs of this many default-sized jobs of the served preset
RETRY_AFTER_S = 30
RESERVATION_GRACE_S = 60  # a reservation without a job record is abandoned after this (submit takes ms)

_RESERVE_LUA = """
local ids = redis.call('HKEYS', KEYS[1])
local jobs, flops = 0, 0
local now, grace, job_prefix = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
for _, id in ipairs(ids) do
  local left = redis.call('HGET', KEYS[2], id)
  local at = tonumber(redis.call('HGET', KEYS[1], id)) or 0
  if left and at < now - grace and redis.call('EXISTS', job_prefix .. id) == 0 then
    redis.call('HDEL', KEYS[2], id)  -- reserved, never stored: the API died in between
    left = nil
  end
  if left then
    jobs = jobs + 1
    flops = flops + tonumber(left)
  else
    redis.call('HDEL', KEYS[1], id)
  end
end
local new, max_jobs, max_flops = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local over = ''
if max_jobs > 0 and jobs + 1 > max_jobs then
  over = 'jobs'
elseif max_flops > 0 and jobs > 0 and flops + new > max_flops then
  over = 'flops'
end
if over == '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return {over, tostring(jobs), string.format('%.17g', flops)}
"""


class KeyLimitExceededError(RateLimitedError):
    error_type = "key_limit_exceeded"


@dataclass(frozen=True)
class KeyLimits:
    max_jobs: int  # 0: none
    max_flops: float  # 0: none


def reserve(state: ServiceState, limits: KeyLimits, owner: str | None, job_id: str, flops: float) -> None:
    """Count `job_id` against its key's limits, or raise KeyLimitExceededError (429) naming the limits and
    the key's use. The caller releases the reservation with release() if the job is not created after all."""
    if owner is None or (limits.max_jobs <= 0 and limits.max_flops <= 0):
        return
    keys = state.store.keys
    over, jobs, used = state.redis.eval(
        _RESERVE_LUA,
        2,
        keys.owner_inflight(owner),
        keys.job_flops(),
        job_id,
        repr(float(flops)),
        limits.max_jobs,
        repr(float(limits.max_flops)),
        state.settings.job_ttl_s,
        repr(time.time()),
        RESERVATION_GRACE_S,
        keys.job(""),
    )
    over = over.decode() if isinstance(over, bytes) else over
    if not over:
        return
    in_use = {"jobs": int(jobs), "flops": float(used)}
    limit = {"jobs": limits.max_jobs or None, "flops": limits.max_flops or None}
    what = (
        f"{limits.max_jobs} jobs queued or running"
        if over == "jobs"
        else f"{limits.max_flops:.3g} FLOPs in flight ({in_use['flops']:.3g} in use, this job {flops:.3g})"
    )
    raise KeyLimitExceededError(
        f"this API key's limit of {what} is reached; retry when one of its jobs ends",
        retry_after_s=RETRY_AFTER_S,
        details={"exceeded": over, "limit": limit, "in_use": in_use, "job_flops": flops},
    )


def release(state: ServiceState, owner: str | None, job_id: str) -> None:
    if owner is None:
        return
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.hdel(state.store.keys.owner_inflight(owner), job_id)
        pipe.hdel(state.store.keys.job_flops(), job_id)
        pipe.execute()
