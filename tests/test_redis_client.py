"""Every Redis client of the API and the worker has a read timeout and TCP keepalive
(m4v_core/redis_client.py), so a Redis that goes silent without closing the connection cannot hang them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from m4v_cli.seaweed import SeaweedS3
from m4v_core import Settings
from m4v_core.redis_client import connection_options
from service.metrics import ApiMetrics
from service.state import ServiceState
from tests.worker.jobs_helpers import SECRET, service_settings
from worker.main import build_worker


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a partition that drops replies."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_client_with_our_options_times_out_against_a_silent_server(silent_redis: str) -> None:
    client = redis.Redis.from_url(silent_redis, **connection_options(silent_redis, 0.3))
    with pytest.raises(redis.TimeoutError):
        client.ping()


def test_a_unix_socket_gets_timeouts_without_tcp_keepalive() -> None:
    """`m4v up` runs Redis on a unix socket, whose connections take no keepalive options."""
    options = connection_options("unix:///tmp/redis.sock?db=0", 5.0)
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 5.0
    assert "socket_keepalive" not in options and "socket_keepalive_options" not in options
    redis.Redis.from_url("unix:///tmp/redis.sock?db=0", **options)  # accepted (no connection made)


def assert_guarded(kwargs: dict[str, Any]) -> None:
    assert kwargs.get("socket_timeout") and kwargs.get("socket_connect_timeout"), kwargs
    assert kwargs.get("socket_keepalive") is True and kwargs.get("socket_keepalive_options"), kwargs


def test_every_client_of_the_api_and_the_worker_has_a_timeout_and_keepalive(
    redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tiny_pipeline: Any
) -> None:
    settings: Settings = service_settings(redis_url, key_prefix, s3_server, s3_bucket, webhook_secret=SECRET)
    worker = build_worker(settings, pipeline=tiny_pipeline)
    try:
        assert_guarded(worker.context.store.r.connection_pool.connection_kwargs)
    finally:
        worker.context.webhooks.close()
    state = ServiceState.open(settings, ApiMetrics())
    try:
        for client in (state.redis, state.aredis, state.aredis_ops):
            assert_guarded(client.connection_pool.connection_kwargs)
    finally:
        asyncio.run(state.close())
