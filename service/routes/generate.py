"""POST /generate: validate, resolve, admit, enqueue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from m4v_core import GenerateRequest
from service.deps import BaseUrlDep, OwnerDep, StateDep
from service.jobs import public_view
from service.openapi_errors import AUTHED, errors
from service.schemas import JobOut
from service.submit import submit

router = APIRouter(tags=["generate"])

IDEMPOTENCY_KEY_MAX = 255


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "Idempotency-Key replay: the job created by the first request"},
        **errors(*AUTHED, 409, 413),
    },
)
def generate(
    req: GenerateRequest,
    response: Response,
    state: StateDep,
    owner: OwnerDep,
    base_url: BaseUrlDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)
    ] = None,
) -> JobOut:
    submission = submit(state, req, owner, idempotency_key, base_url)
    out = public_view(state, submission.job, base_url, own_flops=submission.flops)
    response.status_code = status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK
    response.headers["Location"] = out.status_url
    return out
