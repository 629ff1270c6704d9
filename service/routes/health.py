"""/healthz (the process answers) and /readyz (Redis answers; deliberately not tied to workers,
or a fleet scaled to zero could never be woken by traffic)."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import StateDep
from service.schemas import ErrorOut, HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": ErrorOut}})
def readyz(state: StateDep) -> HealthOut:
    state.redis.ping()  # redis.ConnectionError -> 503 in service.errors
    return HealthOut(status="ready", preset=state.preset.name)
