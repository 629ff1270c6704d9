"""Per-caller rate limit in Redis: a fixed window counter, one round trip per request.

Async (redis.asyncio): the check runs on the event loop as part of authentication, so it costs no
threadpool hop of its own.

Key  <prefix>:ratelimit:<caller>:<window index>   INCR + EXPIRE (window + 1 s), in one pipeline.
A fixed window admits at most 2x the limit across a window boundary; in exchange it is one INCR, shared by
every API replica, and its Retry-After is exact (the seconds left in the current window).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aredis

from service.errors import RateLimitedError


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int  # requests seen in this window, this one included
    limit: int
    retry_after_s: int  # seconds until the window resets (>= 1)


class RateLimiter:
    def __init__(
        self,
        client: aredis.Redis,
        prefix: str,
        limit: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ):
        self.client = client
        self.prefix = prefix
        self.limit = limit
        self.window_s = window_s
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def key(self, caller: str, window: int) -> str:
        return f"{self.prefix}:ratelimit:{caller}:{window}"

    async def hit(self, caller: str) -> RateDecision:
        """Count one request of caller in the current window."""
        now = self.clock()
        window = int(now // self.window_s)
        key = self.key(caller, window)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s + 1)  # the key names its window, so re-arming it is harmless
            count = int((await pipe.execute())[0])
        retry_after = max(1, math.ceil((window + 1) * self.window_s - now))
        return RateDecision(count <= self.limit, count, self.limit, retry_after)

    async def check(self, caller: str) -> None:
        """Raise RateLimitedError (429 + Retry-After) once caller has used up its window."""
        if not self.enabled:
            return
        decision = await self.hit(caller)
        if not decision.allowed:
            raise RateLimitedError(
                f"rate limit of {self.limit} requests per {self.window_s} s exceeded; "
                f"retry in {decision.retry_after_s} s",
                retry_after_s=decision.retry_after_s,
                details={"limit": self.limit, "window_s": self.window_s},
            )
