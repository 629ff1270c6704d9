"""The OpenAI-style surface: POST/GET /v1/videos, GET/DELETE /v1/videos/{id}, GET /v1/videos/{id}/content.

The same jobs, owners and auth as /generate and /jobs (a job made through either surface is visible through
both); errors take this surface's shape (service/errors.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from service.deps import BaseUrlDep, IdempotencyKeyHeader, OwnerDep, StateDep
from service.errors import InvalidRequestError, JobNotFoundError, VideoNotReadyError
from service.job_delete import delete_job
from service.joblist import list_jobs, member
from service.jobs import load_job
from service.openapi_errors import AUTHED, errors
from service.submit import submit
from service.video_convert import form_to_dict, parse_create, renamed, to_generate_request, to_video
from service.video_schemas import OpenAIErrorOut, VideoCreate, VideoDeletedOut, VideoListOut, VideoOut

router = APIRouter(
    prefix="/v1/videos", tags=["videos (OpenAI-style)"], responses=errors(*AUTHED, model=OpenAIErrorOut)
)
NOT_FOUND = errors(404, model=OpenAIErrorOut)
CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": VideoCreate.model_json_schema()},
        "multipart/form-data": {"schema": VideoCreate.model_json_schema()},
    },
}


async def create_body(request: Request) -> VideoCreate:
    """The body as JSON or as multipart form fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        raw: Any = form_to_dict(list(form.multi_items()))
    else:
        try:
            raw = json.loads(await request.body() or b"null")
        except ValueError:
            raise InvalidRequestError.from_fields([("body", "not valid JSON")]) from None
    if not isinstance(raw, dict):
        raise InvalidRequestError.from_fields([("body", "expected a JSON object or form fields")])
    return parse_create(raw)


@router.post(
    "",
    response_model=VideoOut,
    operation_id="create_video",
    openapi_extra={"requestBody": CREATE_BODY},
    responses=errors(409, 413, model=OpenAIErrorOut),
)
async def create_video(
    state: StateDep,
    owner: OwnerDep,  # before the body: a caller without a key gets 401, whatever it sent
    body: Annotated[VideoCreate, Depends(create_body)],
    base_url: BaseUrlDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> VideoOut:
    """Start a video; the same job as POST /generate makes (GET /jobs/{id} shows it too). Idempotency-Key
    works as on POST /generate."""
    req, names = to_generate_request(body, state.preset)
    try:
        submission = await submit(state, req, owner, idempotency_key, base_url)
    except InvalidRequestError as exc:
        raise renamed(exc, names) from None
    return to_video(submission.job, state.settings.job_ttl_s)


@router.get("", response_model=VideoListOut, operation_id="list_videos")
def list_videos(
    state: StateDep,
    owner: OwnerDep,
    after: Annotated[str | None, Query(description="id of the last video of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query(description="by creation time")] = "desc",
) -> VideoListOut:
    """The caller's videos only."""
    cursor = None
    if after is not None:
        try:
            cursor = member(load_job(state, after, owner))
        except JobNotFoundError:
            raise InvalidRequestError.from_fields([("after", f"no video {after!r}")]) from None
    page = list_jobs(state.redis, state.store.keys, owner, limit, cursor, order)
    data = [to_video(job, state.settings.job_ttl_s) for job in page.jobs]
    return VideoListOut(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/{video_id}", response_model=VideoOut, operation_id="retrieve_video", responses=NOT_FOUND)
def retrieve_video(video_id: str, state: StateDep, owner: OwnerDep) -> VideoOut:
    return to_video(load_job(state, video_id, owner), state.settings.job_ttl_s)


@router.delete(
    "/{video_id}", response_model=VideoDeletedOut, operation_id="delete_video", responses=NOT_FOUND
)
def delete_video(video_id: str, state: StateDep, owner: OwnerDep, base_url: BaseUrlDep) -> VideoDeletedOut:
    """Cancels the job if it is queued or running, deletes its stored video, thumbnail and previews and its
    record (a running job's record and partial video once it has stopped, by their expiry)."""
    delete_job(state, load_job(state, video_id, owner), base_url)
    return VideoDeletedOut(id=video_id)


@router.get(
    "/{video_id}/content",
    response_class=StreamingResponse,
    operation_id="download_video_content",
    responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "the MP4 or the JPEG"},
        **errors(404, 409, model=OpenAIErrorOut),
    },
)
def download_content(
    video_id: str,
    state: StateDep,
    owner: OwnerDep,
    variant: Annotated[Literal["video", "thumbnail"], Query()] = "video",
) -> StreamingResponse:
    """The MP4 (or its JPEG thumbnail) streamed through the API: no second origin for the client to reach."""
    job = load_job(state, video_id, owner)
    key = None
    if job.result is not None:
        key = job.result.video_key if variant == "video" else job.result.thumbnail_key
    if key is None:
        raise VideoNotReadyError(
            f"video {video_id} has no {variant}: status is {to_video(job, 0).status}",
            details=[{"field": "variant", "message": f"no {variant} yet"}],
        )
    stored = state.objects.open(key)
    media = "video/mp4" if variant == "video" else "image/jpeg"
    headers = {"Content-Length": str(stored.length)} if stored.length is not None else {}
    return StreamingResponse(stored.body, media_type=media, headers=headers)
