"""GET /jobs (the caller's jobs), GET/DELETE /jobs/{id}, GET /jobs/{id}/video and /thumbnail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import RedirectResponse

from m4v_core import JobRecord
from m4v_core.models import JobStatus
from service.deps import BaseUrlDep, OwnerDep, StateDep
from service.errors import InvalidRequestError, VideoNotReadyError
from service.joblist import MEMBER, Order, list_jobs
from service.jobs import cancel_job, load_job, public_view
from service.openapi_errors import AUTHED, errors
from service.schemas import JobListOut, JobOut
from service.state import ServiceState

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=errors(*AUTHED))


@router.get("", response_model=JobListOut, operation_id="list_jobs")
def list_(
    state: StateDep,
    owner: OwnerDep,
    base_url: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    order: Annotated[Order, Query(description="desc: newest first")] = "desc",
    status_: Annotated[
        list[JobStatus] | None, Query(alias="status", description="only jobs in these statuses (repeatable)")
    ] = None,
) -> JobListOut:
    """The caller's jobs (another key's are never listed), newest first by default."""
    if cursor is not None and not MEMBER.match(cursor):
        raise InvalidRequestError.from_fields([("cursor", "not a next_cursor this API returned")])
    statuses = frozenset(status_) if status_ else None
    page = list_jobs(state.redis, state.store.keys, owner, limit, cursor, order, statuses)
    return JobListOut(
        data=[public_view(state, job, base_url) for job in page.jobs],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{id}", response_model=JobOut, operation_id="get_job", responses=errors(404))
def get_job(id: str, state: StateDep, owner: OwnerDep, base_url: BaseUrlDep) -> JobOut:  # noqa: A002
    return public_view(state, load_job(state, id, owner), base_url)


@router.delete(
    "/{id}",
    response_model=JobOut,
    operation_id="cancel_job",
    responses={202: {"model": JobOut, "description": "stop requested"}, **errors(404)},
)
def cancel(id: str, response: Response, state: StateDep, owner: OwnerDep, base_url: BaseUrlDep) -> JobOut:  # noqa: A002
    outcome = cancel_job(state, load_job(state, id, owner), base_url)
    response.status_code = status.HTTP_202_ACCEPTED if outcome.accepted else status.HTTP_200_OK
    return public_view(state, outcome.job, base_url)


@router.get(
    "/{id}/video",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    operation_id="get_job_video",
    responses=errors(404, 409),
)
def video(id: str, state: StateDep, owner: OwnerDep) -> RedirectResponse:  # noqa: A002
    """A 302 to a fresh presigned URL of the MP4; 409 while the job has none."""
    job = load_job(state, id, owner)
    return _presigned_redirect(state, job, job.result.video_key if job.result else None, "video")


@router.get(
    "/{id}/thumbnail",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    operation_id="get_job_thumbnail",
    responses=errors(404, 409),
)
def thumbnail(id: str, state: StateDep, owner: OwnerDep) -> RedirectResponse:  # noqa: A002
    """A 302 to a fresh presigned URL of the JPEG thumbnail; 409 while the job has none."""
    job = load_job(state, id, owner)
    return _presigned_redirect(state, job, job.result.thumbnail_key if job.result else None, "thumbnail")


def _presigned_redirect(state: ServiceState, job: JobRecord, key: str | None, what: str) -> RedirectResponse:
    """A 302 to a fresh presigned URL of `key`; 409 naming `what` while the job has none."""
    if key is None:
        raise VideoNotReadyError(
            f"job {job.id} has no {what}: status is {job.status}", details={"status": job.status}
        )
    return RedirectResponse(state.presigner.url(key), status_code=status.HTTP_302_FOUND)
