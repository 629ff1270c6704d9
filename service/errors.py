"""The API's one domain exception tree and the one place it is mapped to HTTP.

    ServiceError                      500 internal
     +-- InvalidRequestError          422 validation_error     details = [{field, message}]
     +-- AuthenticationError          401 unauthorized         no, malformed or unknown API key
     +-- RateLimitedError             429 rate_limited         caller over its rate (GCRA); Retry-After
     +-- JobNotFoundError             404 not_found            unknown job, or another owner's job
     +-- VideoNotReadyError           409 video_not_ready      the job has no video (yet)
     +-- IdempotencyConflictError     409 idempotency_conflict
     +-- PayloadTooLargeError         413 payload_too_large     (raised by limits.LimitBody)
     +-- ServiceUnavailableError      503 unavailable          always with Retry-After
          +-- QueueFullError          503 queue_full
          +-- StoreUnavailableError   503 store_unavailable    Redis down (redis.ConnectionError/TimeoutError)
          +-- StorageUnavailableError 503 storage_unavailable  presigning impossible (no S3 credentials)

Every error leaves the API as {"error": {"type", "message", "details"}}; so do FastAPI's request
validation errors, Starlette's HTTPExceptions (unknown route, wrong method) and Redis outages. Under /v1/
(the OpenAI-style surface, service/routes/videos.py) the same errors take that surface's shape,
{"error": {"message", "type", "param", "code"}}: `code` is our type, `param` the first field named.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER_S = 5


class ServiceError(Exception):
    status_code: int = 500
    error_type: str = "internal"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidRequestError(ServiceError):
    status_code = 422
    error_type = "validation_error"

    @classmethod
    def from_fields(cls, problems: list[tuple[str, str]]) -> InvalidRequestError:
        message = "; ".join(f"{field}: {msg}" for field, msg in problems)
        return cls(message, details=[{"field": field, "message": msg} for field, msg in problems])


class AuthenticationError(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="m4v-serve"'})


class RateLimitedError(ServiceError):
    status_code = 429
    error_type = "rate_limited"

    def __init__(self, message: str, retry_after_s: int, details: Any = None):
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after_s)})


class JobNotFoundError(ServiceError):
    status_code = 404
    error_type = "not_found"

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id!r} not found", details={"job_id": job_id})


class VideoNotReadyError(ServiceError):
    status_code = 409
    error_type = "video_not_ready"


class IdempotencyConflictError(ServiceError):
    status_code = 409
    error_type = "idempotency_conflict"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class ServiceUnavailableError(ServiceError):
    status_code = 503
    error_type = "unavailable"

    def __init__(self, message: str, retry_after_s: int, details: Any = None):
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after_s)})


class QueueFullError(ServiceUnavailableError):
    error_type = "queue_full"


class StoreUnavailableError(ServiceUnavailableError):
    error_type = "store_unavailable"


class StorageUnavailableError(ServiceUnavailableError):
    error_type = "storage_unavailable"


OPENAI_PREFIX = "/v1/"
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error_body(error_type: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, "details": details}}


def openai_error_body(status_code: int, error_type: str, message: str, details: Any = None) -> dict[str, Any]:
    """The /v1 surface's error: {"error": {"message", "type", "param", "code"}}."""
    param = None
    if isinstance(details, list) and details and isinstance(details[0], dict):
        param = details[0].get("field")
    kind = OPENAI_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": error_type}}


def error_response(exc: ServiceError, path: str = "") -> JSONResponse:
    """The error as a response, in the shape of the surface `path` belongs to."""
    if path.startswith(OPENAI_PREFIX):
        body = openai_error_body(exc.status_code, exc.error_type, exc.message, exc.details)
    else:
        body = error_body(exc.error_type, exc.message, exc.details)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    """('body', 'webhook_events', 0) -> 'webhook_events.0'; the 'body'/'query'/'header' root is dropped."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(exc: RequestValidationError) -> InvalidRequestError:
    problems = [(_field_name(tuple(e.get("loc", ()))), str(e.get("msg", "invalid"))) for e in exc.errors()]
    return InvalidRequestError.from_fields(problems)


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc, request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(_validation_error(exc), request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = ServiceError(str(exc.detail), headers=getattr(exc, "headers", None))
    error.status_code = exc.status_code
    error.error_type = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return error_response(error, request.url.path)


async def _on_redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return error_response(
        StoreUnavailableError("job store (Redis) is unavailable; retry later", REDIS_RETRY_AFTER_S),
        request.url.path,
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(ServiceError("internal server error"), request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    """The one mapping from exceptions to HTTP responses."""
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(redis.ConnectionError, _on_redis_down)
    app.add_exception_handler(redis.TimeoutError, _on_redis_down)
    app.add_exception_handler(Exception, _on_unexpected)
