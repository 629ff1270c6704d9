"""run_job(job_id): the rq job function, and the one catch-all of the worker (the job boundary).

queued -> running -> text -> sampler (progress every step) -> decode -> MP4 -> S3 -> succeeded, with a
"done" event and the matching webhook for every terminal status. Errors map to error.type:
  torch.cuda.OutOfMemoryError -> out_of_memory (CUDA cache freed, the worker keeps serving)
  StorageError                -> upload_failed
  ValueError (bad spec)       -> invalid_request
  deadline / rq job timeout   -> status timed_out, error.type timeout
  cancel                      -> status canceled
  anything else               -> internal
Handled errors are never re-raised into rq (rq's job then finishes normally; the JobRecord holds the truth).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import torch
from rq.timeouts import JobTimeoutException

from model.pipeline_types import DecodedChunk, GenerationRequest, GenerationResult
from worker.contract import JobError, JobMetrics, JobRecord, JobResult, JobStore, Settings
from worker.contract.store import JobNotFoundError
from worker.contract.throughput import drop_job_flops
from worker.encode import encode_mp4, encode_thumbnail
from worker.eta import JobEta, restore_job_flops
from worker.eta_error import EtaErrors
from worker.faults import oom_error
from worker.heartbeat import WorkerState
from worker.metrics import WorkerMetrics
from worker.preview import PreviewPublisher
from worker.progress import JobCanceledError, JobTimedOutError, ProgressReporter
from worker.shutdown import DrainRequestedError, StepGate, requeue_drained
from worker.spool import Spool, SpooledObject
from worker.storage import Storage, StorageError, video_keys
from worker.webhooks import WebhookSender, job_view

log = logging.getLogger(__name__)

WEBHOOK_FOR_STATUS = {
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "timed_out": "failed",
}


@dataclass
class JobContext:
    """Everything a job needs, built once per worker process (worker/main.py)."""

    settings: Settings
    store: JobStore
    pipeline: Any  # model.pipeline.VideoPipeline
    storage: Storage
    webhooks: WebhookSender
    metrics: WorkerMetrics
    state: WorkerState
    drain: threading.Event = field(default_factory=threading.Event)  # SIGTERM: stop at a step boundary
    spool: Spool | None = None  # where finished videos go when S3 refuses them (worker/spool.py)


_context: ContextVar[JobContext] = ContextVar("m4v_job_context")


@contextlib.contextmanager
def use_context(ctx: JobContext) -> Iterator[None]:
    token = _context.set(ctx)
    try:
        yield
    finally:
        _context.reset(token)


def run_job(job_id: str) -> str:
    """rq entry point. Returns the final status (or "skipped" if the job was not queued)."""
    try:
        ctx = _context.get()
    except LookupError:
        raise RuntimeError("run_job must run inside an M4VWorker (worker/rqworker.py)") from None
    return JobRun(ctx, job_id).run()


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


@dataclass
class JobRun:
    ctx: JobContext
    job_id: str
    chunks: list[np.ndarray] = field(default_factory=list)
    eta: JobEta | None = None
    preview: PreviewPublisher | None = None

    @property
    def store(self) -> JobStore:
        return self.ctx.store

    def run(self) -> str:
        job = self._start()
        if job is None:
            return "skipped"
        self.ctx.state.busy_job = job.id
        self.ctx.metrics.busy.set(1)
        try:
            return self._execute(job)
        except DrainRequestedError as exc:
            if requeue_drained(self.store, job, str(exc)):
                restore_job_flops(self.store.r, self.store.keys.prefix, job, self.store.ttl_s)
                self.eta = None  # queued again: keep the restored estimate (finally would drop it)
            return "requeued"
        except JobCanceledError as exc:
            log.info("job canceled", extra={"job_id": job.id, "reason": str(exc)})
            return self._end(job, "canceled", None, result=self._partial_result(job))
        except (JobTimedOutError, JobTimeoutException) as exc:
            error = JobError(type="timeout", message=str(exc) or "job timed out")
            return self._end(job, "timed_out", error, result=self._partial_result(job))
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

    # --- phases ---
    def _start(self) -> JobRecord | None:
        now = datetime.now(UTC)
        moved = False

        def change(job: JobRecord) -> bool:
            nonlocal moved
            if job.status != "queued":
                return False
            job.status = "running"
            job.started_at = now
            job.attempts += 1
            job.worker = self.ctx.state.name
            moved = True
            return True

        try:
            job = self.store.update(self.job_id, change)
        except JobNotFoundError:
            log.warning("job record missing; skipping", extra={"job_id": self.job_id})
            return None
        if not moved:
            log.info("job not queued; skipping", extra={"job_id": self.job_id, "status": job.status})
            return None
        at = now.isoformat()
        self.store.append_event(
            job.id, "status", {"job_id": job.id, "status": "running", "at": at, "worker": job.worker}
        )
        self.ctx.webhooks.submit(job, "started")
        if job.deadline is not None and now >= job.deadline:
            message = f"deadline {job.deadline.isoformat()} passed before the job started"
            self._end(job, "timed_out", JobError(type="timeout", message=message))
            return None
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
        job_result = self._upload(job, video.data, thumbnail, partial=False, frames=video.frames)
        upload_s = time.perf_counter() - began
        if self.eta is not None:
            self.eta.record_tail()
        eta_errors.observe(self.ctx.metrics.eta_relative_error, spec.preset)
        metrics = self._metrics(job, result, encode_s, upload_s)
        return self._end(job, "succeeded", None, result=job_result, metrics=metrics, gen=result)

    def _chunk(self, chunk: DecodedChunk) -> None:
        self.chunks.append(chunk.frames)
        if self.preview is not None:
            self.preview(chunk)

    def _upload(self, job: JobRecord, mp4: bytes, jpg: bytes, partial: bool, frames: int) -> JobResult:
        keys = video_keys(job.id, job.created_at)
        storage = self.ctx.storage
        sha256 = hashlib.sha256(mp4).hexdigest()
        result = JobResult(
            video_key=keys.video,
            thumbnail_key=keys.thumbnail,
            bytes=len(mp4),
            width=job.spec.width,
            height=job.spec.height,
            frames=frames,
            fps=job.spec.fps,
            seed=job.spec.seed,
            sha256=sha256,
            partial=partial,
            frames_done=frames,
        )
        meta = {
            "id": job.id,
            "created_at": job.created_at.isoformat(),
            "spec": job.spec.model_dump(mode="json"),
            "result": result.model_dump(mode="json", exclude={"video_url", "expires_at", "thumbnail_url"}),
        }
        objects = [
            SpooledObject(keys.video, mp4, "video/mp4"),
            SpooledObject(keys.thumbnail, jpg, "image/jpeg"),
            SpooledObject(keys.metadata, json.dumps(meta, indent=2).encode(), "application/json"),
        ]
        try:
            for obj in objects:
                storage.upload(obj.key, obj.data, obj.content_type)
        except StorageError:
            if self.ctx.spool is not None and not partial:
                self.ctx.spool.keep(job.id, objects, result)
            raise
        return result

    def _partial_result(self, job: JobRecord) -> JobResult | None:
        """Frames decoded before a cancel/timeout, uploaded as a partial video; None if there are none."""
        if not self.chunks:
            return None
        frames = np.concatenate(self.chunks)  # (n, H, W, 3)
        try:
            video = encode_mp4(frames, fps=job.spec.fps)
            return self._upload(job, video.data, encode_thumbnail(frames), partial=True, frames=video.frames)
        except StorageError:
            log.warning("partial video upload failed", extra={"job_id": job.id}, exc_info=True)
            return None

    def _metrics(self, job: JobRecord, gen: GenerationResult, encode_s: float, upload_s: float) -> JobMetrics:
        t = gen.timings
        compute_s = t.text_s + t.sampling_s + t.decode_s
        flops = gen.total_flops
        return JobMetrics(
            queue_s=seconds_between(job.created_at, job.started_at),
            text_s=t.text_s,
            sampling_s=t.sampling_s,
            decode_s=t.decode_s,
            encode_s=encode_s,
            upload_s=upload_s,
            flops=flops or None,
            tflops_per_s=flops / compute_s / 1e12 if flops and compute_s > 0 else None,
            peak_gpu_mem_bytes=gen.peak_memory_bytes or None,
        )

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
        final = self.store.transition(job.id, ["running"], status, **fields)
        if final is None:
            log.warning("job left running before the worker finished it", extra={"job_id": job.id})
            return self.store.get(job.id).status
        # Every terminal status passes here, also a deadline hit before the JobEta exists: drop the FLOPs.
        drop_job_flops(self.store.r, self.store.keys.prefix, job.id)
        view = self._view_with_urls(final)
        self.store.append_event(job.id, "done", view)
        self.ctx.webhooks.submit(final, WEBHOOK_FOR_STATUS[status], data=view)
        self._observe(final, gen)
        log.info(
            "job finished", extra={"job_id": job.id, "status": status, "error": error.type if error else None}
        )
        return status

    def _view_with_urls(self, job: JobRecord) -> dict[str, Any]:
        """The job as the API shows it, with fresh presigned URLs for the video and thumbnail."""
        if job.result is None:
            return job_view(job)
        expiry = self.ctx.settings.presign_expiry_s
        urls = {
            "video_url": self.ctx.storage.presign_get(job.result.video_key, expiry),
            "expires_at": datetime.now(UTC) + timedelta(seconds=expiry),
            "thumbnail_url": (
                self.ctx.storage.presign_get(job.result.thumbnail_key, expiry)
                if job.result.thumbnail_key
                else None
            ),
        }
        return job_view(job.model_copy(update={"result": job.result.model_copy(update=urls)}))

    def _observe(self, job: JobRecord, gen: GenerationResult | None) -> None:
        m, preset = self.ctx.metrics, job.spec.preset
        m.jobs.labels(status=job.status).inc()
        phases = {
            "queue": job.metrics.queue_s,
            "text": job.metrics.text_s,
            "sampling": job.metrics.sampling_s,
            "decode": job.metrics.decode_s,
            "encode": job.metrics.encode_s,
            "upload": job.metrics.upload_s,
            "total": job.metrics.total_s,
        }
        m.observe_phases(preset, f"{job.spec.width}x{job.spec.height}", phases)
        if gen is not None:
            m.add_flops(preset, gen.flops)
            if job.metrics.tflops_per_s is not None:
                m.achieved_tflops.labels(preset=preset).set(job.metrics.tflops_per_s)
            if gen.peak_memory_bytes:
                m.gpu_memory_peak.set(gen.peak_memory_bytes)
