"""`m4v generate`: submit a job, follow its events with a progress bar, download the MP4.

Errors a user can act on are raised as CLIError with an exit code: 2 for a request the server refused (4xx),
1 for a job that failed or a server that could not be reached.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from m4v_client.sse import EventStreamError, follow

log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "canceled", "timed_out"})
ProgressFn = Callable[[dict[str, Any]], None]


class CLIError(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass
class GenerateOptions:
    server: str
    prompt: str
    out: Path
    body: dict[str, Any] = field(default_factory=dict)  # extra GenerateRequest fields (frames, seed, ...)
    api_key: str | None = None
    wait_timeout_s: float = 3600.0


def request_body(prompt: str, **fields: Any) -> dict[str, Any]:
    """The POST /generate body: the prompt plus every option the user gave (None means the server default)."""
    return {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}


def make_client(server: str, api_key: str | None) -> httpx.Client:
    headers = {"User-Agent": "m4v-cli"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=30.0)


def error_message(resp: httpx.Response) -> str:
    """The API's {error: {type, message, details}} as one line; the raw body if it is not that shape."""
    try:
        err = resp.json().get("error", {})
        text = f"{err.get('type', 'error')}: {err.get('message', '')}"
        if err.get("details"):
            text += f" {err['details']}"
        return f"HTTP {resp.status_code} {text}"
    except (ValueError, AttributeError):
        return f"HTTP {resp.status_code} {resp.text[:500]}"


def check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 500:
        raise CLIError(error_message(resp), exit_code=1)
    if resp.status_code >= 400:
        raise CLIError(error_message(resp), exit_code=2)
    return resp


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    return dict(check(client.post("/generate", json=body)).json())


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(check(client.get(f"/jobs/{job_id}")).json())


def wait_for_job(client: httpx.Client, job_id: str, on_event: ProgressFn, timeout_s: float) -> dict[str, Any]:
    """Follow /jobs/{id}/events until a terminal status, then return the job record.

    Falls back to polling GET /jobs/{id} if the events endpoint is unavailable.
    """
    deadline = time.monotonic() + timeout_s
    try:
        for ev in follow(client, f"/jobs/{job_id}/events"):
            data = ev.json()
            if isinstance(data, dict):
                on_event({"event": ev.event, **data})
                if ev.event == "done" or _status_of(data) in TERMINAL:
                    break
            if time.monotonic() > deadline:
                raise CLIError(f"job {job_id} not finished after {timeout_s:.0f}s")
    except EventStreamError as exc:
        if exc.response.status_code in (401, 403, 404):
            raise CLIError(error_message(exc.response), exit_code=2) from exc
        log.warning("event stream unavailable (%s); polling instead", exc)
    return _poll(client, job_id, on_event, deadline)


def _poll(client: httpx.Client, job_id: str, on_event: ProgressFn, deadline: float) -> dict[str, Any]:
    while True:
        job = get_job(client, job_id)
        on_event({"event": "status", **job})
        if job.get("status") in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise CLIError(f"job {job_id} not finished in time (status {job.get('status')})")
        time.sleep(1.0)


def _status_of(data: dict[str, Any]) -> str | None:
    status = data.get("status")
    if isinstance(status, str):
        return status
    job = data.get("job")
    return job.get("status") if isinstance(job, dict) else None


def download_video(client: httpx.Client, job_id: str, out: Path) -> int:
    """GET /jobs/{id}/video, follow the 302 to the presigned URL without our API key, write out atomically."""
    resp = check(client.get(f"/jobs/{job_id}/video", follow_redirects=False))
    url = str(resp.url.join(resp.headers["location"])) if resp.is_redirect else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    with httpx.Client(timeout=60.0, follow_redirects=True) as plain, tmp.open("wb") as f:
        if url is None:
            f.write(resp.content)  # a server may also stream the file itself
        else:
            with plain.stream("GET", url) as video:
                if video.status_code >= 400:
                    video.read()
                    raise CLIError(f"video download failed: HTTP {video.status_code} {video.text[:300]}")
                for chunk in video.iter_bytes():
                    f.write(chunk)
    size = tmp.stat().st_size
    os.replace(tmp, out)
    return size


def job_failure(job: dict[str, Any]) -> str:
    err = job.get("error") or {}
    return f"job {job.get('id')} {job.get('status')}: {err.get('type', '')} {err.get('message', '')}".strip()


def generate(opts: GenerateOptions, on_event: ProgressFn) -> dict[str, Any]:
    """Submit, follow, download; returns the final job. CLIError for anything that made no video."""
    try:
        with make_client(opts.server, opts.api_key) as client:
            job = submit(client, request_body(opts.prompt, **opts.body))
            on_event({"event": "submitted", **job})
            job = wait_for_job(client, job["id"], on_event, opts.wait_timeout_s)
            if job.get("status") != "succeeded":
                raise CLIError(job_failure(job), exit_code=1)
            download_video(client, job["id"], opts.out)
            return job
    except httpx.TransportError as exc:
        raise CLIError(f"cannot reach {opts.server}: {exc}", exit_code=1) from exc
