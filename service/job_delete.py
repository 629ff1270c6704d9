"""Deleting a job for good (DELETE /v1/videos/{id}): its stored objects, its record, events and index entry.

A queued job is canceled first. A running job is asked to stop and marked deleted (`{p}:job:{id}:deleted`):
from then on every read answers 404, and it leaves the owner's listing; its record and whatever partial video
its worker still uploads stay until the record's TTL (and the bucket's expiry rule) remove them, because
deleting them under a running worker would race its last writes.
"""

from __future__ import annotations

import logging

from m4v_core import JobRecord
from service.joblist import unindex_job
from service.jobs import cancel_job
from service.state import ServiceState

log = logging.getLogger(__name__)


def delete_job(state: ServiceState, job: JobRecord, base_url: str) -> None:
    keys = state.store.keys
    if job.status == "queued":
        job = cancel_job(state, job, base_url).job  # a worker may take it meanwhile: then it is running
    if job.status == "running":
        state.store.request_cancel(job.id)
        state.redis.set(keys.deleted(job.id), "1", ex=state.settings.job_ttl_s)
        unindex_job(state.redis, keys, job)
        log.info("running job deleted: cancel requested", extra={"job_id": job.id})
        return
    if job.started_at is not None:  # a job no worker ever ran has nothing stored
        state.objects.delete_job_objects(job)
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.job(job.id), keys.events(job.id), keys.cancel(job.id))
        pipe.execute()
    unindex_job(state.redis, keys, job)
    log.info("job deleted", extra={"job_id": job.id})
