"""POST /generate's work: preset checks, default resolution, idempotency, admission, record + enqueue."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from m4v_core import GenerateRequest, JobRecord, JobSpec
from m4v_core.models import MAX_SEED, check_against_preset, resolve_frames
from m4v_core.store import JobNotFoundError, utcnow
from m4v_core.throughput import queue_job_flops, spec_flops
from model.config import ModelConfig
from service.admission import admit
from service.auth import owner_key
from service.errors import IdempotencyConflictError, InvalidRequestError, QueueFullError
from service.joblist import index_job
from service.limits import check_prompt_limits, check_webhook_url
from service.queue import estimate_job_timeout_s
from service.quota import DEFAULT_CAP_JOBS, KeyLimits, release, reserve
from service.state import ServiceState

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY_AFTER_S = 30
IDEMPOTENCY_WAIT_S = 2.0  # how long a replay waits for a concurrent first request to store its job


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


def submit(
    state: ServiceState,
    req: GenerateRequest,
    owner: str | None,
    idempotency_key: str | None,
    base_url: str | None = None,
) -> Submission:
    """Validate, admit, store and queue a job; ``base_url`` is where its links (events, webhooks) point."""
    check_prompt_limits(req, state.settings)
    check_webhook_url(req, state.settings)
    spec = build_spec(req, state.preset)
    job_id = uuid.uuid4().hex
    idem_key = state.store.keys.idempotency(owner_key(owner), idempotency_key) if idempotency_key else None
    if idem_key is not None:
        digest = body_hash(req)
        if not state.redis.set(idem_key, f"{digest} {job_id}", nx=True, ex=state.settings.job_ttl_s):
            return Submission(_replay(state, idem_key, digest, owner), created=False)
    try:
        _admit(state)
        admission = admit(state, spec)  # FLOP / GPU-memory limits (service/admission.py)
        limits = key_limits(state.settings.key_max_jobs, state.settings.key_max_flops, state.preset)
        reserve(state, limits, owner, job_id, admission.flops)  # per-key limits (service/quota.py)
        try:
            job = _create(state, req, spec, job_id, owner, admission.flops, base_url)
        except BaseException:
            release(state, owner, job_id)
            raise
    except BaseException:
        if idem_key is not None:  # nothing was created: let the client retry with the same key
            state.redis.delete(idem_key)
        raise
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


def _create(
    state: ServiceState,
    req: GenerateRequest,
    spec: JobSpec,
    job_id: str,
    owner: str | None,
    flops: float,
    base_url: str | None,
) -> JobRecord:
    """Record, first event, FLOP estimate and rq entry in ONE transaction: a job is stored and queued
    together or not at all, in one Redis round trip."""
    now = utcnow()
    job = JobRecord(
        id=job_id,
        created_at=now,
        request=req,
        spec=spec,
        priority=req.priority,
        owner=owner,
        deadline=now + timedelta(seconds=req.timeout_s) if req.timeout_s else None,
        links_base=base_url,
    )
    timeout_s = estimate_job_timeout_s(spec, state.preset, req.timeout_s)
    ttl_s = state.settings.job_ttl_s
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # explicit MULTI first: rq's enqueue with a caller's pipeline expects one
        state.store.create(job, pipe)
        index_job(pipe, state.store.keys, job, ttl_s)  # GET /jobs, GET /v1/videos
        state.store.queue_event(
            pipe, job_id, "status", {"job_id": job_id, "status": "queued", "at": now.isoformat()}
        )
        queue_job_flops(pipe, state.settings.key_prefix, job_id, flops, ttl_s)
        state.queue.enqueue(job_id, req.priority, timeout_s, pipe)
        pipe.execute()
    state.fleet_view.note_enqueued(job_id, req.priority, flops)
    state.metrics.jobs.labels(status="submitted").inc()
    log.info("job submitted", extra={"job_id": job_id, "priority": req.priority, "preset": spec.preset})
    return job


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode()
    return raw if isinstance(raw, str) else ""


def _replay(state: ServiceState, idem_key: str, digest: str, owner: str | None) -> JobRecord:
    """Same key: the same body gets the original job back, a different body is a conflict."""
    raw = state.redis.get(idem_key)
    stored_digest, _, job_id = _text(raw).partition(" ")
    if stored_digest != digest:
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used with a different request body",
            details={"job_id": job_id or None},
        )
    deadline = time.monotonic() + IDEMPOTENCY_WAIT_S
    while True:  # the first request may still be between reserving the key and storing its job
        try:
            job = state.store.get(job_id)
        except JobNotFoundError:
            if time.monotonic() > deadline:
                raise IdempotencyConflictError(
                    "a request with this Idempotency-Key is still being processed; retry",
                    details={"job_id": job_id},
                ) from None
            time.sleep(0.05)
            continue
        if job.owner != owner:
            raise IdempotencyConflictError("this Idempotency-Key belongs to another job")
        return job
