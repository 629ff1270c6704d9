"""GET /workers: the fleet as its heartbeats describe it."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends

from m4v_core.heartbeat import Heartbeat, live_heartbeats
from service.auth import current_owner
from service.deps import StateDep
from service.openapi_errors import errors
from service.schemas import WorkerOut, WorkersOut

router = APIRouter(tags=["workers"])


def _out(beat: Heartbeat, now: datetime) -> WorkerOut:
    age = beat.age_s(now)
    return WorkerOut(
        **beat.model_dump(include=set(WorkerOut.model_fields)),
        heartbeat_age_s=round(age, 3) if age is not None else None,
    )


@router.get(
    "/workers",
    response_model=WorkersOut,
    responses=errors(401, 429, 503),
    dependencies=[Depends(current_owner)],  # any valid key; fleet details are not public
)
def workers(state: StateDep) -> WorkersOut:
    now = datetime.now(UTC)
    found = [_out(beat, now) for beat in live_heartbeats(state.redis, state.store.keys)]
    return WorkersOut(
        workers=found,
        count=len(found),
        ready=sum(w.model_loaded for w in found),
        busy=sum(w.busy_job is not None for w in found),
    )
