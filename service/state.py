"""What the app holds while it runs, built in the lifespan (never at import) and closed after."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from m4v_core import ApiSettings, JobStore
from m4v_core.redis_client import connection_options
from m4v_core.webhooks import WebhookSender
from model.config import ModelConfig, get_preset
from service.auth import Authenticator
from service.fleet_view import FleetView
from service.metrics import ApiMetrics
from service.objects import ObjectStore
from service.presign import Presigner
from service.queue import JobQueue
from service.ratelimit import RateLimiter
from service.stream_slots import StreamSlots

log = logging.getLogger(__name__)

SSE_SOCKET_TIMEOUT_S = 30.0


async def _close_idle(*pools: aredis.ConnectionPool) -> None:
    """Close the pools' idle connections (they reconnect when next used): what a burst of streams opened
    goes away with the last of them."""
    for pool in pools:
        try:
            await pool.disconnect(inuse_connections=False)
        except (OSError, RedisError) as exc:  # a connection already broken: it is closed either way
            log.debug("closing idle redis connections: %s", exc)


def async_pool(url: str, name: str, size: int, read_timeout_s: float) -> aredis.BlockingConnectionPool:
    """A bounded pool for the event loop. A command on a connection that was closed under it (the last
    stream's _close_idle racing a new request, a server-side kill) reconnects and is sent once more instead
    of failing the request with 503; a timeout is not retried."""
    return aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=size,
        timeout=SOCKET_TIMEOUT_S,
        client_name=name,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        **connection_options(url, read_timeout_s, SOCKET_TIMEOUT_S),
    )


def client_name(settings: ApiSettings) -> str:
    """CLIENT SETNAME of every Redis connection this API opens (CLIENT LIST tells them from others')."""
    return f"m4v-api:{settings.key_prefix}"


SOCKET_TIMEOUT_S = 5.0
OPS_POOL_SIZE = 32  # connections for short commands on the event loop


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
    streams: StreamSlots  # caps on open event streams (service/stream_slots.py)
    clock: Callable[[], float] = field(default=time.monotonic)  # waits' deadlines (tests inject one)

    @classmethod
    def open(cls, settings: ApiSettings, metrics: ApiMetrics) -> ServiceState:
        url, name = settings.redis_url, client_name(settings)
        client = redis.Redis.from_url(url, client_name=name, **connection_options(url, SOCKET_TIMEOUT_S))
        store = JobStore(client, settings.key_prefix, settings.job_ttl_s, settings.events_maxlen)
        queue = JobQueue(
            client, store.keys, result_ttl_s=settings.job_ttl_s, failure_ttl_s=settings.job_ttl_s
        )
        metrics.watch_queues(queue, store)
        preset = get_preset(settings.preset)
        # Short commands on the event loop (the rate limit, every request): a bounded pool whose requests
        # wait for a free connection, instead of redis-py's default pool, which answers a burst of more
        # concurrent requests than its size with MaxConnectionsError (a 503 to the caller).
        ops = aredis.Redis(connection_pool=async_pool(url, name, OPS_POOL_SIZE, SOCKET_TIMEOUT_S))
        # Every event stream reads through this one bounded pool: a stream holds at most one connection at a
        # time, so sse_max_streams connections serve every stream the slots admit without waiting.
        streams_pool = async_pool(url, name, settings.sse_max_streams, SSE_SOCKET_TIMEOUT_S)
        return cls(
            settings=settings,
            preset=preset,
            redis=client,
            # SSE reads block on purpose (XREAD BLOCK up to event_stream.BLOCK_MS): the read timeout
            # must exceed that block, or an idle stream dies with TimeoutError mid-response.
            aredis=aredis.Redis(connection_pool=streams_pool),
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
            # the last stream out closes the pool's idle connections: no Redis clients stay behind
            streams=StreamSlots(
                settings.sse_max_streams,
                settings.sse_max_streams_per_key,
                on_empty=lambda: _close_idle(streams_pool, ops.connection_pool),
            ),
        )

    async def close(self) -> None:
        self.webhooks.close()
        await self.aredis.aclose()
        await self.aredis_ops.aclose()
        self.redis.close()
