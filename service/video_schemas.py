"""The OpenAI-style /v1/videos wire format (the shape of vLLM-Omni, SGLang-Diffusion, Dynamo and the `openai`
SDK's `client.videos`): the create body, the video object, its list and delete answers, and its error."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]


class VideoCreate(BaseModel):
    """POST /v1/videos, as JSON or multipart form fields (nested form keys like extra_params[seed] are
    understood). Fields not named here go in extra_params: any field of POST /generate."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what the video shows")
    model: str | None = Field(None, description="the served preset (GET /info); default: it")
    seconds: float | None = Field(
        None, gt=0, description='length in seconds, e.g. "4" (rounded to a valid count)'
    )
    size: str | None = Field(None, description='"WIDTHxHEIGHT", one of the preset\'s resolutions')
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    num_inference_steps: int | None = Field(
        None, ge=1, le=300, description="total sampler steps, spread evenly over the pyramid's stages"
    )
    extra_params: dict[str, Any] | None = Field(
        None, description="more POST /generate fields: priority, webhook_url, first_frame_steps, ..."
    )
    input_reference: Any = Field(None, description="image-to-video: not supported (422)")


class VideoError(BaseModel):
    code: str
    message: str


class VideoOut(BaseModel):
    id: str
    object: Literal["video"] = "video"
    status: VideoStatus
    progress: int = Field(description="0-100")
    created_at: int = Field(description="unix seconds")
    completed_at: int | None = None
    expires_at: int | None = Field(None, description="unix seconds when the video and its record are deleted")
    error: VideoError | None = None
    model: str
    prompt: str
    seconds: str
    size: str
    remixed_from_video_id: str | None = None


class VideoListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoOut]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class VideoDeletedOut(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorOut(BaseModel):
    error: OpenAIErrorDetail
