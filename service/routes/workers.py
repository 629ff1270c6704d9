"""GET /workers: the fleet as its heartbeats describe it."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pydantic import ValidationError

from service.auth import current_owner
from service.deps import StateDep
from service.schemas import ErrorOut, WorkerOut, WorkersOut
from worker.contract.store import live_worker_keys

router = APIRouter(tags=["workers"])
log = logging.getLogger(__name__)


def _parse(key: str, raw: bytes | str | None, now: datetime) -> WorkerOut | None:
    if raw is None:  # expired between the index read and MGET
        return None
    try:
        fields = json.loads(raw)
        fields.setdefault("name", key.rsplit(":", 1)[-1])
        worker = WorkerOut.model_validate(fields)
    except (ValueError, TypeError, AttributeError, ValidationError) as exc:
        log.warning("unreadable heartbeat", extra={"key": key, "error": str(exc)})
        return None
    if worker.heartbeat_at is not None:
        beat = worker.heartbeat_at if worker.heartbeat_at.tzinfo else worker.heartbeat_at.replace(tzinfo=UTC)
        worker.heartbeat_age_s = round(max(0.0, (now - beat).total_seconds()), 3)
    return worker


@router.get(
    "/workers",
    response_model=WorkersOut,
    responses={503: {"model": ErrorOut}},
    dependencies=[Depends(current_owner)],  # any valid key; fleet details are not public
)
def workers(state: StateDep) -> WorkersOut:
    keys = live_worker_keys(state.redis, state.store.keys)
    raws = state.redis.mget(keys) if keys else []
    now = datetime.now(UTC)
    found = [w for w in (_parse(k, r, now) for k, r in zip(keys, raws, strict=True)) if w is not None]
    return WorkersOut(
        workers=found,
        count=len(found),
        ready=sum(w.model_loaded for w in found),
        busy=sum(w.busy_job is not None for w in found),
    )
