"""GET /jobs/{id}/events: server-sent events, replayable with Last-Event-ID."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from m4v_core import JobRecord
from service.deps import BaseUrlDep, OwnerDep, StateDep
from service.errors import InvalidRequestError
from service.event_stream import job_events
from service.jobs import load_job_async, public_view
from service.openapi_errors import AUTHED, errors
from service.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["events"])

STREAM_ID = re.compile(r"^\d+(-\d+)?$")


@router.get(
    "/{id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(*AUTHED, 404)},
)
async def events(
    id: str,  # noqa: A002
    state: StateDep,
    owner: OwnerDep,
    base_url: BaseUrlDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(description="for clients that cannot set headers")] = None,
) -> EventSourceResponse:
    await load_job_async(state, id, owner)  # 404 before the stream starts (no threadpool hop)
    after = last_event_id_header or last_event_id or "0-0"
    if not STREAM_ID.match(after):
        raise InvalidRequestError.from_fields(
            [("Last-Event-ID", f"{after!r} is not an event id like 1712345678901-0")]
        )

    def view(job: JobRecord) -> JobOut:
        return public_view(state, job, base_url)

    slot = state.streams.acquire(owner)  # 429 / 503 over the caps (service/stream_slots.py)
    return EventSourceResponse(
        job_events(state, id, after, view, slot=slot),
        send_timeout=30,
        background=BackgroundTask(slot.release),  # if the stream never started, its slot is still freed
    )
