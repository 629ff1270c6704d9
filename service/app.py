"""The FastAPI application, built by create_app(settings); nothing is created at import time.

Run: uvicorn --factory service.app:create_app   (settings from M4V_* environment variables)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from m4v_core import ApiSettings
from m4v_core.logs import configure_logging
from service.cors import install_cors
from service.errors import install_error_handlers
from service.limits import LimitBody
from service.metrics import ApiMetrics
from service.middleware import ObserveRequests
from service.playground import install_playground
from service.routes import events, generate, health, info, jobs, metrics, videos, webhook_secret, workers
from service.state import ServiceState
from service.webhooks import start_dispatcher

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()  # type: ignore[call-arg]  # fields come from M4V_* env
    configure_logging(settings.log_level, settings.log_json)
    api_metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState.open(settings, api_metrics)
        app.state.m4v = state
        dispatcher = start_dispatcher(state)
        log.info("api started", extra={"preset": state.preset.name, "key_prefix": settings.key_prefix})
        try:
            yield
        finally:
            if dispatcher is not None:  # an attempt in flight may take webhook_timeout_s: keep the loop free
                await asyncio.to_thread(dispatcher.stop)
            await state.close()

    app = FastAPI(
        title="m4v-serve",
        summary="M4V text-to-video: submit a prompt, follow the job, fetch the MP4.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operation ids: get_job, create_video, ...
    )
    install_error_handlers(app)
    app.add_middleware(LimitBody, max_bytes=settings.max_body_bytes)
    install_cors(app, settings.cors_origins)  # outside the body limit: its 413s carry CORS headers too
    app.add_middleware(ObserveRequests, metrics=api_metrics)  # added last = outermost: sees the 413s too
    for router in (
        generate.router,
        jobs.router,
        videos.router,
        info.router,
        events.router,
        health.router,
        workers.router,
        metrics.router,
        webhook_secret.router,
    ):
        app.include_router(router)
    if settings.playground:
        install_playground(app)
    return app
