"""CORS for browser clients served from other origins (Settings.cors_origins; empty = no CORS headers).

Credentials (cookies) are not allowed: the API authenticates with a Bearer header, which a cross-origin page
sends explicitly. Location is exposed so clients can follow a 202's status URL; Last-Event-ID is allowed for
resuming an event stream.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

ALLOW_METHODS = ["GET", "POST", "DELETE"]
ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
EXPOSE_HEADERS = ["Location", "Retry-After"]
MAX_AGE_S = 600


def install_cors(app: FastAPI, origins: list[str]) -> None:
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        allow_credentials=False,
        max_age=MAX_AGE_S,
    )
