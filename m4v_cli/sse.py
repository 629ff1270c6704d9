"""A Server-Sent Events reader over httpx streaming that resumes with Last-Event-ID after a drop."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
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


def parse_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Events from SSE text lines (WHATWG rules: comments, multi-line data, blank line ends)."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SSEEvent(event=event, data="\n".join(data), id=event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    if data:
        yield SSEEvent(event=event, data="\n".join(data), id=event_id)


class EventStreamError(RuntimeError):
    """The events endpoint answered with an HTTP error (not a dropped connection)."""

    def __init__(self, response: httpx.Response):
        self.response = response
        super().__init__(f"GET {response.request.url} -> {response.status_code}")


def follow(
    client: httpx.Client, url: str, max_reconnects: int = 20, backoff_s: float = 0.5
) -> Iterator[SSEEvent]:
    """Yield events from url ; reconnect with Last-Event-ID on network errors.

    The caller stops iterating when it has seen what it needs (e.g. a terminal status). A clean end of stream
    is also treated as a reason to reconnect, since a proxy may close idle streams; after max_reconnects
    consecutive failures without any new event the last error is raised.
    """
    last_id: str | None = None
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
