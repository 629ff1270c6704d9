"""/v1/videos <-> our jobs: a create body becomes a GenerateRequest, a JobRecord becomes a video object."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from m4v_core import GenerateRequest, JobRecord
from model.config import ModelConfig
from service.errors import InvalidRequestError
from service.video_schemas import VideoCreate, VideoError, VideoOut, VideoStatus

STATUS: dict[str, VideoStatus] = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "timed_out": "failed",
    "canceled": "failed",
}
SIZE = re.compile(r"^(\d{1,5})[xX](\d{1,5})$")
PASSED = ("prompt", "negative_prompt", "width", "height", "num_frames", "fps", "seed", "guidance_scale")
FORM_KEY = re.compile(r"^(\w+)\[(\w*)\]$")


def parse_create(raw: dict[str, Any]) -> VideoCreate:
    """The create body, or 422 naming the field."""
    try:
        return VideoCreate.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, {}) from None


def form_to_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Multipart fields to a body: a[b]=v nests, a[]=v appends, extra_params may also be a JSON object."""
    body: dict[str, Any] = {}
    for key, value in items:
        nested = FORM_KEY.match(key)
        if nested is None:
            body[key] = value
        elif nested.group(2):
            body.setdefault(nested.group(1), {})[nested.group(2)] = value
        else:
            body.setdefault(nested.group(1), []).append(value)
    extra = body.get("extra_params")
    if isinstance(extra, str):
        try:
            body["extra_params"] = json.loads(extra)
        except ValueError:
            raise InvalidRequestError.from_fields([("extra_params", "not a JSON object")]) from None
    return body


def to_generate_request(body: VideoCreate, cfg: ModelConfig) -> tuple[GenerateRequest, dict[str, str]]:
    """Our request, and the names our fields had in the body (for errors found later, e.g. size -> width)."""
    problems: list[tuple[str, str]] = []
    names: dict[str, str] = {}
    if body.input_reference is not None:
        problems.append(("input_reference", "image-to-video is not supported by this server"))
    if body.model is not None and body.model != cfg.name:
        problems.append(("model", f"{body.model!r} is not served here; this server serves {cfg.name!r}"))
    fields: dict[str, Any] = {k: getattr(body, k) for k in PASSED if getattr(body, k) is not None}
    if body.size is not None:
        match = SIZE.match(body.size.strip())
        if match is None:
            problems.append(("size", f"{body.size!r} is not WIDTHxHEIGHT, e.g. 1280x768"))
        elif "width" in fields or "height" in fields:
            problems.append(("size", "give size or width/height, not both"))
        else:
            fields.update(width=int(match.group(1)), height=int(match.group(2)))
            names.update(width="size", height="size")
    if body.seconds is not None:
        fields["duration_s"] = body.seconds
        names["duration_s"] = "seconds"
    if body.num_inference_steps is not None:
        per_stage = max(1, round(body.num_inference_steps / cfg.sampler.num_stages))
        for name in ("first_frame_steps", "later_frame_steps"):
            fields[name] = [per_stage] * cfg.sampler.num_stages
            names[name] = "num_inference_steps"
    for key, value in (body.extra_params or {}).items():
        if key in fields or key in ("prompt",):
            problems.append((f"extra_params.{key}", "already given as a top-level field"))
        elif key not in GenerateRequest.model_fields:
            problems.append(
                (f"extra_params.{key}", "not a request field (GET /openapi.json: GenerateRequest)")
            )
        else:
            fields[key] = value
            names[key] = f"extra_params.{key}"
    if problems:
        raise InvalidRequestError.from_fields(problems)
    try:
        return GenerateRequest.model_validate(fields), names
    except ValidationError as exc:
        raise _invalid(exc, names) from None


def renamed(error: InvalidRequestError, names: dict[str, str]) -> InvalidRequestError:
    """A native validation error with its fields named as the /v1 body named them."""
    if not isinstance(error.details, list):
        return error
    problems = [(names.get(d["field"], d["field"]), d["message"]) for d in error.details]
    return InvalidRequestError.from_fields(problems)


def _invalid(exc: ValidationError, names: dict[str, str]) -> InvalidRequestError:
    problems = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        field = ".".join(loc) or "body"
        if loc:
            field = ".".join([names.get(loc[0], loc[0]), *loc[1:]])
        problems.append((field, str(e.get("msg", "invalid"))))
    return InvalidRequestError.from_fields(problems)


def to_video(job: JobRecord, ttl_s: int) -> VideoOut:
    status = STATUS[job.status]
    percent = 100 if status == "completed" else int(job.progress.percent)
    error = None
    if job.status == "canceled":
        error = VideoError(code="canceled", message="the job was canceled")
    elif job.error is not None:
        error = VideoError(code=job.error.type, message=job.error.message)
    finished = int(job.finished_at.timestamp()) if job.finished_at else None
    spec = job.spec
    return VideoOut(
        id=job.id,
        status=status,
        progress=max(0, min(100, percent)),
        created_at=int(job.created_at.timestamp()),
        completed_at=finished,
        expires_at=finished + ttl_s if finished is not None else None,
        error=error,
        model=spec.preset,
        prompt=spec.prompt,
        seconds=f"{round(spec.num_frames / spec.fps, 3):g}",
        size=f"{spec.width}x{spec.height}",
    )
