"""A job's events as SSE: replay the Redis stream after Last-Event-ID, then follow it until "done".

Reads use the async Redis client (XREAD BLOCK), so an open stream costs a coroutine, not a thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import ServerSentEvent

from m4v_core import JobRecord
from service.schemas import JobOut
from service.state import ServiceState
from service.stream_slots import Slot

log = logging.getLogger(__name__)

BLOCK_MS = 2000  # well under state.SSE_SOCKET_TIMEOUT_S
BATCH = 100
DONE = "done"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _read(state: ServiceState, job_id: str, after: str, block_ms: int | None) -> list[ServerSentEvent]:
    res: Any = await state.aredis.xread({state.store.keys.events(job_id): after}, count=BATCH, block=block_ms)
    events: list[ServerSentEvent] = []
    for _stream, entries in res or []:
        for eid, fields in entries:
            typ = _text(fields.get(b"type", b"message"))
            events.append(ServerSentEvent(data=_text(fields.get(b"data", b"{}")), event=typ, id=_text(eid)))
    return events


async def _load(state: ServiceState, job_id: str) -> JobRecord | None:
    raw = await state.aredis.get(state.store.keys.job(job_id))
    return JobRecord.model_validate_json(raw) if raw is not None else None


async def job_events(
    state: ServiceState,
    job_id: str,
    after: str,
    view: Callable[[JobRecord], JobOut],
    block_ms: int = BLOCK_MS,
    slot: Slot | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ServerSentEvent]:
    """Yields stored events after `after`, then new ones, and stops after "done", or once no event came
    for `sse_idle_timeout_s` (the client reconnects with Last-Event-ID). Gives back `slot` when it ends.

    A finished job whose stream holds nothing more (expired, trimmed, or the worker died before writing
    "done") gets a synthetic final "done" carrying the job, so clients always see an end.
    """
    try:
        async for event in _follow(state, job_id, after, view, block_ms, clock):
            yield event
    finally:
        if slot is not None:
            await slot.release()


async def _follow(
    state: ServiceState,
    job_id: str,
    after: str,
    view: Callable[[JobRecord], JobOut],
    block_ms: int,
    clock: Callable[[], float],
) -> AsyncIterator[ServerSentEvent]:
    idle_until = clock() + state.settings.sse_idle_timeout_s
    while True:
        if clock() >= idle_until:
            log.info("idle event stream closed", extra={"job_id": job_id})
            return
        job = await _load(state, job_id)
        finished = job is None or job.finished
        # Do not block on a finished job: whatever is left is already in the stream.
        events = await _read(state, job_id, after, None if finished else block_ms)
        for event in events:
            yield event
            idle_until = clock() + state.settings.sse_idle_timeout_s
            after = str(event.id)
            if event.event == DONE:
                return
        if finished and not events:
            data = (
                view(job).model_dump_json()
                if job is not None
                else json.dumps({"id": job_id, "status": "expired"})
            )
            yield ServerSentEvent(data=data, event=DONE)  # no id: a reconnect resumes after the last real one
            return
