"""Job records and their events in Redis: atomic updates (WATCH/MULTI), the SSE stream, cancel flags.

Key names come from m4v_core/keys.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from m4v_core.keys import Keys
from m4v_core.models import JobRecord


def utcnow() -> datetime:
    return datetime.now(UTC)


def live_worker_keys(client: redis.Redis, keys: Keys) -> list[str]:
    """Heartbeat keys of workers whose heartbeat has not expired, from the index (O(workers), not a SCAN)."""
    now = time.time()
    index = keys.worker_index()
    with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(index, "-inf", now)
        pipe.zrangebyscore(index, now, "+inf")
        _, names = pipe.execute()
    return sorted(keys.worker(n.decode() if isinstance(n, bytes) else n) for n in names)


class JobNotFoundError(KeyError):
    pass


class JobStore:
    """Reads and updates job records atomically (WATCH/MULTI), and appends job events."""

    def __init__(
        self, client: redis.Redis, prefix: str = "m4v", ttl_s: int = 7 * 24 * 3600, events_maxlen: int = 5000
    ):
        self.r = client
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s
        self.events_maxlen = events_maxlen

    def create(self, job: JobRecord, pipe: redis.client.Pipeline | None = None) -> None:
        """Store a new record; with ``pipe`` the write joins the caller's pipeline/transaction."""
        (pipe if pipe is not None else self.r).set(
            self.keys.job(job.id), job.model_dump_json(), ex=self.ttl_s
        )

    def get(self, job_id: str) -> JobRecord:
        raw = self.r.get(self.keys.job(job_id))
        if raw is None:
            raise JobNotFoundError(job_id)
        return JobRecord.model_validate_json(raw)

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        ids = list(job_ids)
        raws = self.r.mget([self.keys.job(i) for i in ids]) if ids else []
        return [JobRecord.model_validate_json(r) if r is not None else None for r in raws]

    def update(
        self,
        job_id: str,
        change: Callable[[JobRecord], bool | None],
        also: Callable[[redis.client.Pipeline, JobRecord], None] | None = None,
    ) -> JobRecord:
        """Apply change(job) atomically. If change returns False the record is left as it was.

        also(pipe, job): more writes (events, webhook deliveries) queued into the same MULTI/EXEC as the
        changed record, so they happen together with it or not at all. An exception from change or also
        leaves everything unwritten."""
        key = self.keys.job(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFoundError(job_id)
                    job = JobRecord.model_validate_json(raw)
                    if change(job) is False:
                        pipe.unwatch()
                        return job
                    pipe.multi()
                    pipe.set(key, job.model_dump_json(), ex=self.ttl_s)
                    if also is not None:
                        also(pipe, job)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    def transition(
        self, job_id: str, allowed_from: Iterable[str], to: str, **fields: Any
    ) -> JobRecord | None:
        """Move a job to status `to` only if its status is in allowed_from; None if it was not."""
        allowed = set(allowed_from)
        moved = False

        def change(job: JobRecord) -> bool:
            nonlocal moved
            if job.status not in allowed:
                return False
            job.status = to  # type: ignore[assignment]
            for name, value in fields.items():
                setattr(job, name, value)
            moved = True
            return True

        job = self.update(job_id, change)
        return job if moved else None

    # --- events (SSE source) ---
    def append_event(self, job_id: str, event_type: str, data: dict[str, Any]) -> str:
        with self.r.pipeline(transaction=True) as pipe:
            self.queue_event(pipe, job_id, event_type, data)
            event_id, _ = pipe.execute()
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    def queue_event(
        self, pipe: redis.client.Pipeline, job_id: str, event_type: str, data: dict[str, Any]
    ) -> None:
        """Add the event's XADD + EXPIRE to the caller's pipeline (two results: event id, True)."""
        key = self.keys.events(job_id)
        pipe.xadd(
            key,
            {"type": event_type, "data": json.dumps(data, default=str)},
            maxlen=self.events_maxlen,
            approximate=True,
        )
        pipe.expire(key, self.ttl_s)

    def read_events(
        self, job_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """Events after stream id `after` as (id, type, data); blocks up to block_ms for new ones."""
        res = self.r.xread({self.keys.events(job_id): after}, count=count, block=block_ms)
        out: list[tuple[str, str, dict[str, Any]]] = []
        for _stream, entries in res or []:
            for eid, fields in entries:
                eid_s = eid.decode() if isinstance(eid, bytes) else eid
                typ = fields[b"type"].decode() if b"type" in fields else fields["type"]
                data = fields[b"data"] if b"data" in fields else fields["data"]
                out.append((eid_s, typ, json.loads(data)))
        return out

    # --- cancel ---
    def request_cancel(self, job_id: str) -> None:
        self.r.set(self.keys.cancel(job_id), "1", ex=self.ttl_s)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self.keys.cancel(job_id)))
