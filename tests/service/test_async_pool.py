"""The API's event-loop Redis pools survive a connection closed under them (issue 16's idle close, CI flake).

When the last event stream ends, the API closes its pools' idle connections; a request arriving right then can
be handed a connection whose socket is being closed. Reproduced deterministically here by killing the pooled
connection on the server (CLIENT KILL): a plain pool's next command fails with ConnectionError (the API's 503
store_unavailable), the API's pool reconnects and sends it once more.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError

from m4v_core.redis_client import connection_options
from service.state import async_pool


async def _get_after_kill(pool: aredis.ConnectionPool, redis_url: str, key: str) -> bytes | None:
    client = aredis.Redis(connection_pool=pool)
    try:
        await client.set(key, b"v", ex=60)  # one connection, now idle in the pool
        victim = await client.client_id()
        assert redis.Redis.from_url(redis_url).client_kill_filter(_id=victim) == 1
        return await client.get(key)  # on the killed connection
    finally:
        await client.aclose()
        await pool.disconnect()


def test_a_command_on_a_connection_closed_under_the_pool_is_sent_again(
    redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:pool-probe"
    assert asyncio.run(_get_after_kill(async_pool(redis_url, "m4v-test", 4, 5.0), redis_url, key)) == b"v"


def test_without_the_retry_the_same_command_fails(redis_url: str, key_prefix: str) -> None:
    plain = aredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=4, **connection_options(redis_url, 5.0)
    )
    with pytest.raises(RedisConnectionError):
        asyncio.run(_get_after_kill(plain, redis_url, f"{key_prefix}:pool-probe"))
