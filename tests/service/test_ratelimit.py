"""Per-key rate limit in Redis (GCRA): a burst of at most `limit`, then one request per window/limit seconds.

The limiter reads the Redis server's clock; the window tests give it a clock of their own
(RateLimiter(clock_us=...)), so they step time exactly instead of sleeping on a busy machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis.asyncio as aredis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from service.auth import key_entry, new_api_key
from service.errors import RateLimitedError
from service.ratelimit import RateDecision, RateLimiter
from tests.service.conftest import assert_error_shape

ALICE = new_api_key()
BOB = new_api_key()
LIMIT = 3
T = TypeVar("T")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def limited_settings(settings: Settings, **extra: object) -> Settings:
    update = {
        "auth_mode": "keys",
        "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
        "rate_limit_requests": LIMIT,
        "rate_limit_window_s": 60,
        **extra,
    }
    return settings.model_copy(update=update)


class Clock:
    """Time in µs that moves only when a test says so."""

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self.now_us = int(start_s * 1e6)

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1e6)


def with_limiter(
    redis_url: str,
    prefix: str,
    limit: int,
    window_s: int,
    scenario: Callable[[RateLimiter], Awaitable[T]],
    clock: Clock | None = None,
) -> T:
    """Run scenario against a RateLimiter on a fresh async client (closed afterwards)."""

    async def main() -> T:
        client = aredis.Redis.from_url(redis_url)
        try:
            return await scenario(RateLimiter(client, prefix, limit, window_s, clock_us=clock))
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.fixture
def limited(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(limited_settings(settings))) as c:
        yield c


def test_the_request_over_the_limit_answers_429_with_retry_after(limited: TestClient) -> None:
    for _ in range(LIMIT):
        assert limited.get("/jobs/nope", headers=bearer(ALICE)).status_code == 404
    response = limited.post("/generate", json={"prompt": "a red ball"}, headers=bearer(ALICE))
    error = assert_error_shape(response, 429, "rate_limited")
    assert error["details"] == {"limit": LIMIT, "window_s": 60}
    assert response.headers["Retry-After"] == str(60 // LIMIT)  # one request every 20 s, not the window's end


def test_each_key_has_its_own_budget(limited: TestClient) -> None:
    for _ in range(LIMIT + 1):
        limited.get("/jobs/nope", headers=bearer(ALICE))
    assert limited.get("/jobs/nope", headers=bearer(ALICE)).status_code == 429
    assert limited.get("/jobs/nope", headers=bearer(BOB)).status_code == 404


def test_requests_without_a_valid_key_do_not_spend_a_keys_budget(limited: TestClient) -> None:
    for _ in range(LIMIT * 2):
        assert limited.get("/jobs/nope", headers=bearer("m4v_wrong")).status_code == 401
    assert limited.get("/jobs/nope", headers=bearer(ALICE)).status_code == 404


def test_open_mode_limits_per_client_address(settings: Settings) -> None:
    app = create_app(limited_settings(settings, auth_mode="open"))
    with TestClient(app) as c:
        codes = [c.get("/jobs/nope").status_code for _ in range(LIMIT + 1)]
    assert codes == [404] * LIMIT + [429]


def test_zero_turns_the_limit_off(settings: Settings) -> None:
    with TestClient(create_app(limited_settings(settings, rate_limit_requests=0))) as c:
        codes = {c.get("/jobs/nope", headers=bearer(ALICE)).status_code for _ in range(LIMIT * 3)}
    assert codes == {404}


def test_health_probes_are_never_rate_limited(limited: TestClient) -> None:
    assert {limited.get("/healthz").status_code for _ in range(LIMIT * 3)} == {200}


def test_retry_after_is_the_wait_rounded_up_to_whole_seconds() -> None:
    assert RateDecision(False, 0, 1).retry_after_s == 1
    assert RateDecision(False, 0, 20_000_000).retry_after_s == 20
    assert RateDecision(False, 0, 20_000_001).retry_after_s == 21


def test_a_burst_of_twice_the_limit_across_a_second_boundary_admits_exactly_the_limit(
    redis_url: str, key_prefix: str
) -> None:
    """2 per 1 s: 2 concurrent requests just before a whole second and 2 just after it (where a fixed 1 s
    window would start afresh) admit 2, not 4: the 80 ms between them refill nothing (one per 0.5 s)."""
    clock = Clock(start_s=1_700_000_000.96)  # 40 ms before a whole second

    async def scenario(limiter: RateLimiter) -> list[bool]:
        before = await asyncio.gather(*(limiter.hit("k") for _ in range(2)))
        clock.advance(0.08)  # 40 ms after it
        after = await asyncio.gather(*(limiter.hit("k") for _ in range(2)))
        return [d.allowed for d in before + after]

    assert with_limiter(redis_url, key_prefix, 2, 1, scenario, clock) == [True, True, False, False]


def test_after_a_429_one_request_is_allowed_again_after_window_over_limit(
    redis_url: str, key_prefix: str
) -> None:
    """2 per 1 s: after the burst the caller waits 0.5 s from its first request (not the rest of a window), is
    refused 0.15 s before that, and then gets one request (not a new burst)."""
    clock = Clock()

    async def scenario(limiter: RateLimiter) -> None:
        assert [(await limiter.hit("k")).allowed for _ in range(3)] == [True, True, False]
        assert (await limiter.hit("k")).wait_us == 500_000
        clock.advance(0.35)
        early = await limiter.hit("k")
        assert not early.allowed and early.wait_us == 150_000
        clock.advance(0.15)
        assert (await limiter.hit("k")).allowed
        after = await limiter.hit("k")
        # The next slot is one interval after the moment `early` said the caller would be let in.
        assert not after.allowed and after.wait_us == 500_000

    with_limiter(redis_url, key_prefix, 2, 1, scenario, clock)


def test_retry_after_is_the_exact_wait_and_a_refused_request_does_not_extend_it(
    redis_url: str, key_prefix: str
) -> None:
    """3 per 60 s: one request every 20 s; after the burst, each 429 says 20 s (the burst took < 1 s)."""

    async def scenario(limiter: RateLimiter) -> list[RateLimitedError]:
        for _ in range(3):
            await limiter.check("k")
        errors = []
        for _ in range(2):
            with pytest.raises(RateLimitedError) as info:
                await limiter.check("k")
            errors.append(info.value)
        return errors

    errors = with_limiter(redis_url, key_prefix, 3, 60, scenario)
    assert [e.headers["Retry-After"] for e in errors] == ["20", "20"]
    assert errors[0].details == {"limit": 3, "window_s": 60}


def test_a_callers_key_lives_until_its_burst_is_back_then_expires(redis_url: str, key_prefix: str) -> None:
    """The key expires when the caller has its whole burst back: after one request of 10 per 1 s, in 0.1 s;
    after a whole burst of 3 per 60 s, in 60 s."""

    async def scenario(limiter: RateLimiter) -> tuple[int, int]:
        await limiter.hit("idle")
        ttl_ms = await limiter.client.pttl(limiter.key("idle"))
        await asyncio.sleep(0.15)
        return ttl_ms, await limiter.client.exists(limiter.key("idle"))

    ttl_ms, exists = with_limiter(redis_url, key_prefix, 10, 1, scenario)
    assert 0 < ttl_ms <= 100
    assert exists == 0

    async def burst(limiter: RateLimiter) -> int:
        for _ in range(3):
            await limiter.hit("busy")
        return int(await limiter.client.pttl(limiter.key("busy")))

    assert 59_000 < with_limiter(redis_url, key_prefix, 3, 60, burst) <= 60_000


def test_redis_down_answers_503_not_500(settings: Settings) -> None:
    app = create_app(limited_settings(settings, redis_url="redis://127.0.0.1:1/0"))
    with TestClient(app) as c:
        response = c.post("/generate", json={"prompt": "a red ball"}, headers=bearer(ALICE))
    assert_error_shape(response, 503, "store_unavailable")
    assert response.headers["Retry-After"]
