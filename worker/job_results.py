"""What a job leaves behind: its video in S3 (full or partial), its metrics, and the Prometheus series.

JobRun (worker/jobs.py) decides when; JobResults does the work, so the orchestration stays readable.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from m4v_core import JobMetrics, JobRecord, JobResult, failpoints
from model.pipeline_types import GenerationResult
from worker.encode import encode_mp4, encode_thumbnail
from worker.spool import SpooledObject
from worker.storage import StorageError, video_keys

if TYPE_CHECKING:
    from worker.context import JobContext

log = logging.getLogger(__name__)


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


class JobResults:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def upload(self, job: JobRecord, mp4: bytes, jpg: bytes, partial: bool, frames: int) -> JobResult:
        """Video, thumbnail and metadata to S3, under keys of this run's attempt; a video that S3 refuses
        (full or partial) goes to the spool, to become the record's result once uploaded (worker/spool.py)."""
        keys = video_keys(job.id, job.created_at, job.attempt_id)
        result = JobResult(
            video_key=keys.video,
            thumbnail_key=keys.thumbnail,
            bytes=len(mp4),
            width=job.spec.width,
            height=job.spec.height,
            frames=frames,
            fps=job.spec.fps,
            seed=job.spec.seed,
            sha256=hashlib.sha256(mp4).hexdigest(),
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
                self.ctx.storage.upload(obj.key, obj.data, obj.content_type)
                if obj is objects[0]:
                    failpoints.hit("mid_upload")  # tests: die with the MP4 in S3 and its thumbnail not
        except StorageError:
            if self.ctx.spool is not None:
                self.ctx.spool.keep(job.id, objects, result, job.attempt_id)
            raise
        return result

    def partial(self, job: JobRecord, chunks: list[np.ndarray]) -> JobResult | None:
        """Frames decoded before a cancel/timeout, uploaded as a partial video; None if there are none."""
        if not chunks:
            return None
        frames = np.concatenate(chunks)  # (n, H, W, 3)
        try:
            video = encode_mp4(frames, fps=job.spec.fps)
            return self.upload(job, video.data, encode_thumbnail(frames), partial=True, frames=video.frames)
        except StorageError:
            log.warning("partial video upload failed", extra={"job_id": job.id}, exc_info=True)
            return None

    @staticmethod
    def metrics(job: JobRecord, gen: GenerationResult, encode_s: float, upload_s: float) -> JobMetrics:
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

    def observe(self, job: JobRecord, gen: GenerationResult | None) -> None:
        """Prometheus: the job's status, phase times, FLOPs and memory."""
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
