"""Idempotency-Key: one key, one job, whatever crashes or lost replies happen between the API and Redis.

{p}:idem:{owner}:{key} holds one of
  "pending <body sha256> <job id>"   TTL RESERVE_S: a request is creating that job right now
  "<body sha256> <job id>"           TTL job_ttl_s: the job exists (written in the job's own transaction)

A request reserves the key (SET NX, RESERVE_S), admits the job, then stores the job and turns its
reservation into the final value in one MULTI/EXEC that WATCHes the key (service/submit.py). So:
- the final value never names a job that was not stored, and no job is stored under a key that another
  request holds (the WATCH aborts it; that request then replays the other's job);
- an API that dies between reserving and storing leaves a reservation that expires after RESERVE_S; a retry
  waiting on it then takes the key over and creates the job;
- a connection lost at EXEC (did the job commit?) raises WatchError; the request reads the job back, and
  nothing deletes the key after the transaction was sent, so a retry finds the committed job instead of
  creating a second one;
- a refusal before the transaction (429, 503, ...) deletes the reservation if it is still this request's.
Replays of a pending key wait on the event loop (asyncio.sleep, the async Redis pool), holding no
threadpool thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis

from m4v_core import JobRecord
from service.errors import IdempotencyConflictError
from service.state import ServiceState

RESERVE_S = 10  # a reservation that never became a job (the API died) frees the key after this
WAIT_S = RESERVE_S + 2.0  # a replay waits this long for a pending key: past a dead reservation's expiry
POLL_S = 0.05

# KEYS[1] the key; ARGV[1] the value this request reserved it with: delete only our own reservation.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Entry:
    """What the key holds."""

    digest: str
    job_id: str
    pending: bool


@dataclass(frozen=True)
class IdemKey:
    key: str  # the Redis key
    digest: str  # sha256 of the validated body

    def pending_value(self, job_id: str) -> str:
        return f"pending {self.digest} {job_id}"

    def final_value(self, job_id: str) -> str:
        return f"{self.digest} {job_id}"

    def reserve(self, r: redis.Redis, job_id: str) -> Entry | None:
        """None: this request now holds the key for `job_id`; else what the key holds (another request's)."""
        while not r.set(self.key, self.pending_value(job_id), nx=True, ex=RESERVE_S):
            entry = parse(r.get(self.key))
            if entry is not None:
                return entry  # else it expired between the SET and the GET: try again
        return None

    def release(self, r: redis.Redis, job_id: str) -> None:
        r.eval(_RELEASE_LUA, 1, self.key, self.pending_value(job_id))

    def held_by(self, pipe: redis.client.Pipeline, job_id: str) -> bool:
        """Inside a WATCH of the key: True if it is (still, or free again for) `job_id`'s reservation."""
        raw = pipe.get(self.key)
        return raw is None or _text(raw) == self.pending_value(job_id)

    def check_body(self, entry: Entry) -> None:
        if entry.digest != self.digest:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request body",
                details={"job_id": entry.job_id or None},
            )


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode()
    return raw if isinstance(raw, str) else ""


def parse(raw: object) -> Entry | None:
    words = _text(raw).split(" ")
    if len(words) == 3 and words[0] == "pending":
        return Entry(words[1], words[2], pending=True)
    if len(words) == 2:
        return Entry(words[0], words[1], pending=False)
    return None


async def await_job(state: ServiceState, idem: IdemKey, owner: str | None) -> JobRecord | None:
    """The job another request created (or is creating) under the key; None once the key is free again (that
    request failed, or died and its reservation expired): the caller then submits itself. Waits on the event
    loop, at most WAIT_S by state.clock, then 409 with Retry-After."""
    deadline = state.clock() + WAIT_S
    while True:
        entry = parse(await state.aredis_ops.get(idem.key))
        if entry is None:
            return None
        idem.check_body(entry)
        if not entry.pending:
            return await _replayed(state, entry, owner)
        if state.clock() >= deadline:
            raise IdempotencyConflictError(
                "a request with this Idempotency-Key is still being processed; retry",
                details={"job_id": entry.job_id},
                headers={"Retry-After": str(RESERVE_S)},
            )
        await asyncio.sleep(POLL_S)


async def _replayed(state: ServiceState, entry: Entry, owner: str | None) -> JobRecord:
    raw = await state.aredis_ops.get(state.store.keys.job(entry.job_id))
    if raw is None:  # the job expired or was deleted; the key lives as long as the job did
        raise IdempotencyConflictError(
            "the job created with this Idempotency-Key no longer exists", details={"job_id": entry.job_id}
        )
    job = JobRecord.model_validate_json(raw)
    if job.owner != owner:
        raise IdempotencyConflictError("this Idempotency-Key belongs to another job")
    return job
