"""An owner's jobs in creation order: the index written with each job, and cursor-paginated reads of it.

The index is one sorted set per owner (m4v_core/keys.py `owner_jobs`) whose scores are all 0 and whose members
are "<created_at in µs, 16 digits>:<job id>", so lexicographic order is creation order and a page boundary is
an exclusive lexicographic bound (ZRANGEBYLEX "(member"): new jobs, deleted or expired ones never shift a
cursor. Members of records that have expired are dropped when a read meets them. Jobs created before the index
existed are not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import redis

from m4v_core import JobRecord
from m4v_core.keys import Keys
from service.auth import owner_key

Order = Literal["asc", "desc"]
MEMBER = re.compile(r"^\d{16}:[0-9a-f]{32}$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SCANNED = 2000  # index entries one request reads at most while filtering by status


def member(job: JobRecord) -> str:
    """Microseconds (the record's own resolution), so jobs of one owner sort in the order they were made."""
    created = job.created_at
    micros = (created - EPOCH) // timedelta(microseconds=1)
    return f"{micros:016d}:{job.id}"


def index_job(pipe: redis.client.Pipeline, keys: Keys, job: JobRecord, ttl_s: int) -> None:
    """Add the job to its owner's index inside the caller's transaction; the index outlives its newest job
    by the record TTL."""
    key = keys.owner_jobs(owner_key(job.owner))
    pipe.zadd(key, {member(job): 0})
    pipe.expire(key, ttl_s)


def unindex_job(client: redis.Redis, keys: Keys, job: JobRecord) -> None:
    client.zrem(keys.owner_jobs(owner_key(job.owner)), member(job))


@dataclass(frozen=True)
class Page:
    jobs: list[JobRecord]
    has_more: bool
    next_cursor: str | None  # the member of the last job read: pass it as the next request's cursor


def list_jobs(
    client: redis.Redis,
    keys: Keys,
    owner: str | None,
    limit: int,
    after: str | None = None,
    order: Order = "desc",
    statuses: frozenset[str] | None = None,
) -> Page:
    """Up to `limit` of the owner's jobs after the cursor `after` (a member, see module doc), newest first for
    desc. With `statuses`, only jobs in one of them; at most MAX_SCANNED entries are read per call, and a
    page may then come back short with has_more and a cursor to go on from."""
    key = keys.owner_jobs(owner_key(owner))
    found: list[JobRecord] = []
    cursor, scanned, exhausted = after, 0, False
    while len(found) <= limit and scanned < MAX_SCANNED and not exhausted:
        count = limit + 1
        batch = _range(client, key, cursor, order, count)
        scanned += len(batch)
        exhausted = len(batch) < count
        records = client.mget([keys.job(m.split(":", 1)[1]) for m in batch]) if batch else []
        gone = []
        for entry, raw in zip(batch, records, strict=True):
            if raw is None:
                gone.append(entry)
            else:
                job = JobRecord.model_validate_json(raw)
                if job.owner == owner and (statuses is None or job.status in statuses):
                    found.append(job)
                    if len(found) > limit:
                        exhausted = False  # an entry is left over: there is more
                        break
            cursor = entry
        if gone:
            client.zrem(key, *gone)
    page = found[:limit]
    if len(found) > limit:
        return Page(page, True, member(page[-1]))
    if exhausted:
        return Page(page, False, None)
    return Page(page, True, cursor)  # scanned MAX_SCANNED entries: go on from the last one read


def _range(client: redis.Redis, key: str, after: str | None, order: Order, count: int) -> list[str]:
    if order == "asc":
        raw = client.zrangebylex(key, f"({after}" if after else "-", "+", start=0, num=count)
    else:
        raw = client.zrevrangebylex(key, f"({after}" if after else "+", "-", start=0, num=count)
    return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
