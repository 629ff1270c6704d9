"""GET/DELETE /jobs/{id} and GET /jobs/{id}/video."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import RedirectResponse

from service.deps import BaseUrlDep, OwnerDep, StateDep
from service.errors import VideoNotReadyError
from service.jobs import cancel_job, load_job, public_view
from service.schemas import ErrorOut, JobOut

router = APIRouter(
    prefix="/jobs", tags=["jobs"], responses={404: {"model": ErrorOut}, 503: {"model": ErrorOut}}
)


@router.get("/{id}", response_model=JobOut)
def get_job(id: str, state: StateDep, owner: OwnerDep, base_url: BaseUrlDep) -> JobOut:  # noqa: A002
    return public_view(state, load_job(state, id, owner), base_url)


@router.delete(
    "/{id}", response_model=JobOut, responses={202: {"model": JobOut, "description": "stop requested"}}
)
def cancel(id: str, response: Response, state: StateDep, owner: OwnerDep, base_url: BaseUrlDep) -> JobOut:  # noqa: A002
    outcome = cancel_job(state, load_job(state, id, owner), base_url)
    response.status_code = status.HTTP_202_ACCEPTED if outcome.accepted else status.HTTP_200_OK
    return public_view(state, outcome.job, base_url)


@router.get("/{id}/video", status_code=status.HTTP_302_FOUND, response_class=RedirectResponse)
def video(id: str, state: StateDep, owner: OwnerDep) -> RedirectResponse:  # noqa: A002
    job = load_job(state, id, owner)
    if job.result is None:
        raise VideoNotReadyError(
            f"job {id} has no video: status is {job.status}", details={"status": job.status}
        )
    return RedirectResponse(state.presigner.url(job.result.video_key), status_code=status.HTTP_302_FOUND)
