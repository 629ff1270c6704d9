"""Caps on open event streams (GET /jobs/{id}/events), so one tenant, or a crowd, cannot exhaust the API's
Redis connections (issue 16: 300 streams added 214 Redis clients, and 117 stayed after they closed).

Every stream of an API process reads through one shared, bounded connection pool (ServiceState.aredis, a
BlockingConnectionPool of `sse_max_streams` connections: a stream holds at most one at a time, so no stream
waits for another). A stream takes a slot before it starts: at most `sse_max_streams_per_key` per API key
(429 `too_many_streams`, with the limit and the key's use; open mode has no keys, so only the global cap)
and `sse_max_streams` in all (503 with Retry-After). When the last open stream ends, the pool's idle
connections are closed, so the Redis clients the streams made go away with them. A stream with no event
for `sse_idle_timeout_s` is ended (service/event_stream.py); clients reconnect with Last-Event-ID.

Slots are taken in the route (a threadpool thread) and given back on the event loop, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import anyio

from service.errors import RateLimitedError, ServiceUnavailableError

RETRY_AFTER_S = 5


class TooManyStreamsError(RateLimitedError):
    error_type = "too_many_streams"


class StreamSlots:
    def __init__(
        self, max_streams: int, per_key: int, on_empty: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        self.max_streams = max_streams
        self.per_key = per_key
        self.on_empty = on_empty
        self.open = 0
        self.by_owner: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, owner: str | None) -> Slot:
        """A slot for one stream of `owner` (None: open mode), or 429 (the key's cap) / 503 (all streams)."""
        with self._lock:
            used = self.by_owner.get(owner, 0) if owner is not None else 0
            if owner is not None and used >= self.per_key:
                raise TooManyStreamsError(
                    f"this API key already has {used} open event streams (limit {self.per_key}); "
                    "close one or poll GET /jobs/{id}",
                    retry_after_s=RETRY_AFTER_S,
                    details={"limit": self.per_key, "in_use": used},
                )
            if self.open >= self.max_streams:
                raise ServiceUnavailableError(
                    f"too many open event streams ({self.open}); retry later or poll GET /jobs/{{id}}",
                    retry_after_s=RETRY_AFTER_S,
                    details={"limit": self.max_streams, "in_use": self.open},
                )
            self.open += 1
            if owner is not None:
                self.by_owner[owner] = used + 1
        return Slot(self, owner)

    async def _release(self, owner: str | None) -> None:
        with self._lock:
            self.open -= 1
            if owner is not None:
                left = self.by_owner[owner] - 1
                if left:
                    self.by_owner[owner] = left
                else:
                    del self.by_owner[owner]
            empty = self.open == 0
        if empty and self.on_empty is not None:
            # a stream ends by cancellation when its client goes away: shielded, or the first await here
            # would be cancelled too
            with anyio.CancelScope(shield=True):
                await self.on_empty()


class Slot:
    """One open stream's slot; release() is idempotent (called when the stream ends, and again after the
    response, in case the stream never started)."""

    def __init__(self, slots: StreamSlots, owner: str | None) -> None:
        self.slots = slots
        self.owner = owner
        self.released = False

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.slots._release(self.owner)
