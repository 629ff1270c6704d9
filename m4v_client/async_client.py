"""The asynchronous client: the same methods as Client, awaited."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from m4v_client.common import (
    TERMINAL,
    Job,
    headers,
    list_params,
    media_path,
    part_path,
    server_url,
    submit_body,
)
from m4v_client.errors import WaitTimeoutError, check
from m4v_client.sse import EventStreamError, SSEEvent, afollow

AsyncProgressFn = Callable[[SSEEvent], Awaitable[None] | None]


class AsyncClient:
    """Client for asyncio code (httpx.AsyncClient underneath)."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        self.http = httpx.AsyncClient(
            base_url=self.server, headers=headers(api_key), timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, prompt: str, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        resp = await self.http.post("/generate", json=submit_body(prompt, fields), headers=extra)
        return dict(check(resp).json())

    async def get(self, job_id: str) -> Job:
        return dict(check(await self.http.get(f"/jobs/{job_id}")).json())

    async def list(
        self,
        status: str | list[str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        resp = await self.http.get("/jobs", params=list_params(status, limit, cursor, order))
        return dict(check(resp).json())

    async def cancel(self, job_id: str) -> Job:
        return dict(check(await self.http.delete(f"/jobs/{job_id}")).json())

    async def info(self) -> dict[str, Any]:
        return dict(check(await self.http.get("/info")).json())

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[SSEEvent]:
        """Client.events, async."""
        try:
            async for event in afollow(self.http, f"/jobs/{job_id}/events", last_event_id=last_event_id):
                yield event
                if event.event == "done":
                    return
        except EventStreamError as exc:
            check(exc.response)
            raise

    async def wait(
        self, job_id: str, progress: AsyncProgressFn | None = None, timeout_s: float | None = None
    ) -> Job:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        async for event in self.events(job_id):
            if progress is not None:
                result = progress(event)
                if result is not None:
                    await result
            data = event.json()
            if event.event == "done" and isinstance(data, dict) and data.get("status") in TERMINAL:
                return data
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(f"job {job_id} not finished after {timeout_s}s")
        return await self.get(job_id)

    async def download(self, job_id: str, out: str | Path, variant: str = "video") -> Path:
        resp = check(await self.http.get(media_path(job_id, variant), follow_redirects=False))
        target = Path(out)
        tmp = part_path(target)
        async with httpx.AsyncClient(timeout=self.http.timeout, follow_redirects=True) as plain:
            with tmp.open("wb") as f:
                if not resp.is_redirect:
                    f.write(resp.content)
                else:
                    async with plain.stream("GET", str(resp.url.join(resp.headers["location"]))) as media:
                        if media.status_code >= 400:
                            await media.aread()
                        check(media)
                        async for chunk in media.aiter_bytes():
                            f.write(chunk)
        os.replace(tmp, target)
        return target
