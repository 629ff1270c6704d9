"""Pydantic models of a job: the request a client sends, the spec the worker runs, the record both update."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from model.config import ModelConfig

Priority = Literal["low", "normal", "high"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")  # dequeue order
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "timed_out"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "timed_out"})
WebhookEvent = Literal["started", "progress", "completed", "failed", "canceled"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("started", "progress", "completed", "failed", "canceled")
MAX_SEED = 2**32 - 1


class GenerateRequest(BaseModel):
    """Body of POST /generate. Bounds here; preset-dependent rules in check_against_preset()."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str | None = Field(default=None, max_length=2000)
    width: int | None = Field(default=None, ge=16, le=4096, description="pixels; default: the preset's")
    height: int | None = Field(default=None, ge=16, le=4096)
    num_frames: int | None = Field(default=None, ge=1, le=241, description="8k+1 (tiny preset: 4k+1)")
    duration_s: float | None = Field(default=None, gt=0, le=60, description="alternative to num_frames")
    fps: int | None = Field(default=None, ge=1, le=60, description="default: the preset's (24 at 768p)")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="random if absent; always returned")
    guidance_scale: float | None = Field(default=None, ge=0, le=30, description="first frame")
    video_guidance_scale: float | None = Field(default=None, ge=0, le=30, description="later frames")
    first_frame_steps: list[int] | None = Field(default=None, description="steps per pyramid stage")
    later_frame_steps: list[int] | None = Field(default=None)
    priority: Priority = "normal"
    webhook_url: HttpUrl | None = None
    webhook_events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    timeout_s: float | None = Field(default=None, gt=0, le=86400, description="deadline from submission")


def check_against_preset(req: GenerateRequest, cfg: ModelConfig) -> list[tuple[str, str]]:
    """Cross-field rules that need the served preset. Returns (field, message) pairs; empty if valid."""
    errors: list[tuple[str, str]] = []
    if (req.width is None) != (req.height is None):
        errors.append(("width", "give both width and height, or neither"))
    elif req.width is not None and (req.width, req.height) not in cfg.resolutions:
        allowed = ", ".join(f"{w}x{h}" for w, h in cfg.resolutions)
        errors.append(
            ("width", f"{req.width}x{req.height} is not served by preset {cfg.name}; use one of {allowed}")
        )
    if req.num_frames is not None and req.duration_s is not None:
        errors.append(("num_frames", "give num_frames or duration_s, not both"))
    tf = cfg.vae.temporal_factor
    frames = resolve_frames(req, cfg)
    if frames is not None and (frames - 1) % tf:
        field = "num_frames" if req.num_frames is not None else "duration_s"
        errors.append((field, f"{frames} frames is not {tf}k+1 (e.g. {1 + tf * ((frames - 1) // tf)})"))
    if frames is not None and frames > cfg.max_frames:
        errors.append(("num_frames", f"{frames} frames exceeds the preset's maximum {cfg.max_frames}"))
    stages = cfg.sampler.num_stages
    for name in ("first_frame_steps", "later_frame_steps"):
        steps = getattr(req, name)
        if steps is not None and (len(steps) != stages or not all(1 <= s <= 100 for s in steps)):
            errors.append((name, f"need {stages} integers in 1..100, got {steps}"))
    return errors


def resolve_frames(req: GenerateRequest, cfg: ModelConfig) -> int | None:
    """num_frames, or duration_s * fps rounded to the nearest valid 8k+1 count; None if neither given."""
    if req.num_frames is not None:
        return req.num_frames
    if req.duration_s is None:
        return None
    tf = cfg.vae.temporal_factor
    fps = req.fps or cfg.default_fps
    return 1 + tf * max(0, round(req.duration_s * fps / tf))


class JobSpec(BaseModel):
    """What the worker runs: the request with every default resolved (the seed included)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    fps: int
    seed: int
    guidance_scale: float
    video_guidance_scale: float
    first_frame_steps: list[int]
    later_frame_steps: list[int]
    preset: str


class JobProgress(BaseModel):
    unit: str = "latent_frame"
    units_done: int = 0
    units_total: int = 0
    stage: int = 0
    step: int = 0
    steps_total: int = 0
    percent: float = 0.0


class PublicJobResult(BaseModel):
    """What clients see of a result (the API's JobResultOut); URLs are presigned when the job is read."""

    video_url: str | None = None
    expires_at: datetime | None = None
    thumbnail_url: str | None = None
    bytes: int
    width: int
    height: int
    frames: int
    fps: int
    seed: int
    sha256: str
    partial: bool = False
    frames_done: int


class JobResult(PublicJobResult):
    """The stored result: the public fields plus the storage keys they are presigned from."""

    video_key: str
    thumbnail_key: str | None = None


class JobMetrics(BaseModel):
    queue_s: float | None = None
    text_s: float | None = None
    sampling_s: float | None = None
    decode_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None
    total_s: float | None = None
    flops: float | None = None
    tflops_per_s: float | None = None
    peak_gpu_mem_bytes: int | None = None


class JobError(BaseModel):
    type: str  # e.g. out_of_memory, upload_failed, timeout, worker_lost, internal
    message: str


class WebhookAttempt(BaseModel):
    event: WebhookEvent
    webhook_id: str
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    ok: bool = False


class JobRecord(BaseModel):
    """The job as stored in Redis; clients see m4v_core.jobview.render_job(record), never the record."""

    id: str
    status: JobStatus = "queued"
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    request: GenerateRequest
    spec: JobSpec
    priority: Priority = "normal"
    owner: str | None = None  # hashed API key id; None in open mode
    progress: JobProgress = Field(default_factory=JobProgress)
    queue_position: int | None = None
    eta_s: float | None = None
    result: JobResult | None = None
    metrics: JobMetrics = Field(default_factory=JobMetrics)
    error: JobError | None = None
    attempts: int = 0
    # The run that owns the record: set by each start of the job, cleared when it goes back to the queue.
    # Every write a worker makes is conditional on it (worker/attempt.py), so a superseded run writes nothing.
    attempt_id: str | None = None
    deadline: datetime | None = None
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)
    worker: str | None = None
    links_base: str | None = None  # the API base URL the job was submitted through (its links point there)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES
