"""Attempt fencing: every write a run of a job makes is conditional on that run still owning the record.

Each start of a job (queued -> running, worker/jobs.py) stores a fresh attempt id on the record. A run whose
lease lapsed (frozen VM, S3 outage, Redis cut, clock skew) may still be alive when the reaper has put the
job back to `queued` and another worker has started it again. Every write such a run makes goes through
Attempt.write: one WATCH/MULTI on the record that checks `status == running` and `attempt_id == ours`,
and carries the run's events and webhook deliveries in the same transaction. If the check fails nothing is
written and AttemptLostError stops the run (at its next sampler step, or before its terminal write).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import redis

from m4v_core import JobRecord, JobStore

Also = Callable[[redis.client.Pipeline, JobRecord], None]


class AttemptLostError(Exception):
    """The record no longer belongs to this run (requeued, failed by the reaper, or run by another)."""


def new_attempt_id() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Attempt:
    store: JobStore
    job_id: str
    attempt_id: str | None  # None only for records written before attempt ids existed

    def owns(self, job: JobRecord) -> bool:
        return job.status == "running" and job.attempt_id == self.attempt_id

    def write(self, change: Callable[[JobRecord], None], also: Also | None = None) -> JobRecord:
        """change(job) and also(pipe, job) in one transaction, only while this attempt owns the record;
        AttemptLostError (and nothing written) otherwise."""

        def fenced(job: JobRecord) -> None:
            if not self.owns(job):
                raise AttemptLostError(
                    f"job {self.job_id}: attempt {self.attempt_id} superseded "
                    f"(record {job.status}, attempt {job.attempt_id}, worker {job.worker})"
                )
            change(job)

        return self.store.update(self.job_id, fenced, also=also)

    def events(self, *events: tuple[str, dict[str, object]]) -> Also:
        """An `also` appending these (type, data) events to the job's stream."""

        def add(pipe: redis.client.Pipeline, _job: JobRecord) -> None:
            for event_type, data in events:
                self.store.queue_event(pipe, self.job_id, event_type, data)

        return add
