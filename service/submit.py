"""POST /generate's work: preset checks, default resolution, idempotency (service/idempotency.py),
admission, record + enqueue."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import redis
from starlette.concurrency import run_in_threadpool

from m4v_core import GenerateRequest, JobRecord, JobSpec
from m4v_core.models import MAX_SEED, check_against_preset, resolve_frames
from m4v_core.store import utcnow
from m4v_core.throughput import queue_job_flops, spec_flops
from model.config import ModelConfig
from service.admission import admit
from service.auth import owner_key
from service.errors import IdempotencyConflictError, InvalidRequestError, QueueFullError
from service.idempotency import IdemKey, await_job
from service.joblist import index_job
from service.limits import check_prompt_limits, check_webhook_url
from service.queue import estimate_job_timeout_s
from service.quota import DEFAULT_CAP_JOBS, KeyLimits, release, reserve
from service.state import ServiceState

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY_AFTER_S = 30
TAKEOVERS = 3  # an Idempotency-Key changing hands more often than this in one request: 409, retry


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    created: bool  # False: an Idempotency-Key replay returned the existing job
    flops: float | None = None  # the new job's FLOP estimate (None for a replay)


def build_spec(req: GenerateRequest, cfg: ModelConfig) -> JobSpec:
    """Every default resolved from the served preset; a random seed if none was given."""
    problems = check_against_preset(req, cfg)
    if problems:
        raise InvalidRequestError.from_fields(problems)
    width, height = (req.width, req.height) if req.width and req.height else cfg.default_resolution
    smp = cfg.sampler
    return JobSpec(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=width,
        height=height,
        num_frames=resolve_frames(req, cfg) or cfg.default_frames,
        fps=req.fps or cfg.default_fps,
        seed=req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1),
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else smp.guidance_scale,
        video_guidance_scale=(
            req.video_guidance_scale if req.video_guidance_scale is not None else smp.video_guidance_scale
        ),
        first_frame_steps=req.first_frame_steps or list(smp.first_frame_steps),
        later_frame_steps=req.later_frame_steps or list(smp.later_frame_steps),
        preset=cfg.name,
    )


def body_hash(req: GenerateRequest) -> str:
    """Hash of the validated body, so key order and whitespace do not make two requests differ."""
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


async def submit(
    state: ServiceState,
    req: GenerateRequest,
    owner: str | None,
    idempotency_key: str | None,
    base_url: str | None = None,
) -> Submission:
    """Validate, admit, store and queue a job; ``base_url`` is where its links (events, webhooks) point.

    The Redis work runs in the threadpool; a replay of an Idempotency-Key another request is still using
    waits on the event loop (service/idempotency.py), and takes the key over if that request dies."""
    idem = None
    if idempotency_key:
        idem = IdemKey(state.store.keys.idempotency(owner_key(owner), idempotency_key), body_hash(req))
    for _ in range(TAKEOVERS):
        outcome = await run_in_threadpool(submit_sync, state, req, owner, idem, base_url)
        if isinstance(outcome, Submission):
            return outcome
        assert idem is not None  # only a held key sends a request to wait
        job = await await_job(state, idem, owner)
        if job is not None:
            return Submission(job, created=False)
    raise IdempotencyConflictError("this Idempotency-Key keeps changing hands; retry")


def submit_sync(
    state: ServiceState,
    req: GenerateRequest,
    owner: str | None,
    idem: IdemKey | None,
    base_url: str | None = None,
) -> Submission | None:
    """The job created, or None when another request holds `idem` (the caller waits for its job)."""
    check_prompt_limits(req, state.settings)
    check_webhook_url(req, state.settings)
    spec = build_spec(req, state.preset)
    job_id = uuid.uuid4().hex
    if idem is not None and (entry := idem.reserve(state.redis, job_id)) is not None:
        idem.check_body(entry)
        return None
    try:
        _admit(state)
        admission = admit(state, spec)  # FLOP / GPU-memory limits (service/admission.py)
        limits = key_limits(state.settings.key_max_jobs, state.settings.key_max_flops, state.preset)
        reserve(state, limits, owner, job_id, admission.flops)  # per-key limits (service/quota.py)
    except BaseException:
        if idem is not None:  # nothing was created: let the client retry with the same key
            idem.release(state.redis, job_id)
        raise
    job = _new_record(req, spec, job_id, owner, base_url)
    try:
        stored = _store(state, job, admission.flops, idem)
    except NotStoredError as exc:  # known not to be in Redis: undo the reservations, report the cause
        release(state, owner, job_id)
        if idem is not None:
            idem.release(state.redis, job_id)
        raise exc.cause from None
    if not stored:
        release(state, owner, job_id)
        return None
    state.fleet_view.note_enqueued(job_id, req.priority, admission.flops)
    state.metrics.jobs.labels(status="submitted").inc()
    log.info("job submitted", extra={"job_id": job_id, "priority": req.priority, "preset": spec.preset})
    return Submission(job, created=True, flops=admission.flops)


@functools.lru_cache(maxsize=16)
def key_limits(max_jobs: int, max_flops: float | None, preset: ModelConfig) -> KeyLimits:
    """The per-key limits; the compute cap defaults to DEFAULT_CAP_JOBS default-sized jobs of the preset."""
    if max_flops is None:
        max_flops = DEFAULT_CAP_JOBS * spec_flops(build_spec(GenerateRequest(prompt="x"), preset), preset)
    return KeyLimits(max_jobs, max_flops)


def _admit(state: ServiceState) -> None:
    depth = state.queue.total_depth()
    if depth >= state.settings.max_queue_depth:
        raise QueueFullError(
            f"queue is full ({depth} jobs waiting, limit {state.settings.max_queue_depth}); retry later",
            retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            details={"queued": depth, "limit": state.settings.max_queue_depth},
        )


def _new_record(
    req: GenerateRequest, spec: JobSpec, job_id: str, owner: str | None, base_url: str | None
) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=job_id,
        created_at=now,
        request=req,
        spec=spec,
        priority=req.priority,
        owner=owner,
        deadline=now + timedelta(seconds=req.timeout_s) if req.timeout_s else None,
        links_base=base_url,
    )


class NotStoredError(Exception):
    """The store failed before its transaction could have committed."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def _store(state: ServiceState, job: JobRecord, flops: float, idem: IdemKey | None) -> bool:
    """Record, first event, FLOP estimate, rq entry and the Idempotency-Key's final value in ONE
    transaction: a job is stored, queued and named by its key together or not at all. False: another request
    holds the key (nothing stored).

    A connection lost at EXEC leaves unknown whether the job committed. The transaction WATCHes the job's
    key (and the Idempotency-Key), so redis-py raises WatchError then (it never sends a watched transaction
    again), and the job is read back: stored means success. If that read fails too, the error propagates
    (503) and nothing is undone: the key names the job (committed) or a reservation that expires in
    RESERVE_S (not), so a retry with the key gets that job or creates it, never a second one."""
    keys = state.store.keys
    watched = [keys.job(job.id)] + ([idem.key] if idem is not None else [])
    for _ in range(TAKEOVERS):
        try:
            with state.redis.pipeline(transaction=True) as pipe:
                pipe.watch(*watched)
                if idem is not None and not idem.held_by(pipe, job.id):
                    return False
                pipe.multi()
                _queue_writes(state, pipe, job, flops, idem)
                pipe.execute()
                return True
        except redis.WatchError:
            if state.redis.exists(keys.job(job.id)):
                return True  # committed; only the reply was lost
        except redis.RedisError as exc:  # before EXEC, or EXEC refused: nothing was written
            raise NotStoredError(exc) from exc
    cut = redis.ConnectionError(f"the job's transaction was cut off {TAKEOVERS} times, none committed")
    raise NotStoredError(cut)


def _queue_writes(
    state: ServiceState, pipe: redis.client.Pipeline, job: JobRecord, flops: float, idem: IdemKey | None
) -> None:
    timeout_s = estimate_job_timeout_s(job.spec, state.preset, job.request.timeout_s)
    ttl_s = state.settings.job_ttl_s
    state.store.create(job, pipe)
    index_job(pipe, state.store.keys, job, ttl_s)  # GET /jobs, GET /v1/videos
    event = {"job_id": job.id, "status": "queued", "at": job.created_at.isoformat()}
    state.store.queue_event(pipe, job.id, "status", event)
    queue_job_flops(pipe, state.settings.key_prefix, job.id, flops, ttl_s)
    state.queue.enqueue(job.id, job.priority, timeout_s, pipe)
    if idem is not None:
        pipe.set(idem.key, idem.final_value(job.id), ex=ttl_s)
