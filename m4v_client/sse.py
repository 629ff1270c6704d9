"""A Server-Sent Events reader over httpx streaming (sync and async) that resumes with Last-Event-ID after a
drop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        """The data field as JSON; a non-JSON payload comes back as the raw string."""
        try:
            return json.loads(self.data)
        except ValueError:
            return self.data


class SSEParser:
    """Incremental WHATWG parsing: feed() one text line at a time, get an event when a blank line ends one."""

    def __init__(self) -> None:
        self.event, self.id = "message", None
        self.data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # comment / keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value  # type: ignore[assignment]
        return None

    def flush(self) -> SSEEvent | None:
        event = SSEEvent(event=self.event, data="\n".join(self.data), id=self.id) if self.data else None
        self.event, self.data = "message", []
        return event


def parse_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Events from SSE text lines (WHATWG rules: comments, multi-line data, blank line ends)."""
    parser = SSEParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
    last = parser.flush()
    if last is not None:
        yield last


class EventStreamError(RuntimeError):
    """The events endpoint answered with an HTTP error (not a dropped connection)."""

    def __init__(self, response: httpx.Response):
        self.response = response
        super().__init__(f"GET {response.request.url} -> {response.status_code}")


def follow(
    client: httpx.Client,
    url: str,
    max_reconnects: int = 20,
    backoff_s: float = 0.5,
    last_event_id: str | None = None,
) -> Iterator[SSEEvent]:
    """Yield events from url ; reconnect with Last-Event-ID on network errors.

    The caller stops iterating when it has seen what it needs (e.g. a terminal status). A clean end of stream
    is also treated as a reason to reconnect, since a proxy may close idle streams; after max_reconnects
    consecutive failures without any new event the last error is raised.
    """
    last_id = last_event_id
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(10.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise EventStreamError(resp)
                for ev in parse_sse(resp.iter_lines()):
                    failures = 0
                    if ev.id is not None:
                        last_id = ev.id
                    yield ev
            error: Exception = ConnectionError("event stream ended")
        except httpx.TransportError as exc:
            error = exc
        failures += 1
        if failures > max_reconnects:
            raise error
        log.debug("event stream interrupted (%s); reconnecting after %s", error, last_id)
        time.sleep(min(backoff_s * failures, 5.0))


async def afollow(
    client: httpx.AsyncClient,
    url: str,
    max_reconnects: int = 20,
    backoff_s: float = 0.5,
    last_event_id: str | None = None,
) -> AsyncIterator[SSEEvent]:
    """follow() for httpx.AsyncClient."""
    last_id = last_event_id
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with client.stream(
                "GET", url, headers=headers, timeout=httpx.Timeout(10.0, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise EventStreamError(resp)
                parser = SSEParser()
                async for line in resp.aiter_lines():
                    ev = parser.feed(line)
                    if ev is None:
                        continue
                    failures = 0
                    if ev.id is not None:
                        last_id = ev.id
                    yield ev
            error: Exception = ConnectionError("event stream ended")
        except httpx.TransportError as exc:
            error = exc
        failures += 1
        if failures > max_reconnects:
            raise error
        await asyncio.sleep(min(backoff_s * failures, 5.0))
