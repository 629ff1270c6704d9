"""What the client raises."""

from __future__ import annotations

from typing import Any

import httpx


class M4VError(Exception):
    """Base of the client's errors."""


class APIError(M4VError):
    """The server answered with an error: {"error": {"type", "message", "details"}}."""

    def __init__(self, status_code: int, type: str, message: str, details: Any = None):  # noqa: A002
        super().__init__(f"HTTP {status_code} {type}: {message}")
        self.status_code = status_code
        self.type = type
        self.message = message
        self.details = details

    @classmethod
    def from_response(cls, resp: httpx.Response) -> APIError:
        try:
            err = resp.json()["error"]
            return cls(resp.status_code, str(err.get("type")), str(err.get("message")), err.get("details"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls(resp.status_code, "http_error", resp.text[:500])


class WaitTimeoutError(M4VError):
    """wait() gave up before the job finished."""


class WebhookVerificationError(M4VError):
    """A webhook's signature or timestamp is not valid."""


def check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        raise APIError.from_response(resp)
    return resp
