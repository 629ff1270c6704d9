"""Per-key rate limit in Redis: 429 with Retry-After once a window is used up, per key, reset per window."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aredis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.auth import key_entry, new_api_key
from service.errors import RateLimitedError
from service.ratelimit import RateLimiter
from tests.service.conftest import assert_error_shape
from worker.contract import Settings

ALICE = new_api_key()
BOB = new_api_key()
LIMIT = 3


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
    assert 1 <= int(response.headers["Retry-After"]) <= 60


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


def test_a_new_window_resets_the_count_and_retry_after_counts_down(redis_url: str, key_prefix: str) -> None:
    now = [960_010.0]  # 10 s into the 60 s window [960_000, 960_060)

    async def scenario() -> None:
        client = aredis.Redis.from_url(redis_url)
        limiter = RateLimiter(client, key_prefix, 2, 60, clock=lambda: now[0])
        await limiter.check("k")
        now[0] += 20
        await limiter.check("k")
        with pytest.raises(RateLimitedError) as info:
            await limiter.check("k")
        assert info.value.headers["Retry-After"] == "30"
        now[0] += 30  # the next window
        await limiter.check("k")
        assert (await limiter.hit("other")).count == 1
        await client.aclose()

    asyncio.run(scenario())


def test_window_counters_expire_in_redis(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> RateLimiter:
        client = aredis.Redis.from_url(redis_url)
        limiter = RateLimiter(client, key_prefix, 5, 7, clock=lambda: 700.0)
        await limiter.check("k")
        await client.aclose()
        return limiter

    limiter = asyncio.run(scenario())
    assert 0 < redis.Redis.from_url(redis_url).ttl(limiter.key("k", 100)) <= 8


def test_redis_down_answers_503_not_500(settings: Settings) -> None:
    app = create_app(limited_settings(settings, redis_url="redis://127.0.0.1:1/0"))
    with TestClient(app) as c:
        response = c.post("/generate", json={"prompt": "a red ball"}, headers=bearer(ALICE))
    assert_error_shape(response, 503, "store_unavailable")
    assert response.headers["Retry-After"]
