"""Per-caller rate limit in Redis: GCRA (the generic cell rate algorithm), one round trip per request.

Semantics, for `limit` requests per `window_s` seconds (Settings.rate_limit_requests / rate_limit_window_s):
- a caller can send up to `limit` requests at once (the burst), then one more every window_s / limit seconds
  (the emission interval); unused capacity refills at that rate, up to the burst again;
- over any t seconds a caller gets at most limit + t * limit / window_s requests, so a short burst never gets
  more than `limit`, wherever it falls (a fixed window admitted 2x the limit around its boundary, then locked
  the caller out until the window ended);
- a rejected request costs nothing; Retry-After is the exact wait, rounded up to whole seconds (>= 1).

GCRA keeps one number per caller, its theoretical arrival time (TAT), in microseconds of the Redis server's
clock (`TIME`), so every API replica agrees however their own clocks drift. A request at `now` is allowed
when new_tat = max(TAT, now) + interval is at most now + limit * interval (the burst tolerance); then
new_tat is stored, else nothing changes. The key expires at new_tat: by then the caller has its full burst
back, which is what a missing key means. This is the algorithm of redis-cell's CL.THROTTLE.

Key  <prefix>:ratelimit:<caller>   string, TAT in µs, PX until the TAT.
Async (redis.asyncio): the check runs on the event loop as part of authentication. The script is registered
once and run with EVALSHA (one round trip; redis-py loads it once more after a SCRIPT FLUSH or a failover).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aredis

from m4v_core.keys import Keys
from service.errors import RateLimitedError

US_PER_S = 1_000_000

# KEYS[1] the caller's TAT; ARGV[1] the emission interval (µs), ARGV[2] the burst (requests), ARGV[3] (tests
# only: RateLimiter(clock=...)) the time in µs instead of the server's TIME.
# Returns {allowed 0|1, requests still allowed right now, µs until the next request would be allowed}.
# TIME makes the script non-deterministic; Redis >= 5 replicates its effects (the SET), not the script.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), 0}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int  # further requests the caller could send right now
    wait_us: int  # until the caller's next request would be allowed (0 when this one was)

    @property
    def retry_after_s(self) -> int:
        """The Retry-After header: the wait rounded up to whole seconds, at least 1."""
        return max(1, -(-self.wait_us // US_PER_S))


class RateLimiter:
    def __init__(
        self,
        client: aredis.Redis,
        prefix: str,
        limit: int,
        window_s: int,
        clock_us: Callable[[], int] | None = None,
    ):
        """clock_us: the current time in µs for tests; None (always in the service) = the Redis server's."""
        self.client = client
        self.clock_us = clock_us
        self.keys = Keys(prefix)
        self.limit = limit
        self.window_s = window_s
        # Rounded to whole µs (at least 1); the burst stays exactly `limit` requests.
        self.interval_us = max(1, round(window_s * US_PER_S / limit)) if limit > 0 else 0
        self._gcra = client.register_script(_GCRA_LUA)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def key(self, caller: str) -> str:
        return self.keys.ratelimit(caller)

    async def hit(self, caller: str) -> RateDecision:
        """Spend one request of caller's budget if it has one (a rejected request spends nothing)."""
        assert self.enabled, "hit() needs limit > 0"
        args = [self.interval_us, self.limit]
        if self.clock_us is not None:
            args.append(self.clock_us())
        allowed, remaining, wait_us = await self._gcra(keys=[self.key(caller)], args=args)
        return RateDecision(bool(allowed), int(remaining), int(wait_us))

    async def check(self, caller: str) -> None:
        """Raise RateLimitedError (429 + Retry-After) when caller has no request left right now."""
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
