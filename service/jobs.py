"""Reading and cancelling jobs on behalf of an owner, and their public view."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from m4v_core import JobRecord
from m4v_core.jobview import JobOut, render_job
from m4v_core.store import utcnow
from m4v_core.throughput import drop_job_flops
from service.errors import JobNotFoundError
from service.eta import queued_eta_s
from service.state import ServiceState

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")  # what POST /generate issues (uuid4 hex)


def load_job(state: ServiceState, job_id: str, owner: str | None) -> JobRecord:
    """The job, or 404 (also for another owner's job, so ids cannot be probed). An id POST /generate could
    not have issued is 404 before Redis is asked: spelled into a key, `<id>:events` would name the event
    stream (a Redis type error, once a 500)."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFoundError(job_id)
    keys = state.store.keys
    with state.redis.pipeline(transaction=False) as pipe:  # one round trip, as a plain GET was
        pipe.get(keys.job(job_id))
        pipe.exists(keys.deleted(job_id))
        raw, deleted = pipe.execute()
    return _owned(job_id, raw, deleted, owner)


def _owned(job_id: str, raw: bytes | None, deleted: int, owner: str | None) -> JobRecord:
    if raw is None or deleted:  # deleted while it ran (service/job_delete.py): gone for clients
        raise JobNotFoundError(job_id)
    job = JobRecord.model_validate_json(raw)
    if job.owner != owner:
        raise JobNotFoundError(job_id)
    return job


async def load_job_async(state: ServiceState, job_id: str, owner: str | None) -> JobRecord:
    """load_job on the event loop (the async ops pool), for routes that should hold no thread."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFoundError(job_id)
    keys = state.store.keys
    async with state.aredis_ops.pipeline(transaction=False) as pipe:
        pipe.get(keys.job(job_id))
        pipe.exists(keys.deleted(job_id))
        raw, deleted = await pipe.execute()
    return _owned(job_id, raw, deleted, owner)


def public_view(state: ServiceState, job: JobRecord, base_url: str, own_flops: float | None = None) -> JobOut:
    """JobOut with the live queue position (queued) or fresh presigned URLs (finished with a video).
    ``own_flops``: the job's FLOP estimate when the caller knows it (saves a Redis read)."""
    result = state.presigner.result(job.result) if job.result else None
    if job.status != "queued":
        return render_job(job, base_url, result)
    position = state.queue.position(job.id, job.priority)
    eta_s = queued_eta_s(state.fleet_view, state.redis, state.settings.key_prefix, job, own_flops)
    return render_job(job, base_url, result, queue_position=position, eta_s=eta_s)


@dataclass(frozen=True)
class CancelOutcome:
    job: JobRecord
    accepted: bool  # True: a running job was asked to stop (202); False: final answer (200)


def cancel_job(state: ServiceState, job: JobRecord, base_url: str) -> CancelOutcome:
    """queued -> canceled now; running -> ask the worker to stop at its next step; finished -> unchanged.

    The queued -> canceled transition is atomic (WATCH/MULTI), so a worker dequeuing the job at the same
    moment either sees it canceled (and skips it) or has already moved it to running (we then ask it to stop).
    """
    if job.status == "queued":
        canceled = state.store.transition(job.id, {"queued"}, "canceled", finished_at=utcnow())
        if canceled is not None:
            state.queue.remove(job.id, job.priority)
            drop_job_flops(state.redis, state.settings.key_prefix, job.id)  # no longer ahead of anyone
            _announce_canceled(state, canceled, base_url)
            return CancelOutcome(canceled, accepted=False)
        job = state.store.get(job.id)  # a worker took it meanwhile
    if job.status == "running":
        state.store.request_cancel(job.id)
        log.info("cancel requested", extra={"job_id": job.id})
        return CancelOutcome(job, accepted=True)
    return CancelOutcome(job, accepted=False)


def _announce_canceled(state: ServiceState, job: JobRecord, base_url: str) -> None:
    """Events, metric and the `canceled` webhook of a job no worker will ever see.

    The webhook is only queued here (Redis), never POSTed on the request thread: the API's own dispatcher
    or any worker's sends it, with the same payload, signing, SSRF guard and retries as the workers' own
    deliveries (service/webhooks.py says why the API runs one).
    """
    at = job.finished_at.isoformat() if job.finished_at else None
    state.store.append_event(job.id, "status", {"job_id": job.id, "status": "canceled", "at": at})
    state.store.append_event(job.id, "done", public_view(state, job, base_url).model_dump(mode="json"))
    state.webhooks.submit(job, "canceled")
    state.metrics.jobs.labels(status="canceled").inc()
    log.info("job canceled while queued", extra={"job_id": job.id})
