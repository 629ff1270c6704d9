"""The API's view of the fleet and the queue for admission and ETAs, read from Redis at most every ttl_s.

POST /generate must not cost O(queued jobs): the exact ETA of a queued job sums the FLOPs of everything
ahead of it, which means reading every queue and every job's estimate. One snapshot holds, per priority, the
queued ids with running sums of their FLOPs, plus the live workers and the preset's measured rates per GPU
count; requests within ttl_s of it reuse it (Settings.fleet_view_ttl_s, default 1 s; 0 reads Redis every
time). A job the snapshot has not seen yet counts as the last of its queue, which is where a new job is, after
the jobs this process enqueued since the snapshot (noted with FleetView.note_enqueued, so a burst of
submissions gets rising ETAs; another API replica's submissions are seen with the next snapshot).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from m4v_core import JobRecord
from m4v_core.models import PRIORITIES, Priority
from m4v_core.throughput import FleetWorker, fleet, fleet_rate, job_flops, preset_rates
from service.queue import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueSums:
    """One priority's queued ids in dequeue order, with FLOPs summed over everything before each."""

    index: dict[str, int]  # job id -> position in its queue
    before: list[float]  # before[i] = FLOPs of the jobs at positions < i; before[-1] = the whole queue

    @property
    def total(self) -> float:
        return self.before[-1]

    def ahead_of(self, job_id: str, since: list[tuple[str, float]]) -> float:
        """FLOPs before job_id in this queue; an unseen job comes after the whole queue and the jobs in
        ``since`` (enqueued after the snapshot) that precede it."""
        if job_id in self.index:
            return self.before[self.index[job_id]]
        return self.total + sum(_before(since, job_id))

    def own(self, job_id: str, since: list[tuple[str, float]]) -> float | None:
        i = self.index.get(job_id)
        if i is not None:
            return self.before[i + 1] - self.before[i]
        return next((flops for seen, flops in since if seen == job_id), None)


def _before(since: list[tuple[str, float]], job_id: str) -> list[float]:
    out = []
    for seen, flops in since:
        if seen == job_id:
            break
        out.append(flops)
    return out


@dataclass(frozen=True)
class FleetSnapshot:
    workers: list[FleetWorker]
    running_flops: float  # FLOPs the busy workers still have to spend
    queues: dict[Priority, QueueSums]
    preset_rates: dict[str, dict[int, float]]  # preset -> GPU count -> measured FLOP/s
    taken_at: float
    since: dict[Priority, list[tuple[str, float]]]  # (job id, FLOPs) this process enqueued after taken_at

    def rate(self, preset: str) -> float | None:
        return fleet_rate(self.workers, preset, self.preset_rates.get(preset, {}))

    def own_flops(self, job: JobRecord) -> float | None:
        """The job's FLOP estimate if the snapshot saw it queued."""
        return self.queues[job.priority].own(job.id, self.since[job.priority])

    def flops_ahead(self, job: JobRecord) -> float:
        """FLOPs dequeued or running before this queued job: higher priorities, then its own queue."""
        ahead = self.running_flops
        for priority in PRIORITIES:
            if priority == job.priority:
                return ahead + self.queues[priority].ahead_of(job.id, self.since[priority])
            ahead += self.queues[priority].total + sum(f for _, f in self.since[priority])
        return ahead


class FleetView:
    """Thread-safe holder of the latest FleetSnapshot (sync routes run in the threadpool).

    Stale-while-revalidate: once a snapshot exists, a request that finds it older than ttl_s starts ONE
    background refresh and carries on with the old one, so no request waits for a whole-queue read (about
    5 ms per 5,000 queued jobs); only the first request, or every request with ttl_s = 0, reads in line.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        queue: JobQueue,
        presets: tuple[str, ...],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.prefix, self.queue = client, prefix, queue
        self.presets, self.ttl_s, self.clock = presets, ttl_s, clock
        self._lock = threading.Lock()
        self._snapshot: FleetSnapshot | None = None
        self._refreshing = False

    def get(self) -> FleetSnapshot:
        with self._lock:
            snap = self._snapshot
            if snap is not None and self.clock() - snap.taken_at < self.ttl_s:
                return snap
            if snap is None or self.ttl_s == 0:
                snap = self._snapshot = self._read()
                return snap
            if not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="fleet-view", daemon=True).start()
            return snap

    def _refresh(self) -> None:
        fresh = None
        try:
            fresh = self._read()
        except Exception as exc:  # noqa: BLE001 - keep serving the old view; the next stale read retries
            log.warning("fleet view refresh failed: %s", exc)
        finally:
            with self._lock:
                old, self._refreshing = self._snapshot, False
                if fresh is not None:
                    if old is not None:  # jobs noted while the refresh read the queues, not in what it read
                        for priority, noted in old.since.items():
                            seen = fresh.queues[priority].index
                            fresh.since[priority].extend(item for item in noted if item[0] not in seen)
                    self._snapshot = fresh

    def note_enqueued(self, job_id: str, priority: Priority, flops: float) -> None:
        """A job this process just enqueued: later ETAs count it until the next snapshot includes it."""
        with self._lock:
            if self._snapshot is not None and job_id not in self._snapshot.queues[priority].index:
                self._snapshot.since[priority].append((job_id, flops))

    def _read(self) -> FleetSnapshot:
        workers = fleet(self.client, self.prefix)
        with self.client.pipeline(transaction=False) as pipe:
            for q in self.queue.queues.values():
                pipe.lrange(q.key, 0, -1)
            raw_ids = pipe.execute()
        ids = [[i.decode() if isinstance(i, bytes) else str(i) for i in queued] for queued in raw_ids]
        running = [w.busy_job for w in workers if w.busy_job]
        flops = job_flops(self.client, self.prefix, [*running, *itertools.chain.from_iterable(ids)])
        running_flops, rest = sum(flops[: len(running)]), iter(flops[len(running) :])
        queues = {}
        for priority, queued in zip(self.queue.queues, ids, strict=True):
            own = [next(rest) for _ in queued]
            queues[priority] = QueueSums(
                index={job_id: i for i, job_id in enumerate(queued)},
                before=[0.0, *itertools.accumulate(own)],
            )
        rates = {p: preset_rates(self.client, self.prefix, p) for p in self.presets}
        since: dict[Priority, list[tuple[str, float]]] = {p: [] for p in self.queue.queues}
        return FleetSnapshot(workers, running_flops, queues, rates, taken_at=self.clock(), since=since)
