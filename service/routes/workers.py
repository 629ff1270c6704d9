"""GET /workers: the fleet as its heartbeats describe it. A worker's busy_job is shown only to the owner of
that job (another tenant sees the worker busy, with busy_job null): job ids are not handed to others. Open
mode has no tenants and shows them all."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from m4v_core import JobRecord
from m4v_core.heartbeat import Heartbeat, live_heartbeats
from service.deps import OwnerDep, StateDep
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
)
def workers(state: StateDep, owner: OwnerDep) -> WorkersOut:  # any valid key; fleet details are not public
    now = datetime.now(UTC)
    beats = live_heartbeats(state.redis, state.store.keys)
    found = [_out(beat, now) for beat in beats]
    busy = sum(w.busy_job is not None for w in found)
    _hide_others_jobs(state, found, owner)
    return WorkersOut(workers=found, count=len(found), ready=sum(w.model_loaded for w in found), busy=busy)


def _hide_others_jobs(state: StateDep, found: list[WorkerOut], owner: str | None) -> None:
    """busy_job stays only where that job is the caller's own (one MGET of the busy jobs' records)."""
    busy = [w for w in found if w.busy_job is not None]
    if not busy or state.settings.auth_mode != "keys":
        return
    raws = state.redis.mget([state.store.keys.job(w.busy_job) for w in busy if w.busy_job is not None])
    for worker, raw in zip(busy, raws, strict=True):
        if raw is None or JobRecord.model_validate_json(raw).owner != owner:
            worker.busy_job = None
