"""GET /info: what this server serves and accepts, so clients need not learn valid requests from 422s."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, Field

from m4v_core import ApiSettings, GenerateRequest
from model.config import ModelConfig


class Size(BaseModel):
    width: int
    height: int


class Bounds(BaseModel):
    default: float | list[int]
    min: float
    max: float


class PresetInfo(BaseModel):
    name: str
    resolutions: list[Size] = Field(description="the sizes accepted; the first is the default")
    frame_multiple: int = Field(description="num_frames must be frame_multiple * k + 1")
    default_frames: int
    max_frames: int
    default_fps: int
    fps: Bounds
    stages: int = Field(description="pyramid stages: first_frame_steps/later_frame_steps have this many")
    first_frame_steps: Bounds
    later_frame_steps: Bounds
    guidance_scale: Bounds
    video_guidance_scale: Bounds


class Limits(BaseModel):
    max_prompt_chars: int
    max_body_bytes: int
    max_queue_depth: int
    max_timeout_s: float
    rate_limit_requests: int = Field(description="per rate_limit_window_s per key; 0 = no limit")
    rate_limit_window_s: int
    job_ttl_s: int = Field(description="how long jobs and their videos are kept after they finish")
    presign_expiry_s: int


class InfoOut(BaseModel):
    version: str
    presets: list[PresetInfo] = Field(description="the presets served (one per deployment today)")
    limits: Limits
    auth_mode: str
    priorities: list[str]
    webhook_events: list[str]


def _bounds(name: str, default: float | list[int]) -> Bounds:
    """The schema's bounds of a GenerateRequest field."""
    meta = GenerateRequest.model_fields[name].metadata
    low = next(getattr(m, "ge", None) for m in meta if getattr(m, "ge", None) is not None)
    high = next(getattr(m, "le", None) for m in meta if getattr(m, "le", None) is not None)
    return Bounds(default=default, min=low, max=high)


def package_version() -> str:
    try:
        return version("m4v-serve")
    except PackageNotFoundError:
        return "unknown"


def server_info(cfg: ModelConfig, settings: ApiSettings) -> InfoOut:
    smp = cfg.sampler
    steps = {"min": 1, "max": 100}  # per stage (m4v_core.models.check_against_preset)
    preset = PresetInfo(
        name=cfg.name,
        resolutions=[Size(width=w, height=h) for w, h in cfg.resolutions],
        frame_multiple=cfg.vae.temporal_factor,
        default_frames=cfg.default_frames,
        max_frames=cfg.max_frames,
        default_fps=cfg.default_fps,
        fps=_bounds("fps", cfg.default_fps),
        stages=smp.num_stages,
        first_frame_steps=Bounds(default=list(smp.first_frame_steps), **steps),
        later_frame_steps=Bounds(default=list(smp.later_frame_steps), **steps),
        guidance_scale=_bounds("guidance_scale", smp.guidance_scale),
        video_guidance_scale=_bounds("video_guidance_scale", smp.video_guidance_scale),
    )
    timeout_meta = GenerateRequest.model_fields["timeout_s"].metadata
    max_timeout = next(getattr(m, "le", None) for m in timeout_meta if getattr(m, "le", None) is not None)
    limits = Limits(
        max_prompt_chars=settings.max_prompt_chars,
        max_body_bytes=settings.max_body_bytes,
        max_queue_depth=settings.max_queue_depth,
        max_timeout_s=max_timeout,
        rate_limit_requests=settings.rate_limit_requests,
        rate_limit_window_s=settings.rate_limit_window_s,
        job_ttl_s=settings.job_ttl_s,
        presign_expiry_s=settings.presign_expiry_s,
    )
    return InfoOut(
        version=package_version(),
        presets=[preset],
        limits=limits,
        auth_mode=settings.auth_mode,
        priorities=["low", "normal", "high"],
        webhook_events=["started", "progress", "completed", "failed", "canceled"],
    )
