"""GET /info: presets, sizes, frame rule, step and guidance defaults and bounds, limits, version."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.auth import current_owner
from service.deps import StateDep
from service.info import InfoOut, server_info
from service.openapi_errors import errors

router = APIRouter(tags=["info"])


@router.get(
    "/info",
    response_model=InfoOut,
    operation_id="get_info",
    responses=errors(401, 429, 503),
    dependencies=[Depends(current_owner)],  # any valid key, like /workers
)
def info(state: StateDep) -> InfoOut:
    return server_info(state.preset, state.settings)
