"""Annotated dependencies: routes declare what they need, the app state provides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.auth import current_owner
from service.state import ServiceState


# Plain lookups, declared async so FastAPI calls them on the event loop: a sync dependency costs a
# threadpool hop per request.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.m4v
    return state


async def get_base_url(request: Request) -> str:
    """Base of the links in responses: Settings.public_url behind a proxy, else the request's own base."""
    state: ServiceState = request.app.state.m4v
    return state.settings.public_url or str(request.base_url)


StateDep = Annotated[ServiceState, Depends(get_state)]
OwnerDep = Annotated[str | None, Depends(current_owner)]
BaseUrlDep = Annotated[str, Depends(get_base_url)]

IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_KEY_DOC = (
    "Makes retries safe: the same key and body return the job the first request created (200), for as long"
    " as the job exists; another body under the key is 409. A retry while the first request is still"
    " storing its job waits for it; a key whose first request died before storing a job is free again"
    " within 10 s. A request that failed after its job was stored (timeout, 503) still stored it: retry"
    " with the same key to get it rather than a second job."
)
# POST /generate and POST /v1/videos: the same header, the same guarantee (service/idempotency.py)
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description=IDEMPOTENCY_KEY_DOC,
    ),
]
