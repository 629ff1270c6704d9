"""Redis connection options every client of this service uses: a silent partition cannot hang a process.

A Redis that stops answering without closing the connection (a dropped route, a frozen VM, a NAT that
forgot the flow) leaves a client without a read timeout waiting for ever. So every client gets a connect
timeout, a read timeout, TCP keepalive (the kernel probes an idle connection after KEEPALIVE_IDLE_S and
gives up after KEEPALIVE_PROBES unanswered probes, KEEPALIVE_INTERVAL_S apart) and a health check of
connections idle for HEALTH_CHECK_S before they are reused. No command of ours blocks on the server for
longer than the read timeout, except the API's SSE reads, whose client gets a longer one
(service/state.py).
"""

from __future__ import annotations

import socket
from typing import Any

KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3
HEALTH_CHECK_S = 15


def keepalive_options() -> dict[int, int]:
    """TCP keepalive tuning where the platform has the options (Linux does; others keep their defaults)."""
    wanted = {
        "TCP_KEEPIDLE": KEEPALIVE_IDLE_S,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def connection_options(
    url: str, socket_timeout_s: float, connect_timeout_s: float | None = None
) -> dict[str, Any]:
    """Keyword arguments for redis.Redis.from_url / redis.asyncio.Redis.from_url(url, ...). A unix socket
    (`m4v up`'s embedded Redis) gets the timeouts and the health check, not TCP keepalive."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s if connect_timeout_s is not None else socket_timeout_s,
        "health_check_interval": HEALTH_CHECK_S,
    }
    if not url.startswith("unix:"):
        options |= {"socket_keepalive": True, "socket_keepalive_options": keepalive_options()}
    return options
