"""The synchronous client: httpx only, no torch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
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
from m4v_client.sse import EventStreamError, SSEEvent, follow

ProgressFn = Callable[[SSEEvent], None]


class Client:
    """m4v-serve's native API. `server` defaults to $M4V_SERVER, then http://127.0.0.1:8000; `api_key` to
    $M4V_API_KEY. Jobs come back as dicts shaped like GET /jobs/{id}."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        self.http = httpx.Client(
            base_url=self.server, headers=headers(api_key), timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(self, prompt: str, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """POST /generate; fields are any request fields (num_frames, seed, width, height, priority, ...)."""
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(
            check(self.http.post("/generate", json=submit_body(prompt, fields), headers=extra)).json()
        )

    def get(self, job_id: str) -> Job:
        return dict(check(self.http.get(f"/jobs/{job_id}")).json())

    def list(
        self,
        status: str | list[str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
        order: str = "desc",
    ) -> dict[str, Any]:
        """One page of the caller's jobs: {"data": [...], "has_more", "next_cursor"}."""
        return dict(check(self.http.get("/jobs", params=list_params(status, limit, cursor, order))).json())

    def iter_jobs(self, status: str | list[str] | None = None, page_size: int = 50) -> Iterator[Job]:
        """Every job of the caller, newest first, page after page."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page["data"]
            if not page["has_more"]:
                return
            cursor = page["next_cursor"]

    def cancel(self, job_id: str) -> Job:
        return dict(check(self.http.delete(f"/jobs/{job_id}")).json())

    def info(self) -> dict[str, Any]:
        """GET /info: presets, sizes, frame rule, defaults and bounds, limits, version."""
        return dict(check(self.http.get("/info")).json())

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[SSEEvent]:
        """The job's events (status, progress, preview, done), replayed from after last_event_id and followed
        live; a dropped connection is resumed where it stopped. Ends after the `done` event."""
        try:
            for event in follow(self.http, f"/jobs/{job_id}/events", last_event_id=last_event_id):
                yield event
                if event.event == "done":
                    return
        except EventStreamError as exc:
            check(exc.response)
            raise

    def wait(self, job_id: str, progress: ProgressFn | None = None, timeout_s: float | None = None) -> Job:
        """Follow the job until it ends; progress(event) is called for every event. The final job (check its
        status: succeeded, failed, canceled or timed_out)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for event in self.events(job_id):
            if progress is not None:
                progress(event)
            data = event.json()
            if event.event == "done" and isinstance(data, dict) and data.get("status") in TERMINAL:
                return data
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(f"job {job_id} not finished after {timeout_s}s")
        return self.get(job_id)  # a stream whose `done` was expired: read the record

    def download(self, job_id: str, out: str | Path, variant: str = "video") -> Path:
        """Save the MP4 (variant="video") or the JPEG thumbnail to `out`, written atomically. The presigned
        storage URL is fetched without our API key."""
        resp = check(self.http.get(media_path(job_id, variant), follow_redirects=False))
        target = Path(out)
        tmp = part_path(target)
        with httpx.Client(timeout=self.http.timeout, follow_redirects=True) as plain, tmp.open("wb") as f:
            if not resp.is_redirect:
                f.write(resp.content)
            else:
                with plain.stream("GET", str(resp.url.join(resp.headers["location"]))) as media:
                    if media.status_code >= 400:
                        media.read()
                    check(media)
                    for chunk in media.iter_bytes():
                        f.write(chunk)
        os.replace(tmp, target)
        return target
