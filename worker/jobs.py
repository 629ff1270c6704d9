"""run_job(job_id): the rq job function, and the one catch-all of the worker (the job boundary).

JobRun orchestrates one run (start, execute, end); worker/job_results.py uploads, measures and counts.

queued -> running -> text -> sampler (progress every step) -> decode -> MP4 -> S3 -> succeeded, with a
"done" event and the matching webhook for every terminal status. Errors map to error.type:
  torch.cuda.OutOfMemoryError -> out_of_memory (CUDA cache freed, the worker keeps serving)
  StorageError                -> upload_failed
  ValueError (bad spec)       -> invalid_request
  deadline / rq job timeout   -> status timed_out, error.type timeout
  cancel                      -> status canceled
  SIGTERM drain               -> back to queued (the attempt counts); at max_attempts: worker_lost
  anything else               -> internal
Handled errors are never re-raised into rq (rq's job then finishes normally; the JobRecord holds the truth).

Every start stores a fresh attempt id on the record; each later write of this run (progress, events, the
terminal status with its `done` event and webhook, a drain's requeue) is conditional on it
(worker/attempt.py). A run whose record moved on (its lease lapsed and the job was requeued or re-run) stops
at its next step or before its terminal write, having written nothing: "superseded". Its uploads go to
keys of its own attempt, so they never touch another run's video either.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import torch
from rq.timeouts import JobTimeoutException

from m4v_core import JobError, JobMetrics, JobRecord, JobResult, JobStore, failpoints
from m4v_core.store import JobNotFoundError
from m4v_core.throughput import drop_job_flops
from model.pipeline_types import DecodedChunk, GenerationRequest, GenerationResult
from worker.attempt import Attempt, AttemptLostError, new_attempt_id
from worker.context import JobContext, current_context
from worker.encode import encode_mp4, encode_thumbnail
from worker.eta import JobEta, restore_job_flops
from worker.eta_error import EtaErrors
from worker.faults import oom_error
from worker.job_results import JobResults, seconds_between
from worker.job_view import client_view
from worker.preview import PreviewPublisher
from worker.progress import JobCanceledError, JobTimedOutError, ProgressReporter
from worker.shutdown import DrainRequestedError, StepGate, requeue_drained
from worker.storage import StorageError

log = logging.getLogger(__name__)

WEBHOOK_FOR_STATUS = {
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "timed_out": "failed",
}


def run_job(job_id: str) -> str:
    """rq entry point. Returns the final status (or "skipped" if the job was not queued)."""
    return JobRun(current_context(), job_id).run()


@dataclass
class JobRun:
    ctx: JobContext
    job_id: str
    chunks: list[np.ndarray] = field(default_factory=list)
    eta: JobEta | None = None
    preview: PreviewPublisher | None = None
    attempt: Attempt | None = None  # set once this run has started the job
    results: JobResults = field(init=False)

    def __post_init__(self) -> None:
        self.results = JobResults(self.ctx)

    @property
    def store(self) -> JobStore:
        return self.ctx.store

    def run(self) -> str:
        job = self.start()
        if job is None:
            return "skipped"
        self.ctx.state.busy_job = job.id
        self.ctx.metrics.busy.set(1)
        try:
            return self._execute(job)
        except AttemptLostError as exc:
            return self._superseded(job, exc)
        except DrainRequestedError as exc:
            max_attempts = self.ctx.settings.max_attempts
            if job.attempts >= max_attempts:  # drains count: a job scaled away again and again cannot loop
                message = f"{exc}; stopped after {job.attempts} of {max_attempts} attempts"
                return self._end(job, "failed", JobError(type="worker_lost", message=message))
            if requeue_drained(self.store, job, str(exc), self.ctx.leases):
                restore_job_flops(self.store.r, self.store.keys.prefix, job, self.store.ttl_s)
                self.eta = None  # queued again: keep the restored estimate (finally would drop it)
            return "requeued"
        except JobCanceledError as exc:
            log.info("job canceled", extra={"job_id": job.id, "reason": str(exc)})
            return self._end(job, "canceled", None, result=self.results.partial(job, self.chunks))
        except (JobTimedOutError, JobTimeoutException) as exc:
            error = JobError(type="timeout", message=str(exc) or "job timed out")
            return self._end(job, "timed_out", error, result=self.results.partial(job, self.chunks))
        except torch.cuda.OutOfMemoryError as exc:
            return self._end(job, "failed", oom_error(exc))
        except StorageError as exc:
            return self._end(job, "failed", JobError(type="upload_failed", message=str(exc)[:500]))
        except ValueError as exc:
            return self._end(job, "failed", JobError(type="invalid_request", message=str(exc)[:500]))
        except Exception as exc:  # noqa: BLE001 - the job boundary: the one place that catches everything
            log.exception("job failed", extra={"job_id": job.id})
            return self._end(
                job, "failed", JobError(type="internal", message=f"{type(exc).__name__}: {exc}"[:500])
            )
        finally:
            if self.eta is not None:
                self.eta.finish()
            self.ctx.state.busy_job = None
            self.ctx.metrics.busy.set(0)
            if self.ctx.leases is not None:
                self.ctx.leases.current = None

    # --- phases ---
    def start(self) -> JobRecord | None:
        """queued -> running with a fresh attempt id, its `running` event and `started` webhook in one
        transaction; None if the job is not queued (or its deadline already passed)."""
        now = datetime.now(UTC)
        attempt_id = new_attempt_id()
        moved = False

        def change(job: JobRecord) -> bool:
            nonlocal moved
            if job.status != "queued":
                return False
            job.status = "running"
            job.started_at = now
            job.attempts += 1
            job.attempt_id = attempt_id
            job.worker = self.ctx.state.name
            moved = True
            return True

        def also(pipe: redis.client.Pipeline, job: JobRecord) -> None:
            event = {"job_id": job.id, "status": "running", "at": now.isoformat(), "worker": job.worker}
            self.store.queue_event(pipe, job.id, "status", event)
            self.ctx.webhooks.queue(pipe, job, "started")
            if self.ctx.leases is not None:
                self.ctx.leases.enter(pipe, job.id, attempt_id)

        failpoints.hit("before_start")  # tests: die with the job registered by rq and the record queued
        try:
            job = self.store.update(self.job_id, change, also=also)
        except JobNotFoundError:
            log.warning("job record missing; skipping", extra={"job_id": self.job_id})
            return None
        if not moved:
            log.info("job not queued; skipping", extra={"job_id": self.job_id, "status": job.status})
            return None
        self.attempt = Attempt(self.store, job.id, attempt_id)
        if job.deadline is not None and now >= job.deadline:
            message = f"deadline {job.deadline.isoformat()} passed before the job started"
            self._end(job, "timed_out", JobError(type="timeout", message=message))
            return None
        if self.ctx.leases is not None:
            self.ctx.leases.current = (job.id, attempt_id)  # the LeaseRenewer thread renews it from now
        return job

    def _execute(self, job: JobRecord) -> str:
        spec = job.spec
        request = GenerationRequest(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            width=spec.width,
            height=spec.height,
            num_frames=spec.num_frames,
            seed=spec.seed,
            guidance_scale=spec.guidance_scale,
            video_guidance_scale=spec.video_guidance_scale,
            first_frame_steps=tuple(spec.first_frame_steps),
            later_frame_steps=tuple(spec.later_frame_steps),
        )
        self.eta = JobEta.for_job(self.ctx, job)
        eta_errors = EtaErrors(self.eta)
        self.preview = PreviewPublisher.for_job(self.ctx, job)
        reporter = ProgressReporter(
            self.store,
            job.id,
            job.deadline,
            spec.preset,
            metrics=self.ctx.metrics,
            webhooks=self.ctx.webhooks,
            eta=eta_errors,
            attempt_id=job.attempt_id,
        )
        result: GenerationResult = self.ctx.pipeline.generate(
            request,
            on_progress=StepGate(reporter, self.ctx.drain, self.ctx.settings.drain_finish_fraction),
            on_chunk=self._chunk,
        )
        began = time.perf_counter()
        video = encode_mp4(result.frames, fps=spec.fps)
        thumbnail = encode_thumbnail(result.frames)
        encode_s = time.perf_counter() - began
        began = time.perf_counter()
        job_result = self.results.upload(job, video.data, thumbnail, partial=False, frames=video.frames)
        upload_s = time.perf_counter() - began
        if self.eta is not None:
            self.eta.record_tail()
        eta_errors.observe(self.ctx.metrics.eta_relative_error, spec.preset)
        metrics = self.results.metrics(job, result, encode_s, upload_s)
        return self._end(job, "succeeded", None, result=job_result, metrics=metrics, gen=result)

    def _chunk(self, chunk: DecodedChunk) -> None:
        self.chunks.append(chunk.frames)
        if self.preview is not None:
            self.preview(chunk)

    # --- terminal ---
    def _end(
        self,
        job: JobRecord,
        status: str,
        error: JobError | None,
        result: JobResult | None = None,
        metrics: JobMetrics | None = None,
        gen: GenerationResult | None = None,
    ) -> str:
        finished = datetime.now(UTC)
        metrics = metrics or job.metrics.model_copy(
            update={"queue_s": seconds_between(job.created_at, job.started_at)}
        )
        # total_s: submission to finish, what the client waited
        metrics = metrics.model_copy(update={"total_s": seconds_between(job.created_at, finished)})
        fields: dict[str, Any] = {
            "finished_at": finished,
            "error": error,
            "metrics": metrics,
            "result": result,
        }
        if status == "succeeded":
            fields["progress"] = job.progress.model_copy(update={"percent": 100.0})
        storage, expiry_s = self.ctx.storage, self.ctx.settings.presign_expiry_s
        prefix = self.store.keys.prefix

        def change(rec: JobRecord) -> None:
            rec.status = status  # type: ignore[assignment]
            for name, value in fields.items():
                setattr(rec, name, value)

        def outbox(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
            # One transaction with the terminal status: the `done` event, the terminal webhook, and the drop
            # of the job's FLOP estimate (every terminal status passes here).
            view = client_view(rec, storage, expiry_s)
            self.store.queue_event(pipe, rec.id, "done", view)
            self.ctx.webhooks.queue(pipe, rec, WEBHOOK_FOR_STATUS[status], data=view)
            drop_job_flops(pipe, prefix, rec.id)
            if self.ctx.leases is not None:
                self.ctx.leases.leave(pipe, rec.id, rec.attempt_id)
            failpoints.hit("before_terminal_write")  # tests: die with the MULTI queued, never sent

        assert self.attempt is not None, "_end before start"
        try:
            final = self.attempt.write(change, outbox)
        except AttemptLostError as exc:
            return self._superseded(job, exc)
        failpoints.hit("after_terminal_write")  # tests: die with the terminal status committed
        self.results.observe(final, gen)
        log.info(
            "job finished", extra={"job_id": job.id, "status": status, "error": error.type if error else None}
        )
        return status

    def _superseded(self, job: JobRecord, exc: AttemptLostError) -> str:
        """This run no longer owns the record: it has written nothing since, and writes nothing more."""
        self.eta = None  # its FLOP estimate now belongs to the run that owns the record
        log.warning("attempt superseded; stopping", extra={"job_id": job.id, "reason": str(exc)})
        return "superseded"
