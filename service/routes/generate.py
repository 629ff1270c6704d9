"""POST /generate: validate, resolve, admit, enqueue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from starlette.concurrency import run_in_threadpool

from m4v_core import GenerateRequest
from service.deps import BaseUrlDep, OwnerDep, StateDep
from service.jobs import public_view
from service.openapi_errors import AUTHED, errors
from service.schemas import JobOut
from service.submit import submit

router = APIRouter(tags=["generate"])

IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_DOC = (
    "Makes retries safe: the same key and body return the job the first request created (200), for as long"
    " as the job exists; another body under the key is 409. A retry while the first request is still"
    " storing its job waits for it; a key whose first request died before storing a job is free again"
    " within 10 s. A request that failed after its job was stored (timeout, 503) still stored it: retry"
    " with the same key to get it rather than a second job."
)


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
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX,
            description=IDEMPOTENCY_KEY_DOC,
        ),
    ] = None,
) -> JobOut:
    """Queue a job (202). Idempotency-Key: see the header (service/idempotency.py)."""
    submission = await submit(state, req, owner, idempotency_key, base_url)
    out = await run_in_threadpool(public_view, state, submission.job, base_url, own_flops=submission.flops)
    response.status_code = status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK
    response.headers["Location"] = out.status_url
    return out
