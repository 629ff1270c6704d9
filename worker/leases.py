"""Our own record of running jobs: {prefix}:active, a zset "<job id>:<attempt id>" -> lease deadline.

rq's StartedJobRegistry is not enough to find abandoned jobs: rq drops a job's entry when it records a
failure (a Redis error that outlasted the worker's retries inside the job's final write, with Redis back
when rq handled it), and it scores leases with each worker's clock. So every start of a job enters the
active set in the start's own transaction, every way a run ends (terminal status, drain, the reaper's
settlement) leaves it in its own transaction, and LeaseRenewer, a thread that does nothing else, renews the
running attempt's deadline. Deadlines come from the Redis server's clock (TIME inside the scripts), one clock
for every worker. The reaper (worker/recovery.py) settles every entry whose deadline passed, whatever rq's
registries say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis

from m4v_core.background import BackgroundThread
from m4v_core.keys import Keys

log = logging.getLogger(__name__)

# KEYS[1] active zset; ARGV: member, lease seconds, "XX" to renew only an entry still there (else "").
_LEASE_LUA = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[2])
if ARGV[3] == 'XX' then
  return redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[1])
end
return redis.call('ZADD', KEYS[1], deadline, ARGV[1])
"""

# KEYS[1] active zset; ARGV[1]: judge at this unix time, or "" for the server's clock now.
_LAPSED_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"""


def member(job_id: str, attempt_id: str | None) -> str:
    return f"{job_id}:{attempt_id or ''}"


def parse(raw: bytes | str) -> tuple[str, str | None]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    job_id, _, attempt_id = text.partition(":")
    return job_id, attempt_id or None


@dataclass
class ActiveLeases:
    client: redis.Redis
    keys: Keys
    lease_s: float

    current: tuple[str, str | None] | None = None  # (job id, attempt id) this process runs now

    def __post_init__(self) -> None:
        self._lease = self.client.register_script(_LEASE_LUA)
        self._lapsed = self.client.register_script(_LAPSED_LUA)

    def enter(self, pipe: redis.client.Pipeline, job_id: str, attempt_id: str | None) -> None:
        """Queue the entry (deadline: server time + lease_s) into the caller's transaction."""
        args = [member(job_id, attempt_id), self.lease_s, ""]
        self._lease(keys=[self.keys.active()], args=args, client=pipe)

    def leave(self, pipe: redis.client.Pipeline | redis.Redis, job_id: str, attempt_id: str | None) -> None:
        pipe.zrem(self.keys.active(), member(job_id, attempt_id))

    def renew(self, job_id: str, attempt_id: str | None) -> bool:
        """Push the deadline out; False if the entry is gone (the run ended or was settled)."""
        args = [member(job_id, attempt_id), self.lease_s, "XX"]
        return bool(self._lease(keys=[self.keys.active()], args=args))

    def renew_current(self) -> None:
        current = self.current
        if current is not None:
            self.renew(*current)

    def lapsed(self, now: float | None = None) -> list[tuple[str, str | None]]:
        """(job id, attempt id) of every entry whose deadline passed at `now` (default: the server's now)."""
        raw = self._lapsed(keys=[self.keys.active()], args=["" if now is None else now])
        return [parse(m) for m in raw]


class LeaseRenewer(BackgroundThread):
    """Renews the running job's leases every period_s (rq's StartedJobRegistry entry and ours) and nothing
    else, so a slow S3 retry or reaper pass on the Recovery thread can never let a live job's lease lapse."""

    thread_name = "m4v-leases"

    def __init__(self, renewals: list[Callable[[], object]], period_s: float) -> None:
        self.renewals = renewals
        self.period_s = period_s
        super().__init__()

    def _run(self) -> None:
        while not self._stop.is_set():
            for renew in self.renewals:
                try:
                    renew()
                except Exception:  # noqa: BLE001 - a Redis blip must not end the thread
                    log.warning("lease renewal failed", exc_info=True)
            self._stop.wait(self.period_s)
