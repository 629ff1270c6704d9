"""The error responses routes declare in the OpenAPI document, so generated clients know them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.schemas import ErrorOut

DESCRIPTIONS = {
    401: "no, malformed or unknown API key (WWW-Authenticate: Bearer)",
    404: "unknown job, or another key's job",
    409: "conflict: the video is not ready yet, or an Idempotency-Key reused with another body",
    413: "request body over M4V_MAX_BODY_BYTES",
    422: "invalid request; the error names the field",
    429: "over the caller's rate limit (Retry-After)",
    503: "queue full, Redis or S3 unavailable (Retry-After)",
}
AUTHED = (401, 422, 429, 503)  # every route behind an API key


def errors(*codes: int, model: type[BaseModel] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": model, "description": DESCRIPTIONS[code]} for code in codes}
