"""Pure ASGI middlewares (safe around streaming SSE responses): per-request observation (one access-log
line and the HTTP metrics, labelled by route template /jobs/{id}, not the raw path). The body-size limit
is service.limits.LimitBody."""

from __future__ import annotations

import logging
import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ApiMetrics

log = logging.getLogger("service.access")

UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The router writes the matched route into the shared scope dict while dispatching."""
    route: BaseRoute | None = scope.get("route")
    return str(getattr(route, "path", UNMATCHED_ROUTE)) if route is not None else UNMATCHED_ROUTE


class ObserveRequests:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, ServerErrorMiddleware sends a 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe_request(route, scope["method"], status, seconds)
            log.info(
                "request",
                extra={
                    "route": route,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
