"""An HTTP transport whose every socket operation stops at one deadline for the whole exchange.

httpx's timeouts bound each connect, read and write, not an exchange: a receiver that sends one byte every
second never trips a 2 s read timeout and holds the sender as long as it likes (issue 16: 20 s held with
`webhook_timeout_s=2`). httpcore reads and writes through a network backend; DeadlineBackend wraps the
standard one so that every connect, read, write and TLS handshake gets min(its own timeout, time left before
the deadline), and one that starts after the deadline fails at once with httpcore's ReadTimeout/WriteTimeout/
ConnectTimeout, which httpx raises as its own timeout exceptions.

The deadline is set per exchange with `with deadline(seconds):` around the request (a context variable, so
each thread has its own); outside such a block the backend behaves like httpcore's SyncBackend.
"""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

Clock = Callable[[], float]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("m4v_http_deadline", default=None)


@contextmanager
def deadline(seconds: float, clock: Clock = time.monotonic) -> Iterator[None]:
    """Every socket operation made by a DeadlineBackend inside this block ends `seconds` from now."""
    token = _deadline.set(clock() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_passed(clock: Clock = time.monotonic) -> bool:
    """Whether the deadline of the current block (if any) has passed."""
    at = _deadline.get()
    return at is not None and clock() >= at


def _bounded(timeout: float | None, error: type[Exception], clock: Clock) -> float | None:
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - clock()
    if left <= 0:
        raise error("deadline of the whole exchange passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout, self.clock))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # SyncStream.write loops over send() with this timeout per call; a receiver that drains one byte a
        # second would still hold it, so large bodies are written in slices, each bounded anew.
        view = memoryview(buffer)
        for start in range(0, len(view), 16384):
            self.inner.write(
                bytes(view[start : start + 16384]), _bounded(timeout, httpcore.WriteTimeout, self.clock)
            )

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout, self.clock)
        return DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, bounded), self.clock)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's SyncBackend with every operation bounded by the current `deadline()` block."""

    def __init__(self, clock: Clock = time.monotonic, inner: httpcore.NetworkBackend | None = None) -> None:
        self.clock = clock
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout, self.clock)
        stream = self.inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return DeadlineStream(stream, self.clock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout, self.clock)
        return DeadlineStream(self.inner.connect_unix_socket(path, bounded, socket_options), self.clock)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def deadline_transport(clock: Clock = time.monotonic) -> httpx.HTTPTransport:
    """httpx's HTTPTransport (TLS verification, exception mapping) on a DeadlineBackend, keeping no idle
    connections (see m4v_core/ssrf.py: its pool is keyed by the pinned IP)."""
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    pool = transport._pool  # httpx builds its pool without a backend argument; rebuild it with ours
    transport._pool = httpcore.ConnectionPool(
        ssl_context=pool._ssl_context,
        max_connections=pool._max_connections,
        max_keepalive_connections=0,
        network_backend=DeadlineBackend(clock),
    )
    return transport
