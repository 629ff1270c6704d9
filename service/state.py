"""What the app holds while it runs, built in the lifespan (never at import) and closed after."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aredis

from m4v_core import ApiSettings, JobStore
from m4v_core.webhooks import WebhookSender
from model.config import ModelConfig, get_preset
from service.auth import Authenticator
from service.fleet_view import FleetView
from service.metrics import ApiMetrics
from service.objects import ObjectStore
from service.presign import Presigner
from service.queue import JobQueue
from service.ratelimit import RateLimiter

SSE_SOCKET_TIMEOUT_S = 30.0
SOCKET_TIMEOUT_S = 5.0


@dataclass
class ServiceState:
    settings: ApiSettings
    preset: ModelConfig
    redis: redis.Redis  # sync client: rq needs one; sync routes run in the threadpool
    aredis: aredis.Redis  # async client for SSE, so long-lived streams hold no threads
    aredis_ops: aredis.Redis  # async client for short commands on the event loop (the rate limit)
    store: JobStore
    queue: JobQueue
    presigner: Presigner
    objects: ObjectStore  # the API's own reads and deletes of stored videos (/v1/videos)
    metrics: ApiMetrics
    auth: Authenticator  # API keys and the per-caller rate limit
    fleet_view: FleetView  # workers and queued FLOPs, at most settings.fleet_view_ttl_s old
    webhooks: WebhookSender  # queues the deliveries the API makes (a job canceled while queued)

    @classmethod
    def open(cls, settings: ApiSettings, metrics: ApiMetrics) -> ServiceState:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=SOCKET_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
        )
        store = JobStore(client, settings.key_prefix, settings.job_ttl_s, settings.events_maxlen)
        queue = JobQueue(
            client, store.keys, result_ttl_s=settings.job_ttl_s, failure_ttl_s=settings.job_ttl_s
        )
        metrics.watch_queues(queue, store)
        preset = get_preset(settings.preset)
        ops = aredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=SOCKET_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
        )
        return cls(
            settings=settings,
            preset=preset,
            redis=client,
            # SSE reads block on purpose (XREAD BLOCK up to event_stream.BLOCK_MS): the read timeout
            # must exceed that block, or an idle stream dies with TimeoutError mid-response.
            aredis=aredis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=SOCKET_TIMEOUT_S,
                socket_timeout=SSE_SOCKET_TIMEOUT_S,
            ),
            aredis_ops=ops,
            store=store,
            queue=queue,
            presigner=Presigner(settings),
            objects=ObjectStore(settings),
            metrics=metrics,
            auth=Authenticator.from_settings(
                settings,
                RateLimiter(
                    ops, settings.key_prefix, settings.rate_limit_requests, settings.rate_limit_window_s
                ),
            ),
            fleet_view=FleetView(
                client, settings.key_prefix, queue, presets=(preset.name,), ttl_s=settings.fleet_view_ttl_s
            ),
            webhooks=WebhookSender.from_settings(settings, client, store, metrics=metrics),
        )

    async def close(self) -> None:
        self.webhooks.close()
        await self.aredis.aclose()
        await self.aredis_ops.aclose()
        self.redis.close()
