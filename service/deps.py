"""Annotated dependencies: routes declare what they need, the app state provides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
