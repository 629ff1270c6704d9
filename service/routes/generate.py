"""POST /generate: validate, resolve, admit, enqueue."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from m4v_core import GenerateRequest
from service.deps import BaseUrlDep, IdempotencyKeyHeader, OwnerDep, StateDep
from service.jobs import public_view
from service.openapi_errors import AUTHED, errors
from service.schemas import JobOut
from service.submit import submit

router = APIRouter(tags=["generate"])


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "Idempotency-Key replay: the job created by the first request"},
        **errors(*AUTHED, 409, 413),
    },
)
async def generate(
    req: GenerateRequest,
    response: Response,
    state: StateDep,
    owner: OwnerDep,
    base_url: BaseUrlDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    """Queue a job (202). Idempotency-Key: see the header (service/idempotency.py)."""
    submission = await submit(state, req, owner, idempotency_key, base_url)
    out = await run_in_threadpool(public_view, state, submission.job, base_url, own_flops=submission.flops)
    response.status_code = status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK
    response.headers["Location"] = out.status_url
    return out
