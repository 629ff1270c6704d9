"""What the sync and async clients share: where the server is, the request bodies, job states."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "timed_out"})
Job = dict[str, Any]  # a job as GET /jobs/{id} renders it (the API's JobOut)


def server_url(server: str | None) -> str:
    return (server or os.environ.get("M4V_SERVER") or DEFAULT_SERVER).rstrip("/")


def headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("M4V_API_KEY")
    out = {"User-Agent": "m4v-client"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def submit_body(prompt: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The POST /generate body: the prompt and every field given (None = the server's default)."""
    return {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}


def list_params(status: str | list[str] | None, limit: int, cursor: str | None, order: str) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "order": order}
    if status:
        params["status"] = [status] if isinstance(status, str) else list(status)
    if cursor:
        params["cursor"] = cursor
    return params


def media_path(job_id: str, variant: str) -> str:
    if variant not in ("video", "thumbnail"):
        raise ValueError(f"variant {variant!r}: use 'video' or 'thumbnail'")
    return f"/jobs/{job_id}/{variant}"


def part_path(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.part")
