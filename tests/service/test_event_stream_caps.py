"""Issue 16: event streams cannot exhaust the API's Redis connections. A real uvicorn server on 127.0.0.1 and
real Redis: 300 streams opened at once and closed (the Redis clients this API opened, told apart from
everyone else's on the shared server by CLIENT SETNAME, return to the baseline); the global cap (503) and
the per-key cap (429 naming the limit and the use; another key is unaffected); an idle stream is closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from service.auth import key_entry, new_api_key
from service.state import OPS_POOL_SIZE, client_name

ALICE = new_api_key()
BOB = new_api_key()
STREAMS = int(os.environ.get("M4V_TEST_STREAMS", "300"))


class Server:
    """The API app served by uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def open_streams(self) -> int:
        return int(self.app.state.m4v.streams.open)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Server]:
    server = Server(settings)
    try:
        yield server
    finally:
        server.close()


def our_clients(r: redis.Redis, settings: Settings) -> int:
    """Redis connections this API opened (CLIENT SETNAME), whatever else uses the server."""
    name = client_name(settings)  # type: ignore[arg-type]
    return sum(1 for c in r.client_list() if c.get("name") == name)


def wait_until(predicate: Any, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def new_job(url: str, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"{url}/generate", json={"prompt": "a red ball"}, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def open_streams(
    client: httpx.AsyncClient, stack: contextlib.AsyncExitStack, path: str, count: int, key: str | None = None
) -> None:
    """Open `count` streams of `path` and read each up to its first event (the job's `status`), so every
    one is being served when this returns; they stay open until `stack` closes."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def one() -> None:
        response = await stack.enter_async_context(client.stream("GET", path, headers=headers))
        assert response.status_code == 200, await response.aread()
        # The line iterator is kept (not left with `break`): a dropped async generator is finalized, and
        # that closes the response, i.e. the stream.
        lines = response.aiter_lines()
        stack.push_async_callback(lines.aclose)
        while not (await lines.__anext__()).startswith("event:"):
            pass

    await asyncio.gather(*(one() for _ in range(count)))


def test_300_streams_opened_and_closed_leave_no_redis_clients_behind(
    settings: Settings, redis_url: str
) -> None:
    capped = settings.model_copy(update={"sse_max_streams": STREAMS})
    r = redis.Redis.from_url(redis_url)
    with serving(capped) as server:
        path = f"/jobs/{new_job(server.url)}/events"
        baseline = our_clients(r, capped)
        figures: dict[str, int] = {}

        async def scenario() -> None:
            limits = httpx.Limits(max_connections=STREAMS + 10)
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client,
                contextlib.AsyncExitStack() as stack,
            ):
                await open_streams(client, stack, path, STREAMS)
                figures["open"] = our_clients(r, capped)
                over = await asyncio.wait_for(client.get(path), 60)  # the global cap (uncapped: never ends)
                figures["over_cap"] = over.status_code
                assert over.json()["error"]["details"] == {"limit": STREAMS, "in_use": STREAMS}

        asyncio.run(scenario())
        assert figures["over_cap"] == 503
        # bounded pools: one connection per stream at most, plus the pool of short commands
        assert figures["open"] <= baseline + STREAMS + OPS_POOL_SIZE
        assert wait_until(lambda: server.open_streams == 0), server.open_streams
        assert wait_until(lambda: our_clients(r, capped) <= baseline), (our_clients(r, capped), baseline)
        print(
            f"redis clients: baseline {baseline}, {STREAMS} streams open {figures['open']}, "
            f"after close {our_clients(r, capped)}"
        )
        assert httpx.get(f"{server.url}/jobs/{path.split('/')[2]}", timeout=30).status_code == 200


def test_one_key_cannot_hold_more_streams_than_its_cap(settings: Settings) -> None:
    keyed = settings.model_copy(
        update={
            "auth_mode": "keys",
            "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
            "sse_max_streams_per_key": 3,
        }
    )
    with serving(keyed) as server:
        alice_path = f"/jobs/{new_job(server.url, ALICE)}/events"
        bob_path = f"/jobs/{new_job(server.url, BOB)}/events"
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                async with contextlib.AsyncExitStack() as alice_streams:
                    await open_streams(client, alice_streams, alice_path, 3, ALICE)
                    refused = await client.get(alice_path, headers={"Authorization": f"Bearer {ALICE}"})
                    seen["refused"] = (refused.status_code, refused.json()["error"])
                    async with contextlib.AsyncExitStack() as bob_streams:  # another key is unaffected
                        await open_streams(client, bob_streams, bob_path, 1, BOB)
                assert wait_until(lambda: server.open_streams == 0)
                async with contextlib.AsyncExitStack() as again:  # the slots came back
                    await open_streams(client, again, alice_path, 3, ALICE)

        asyncio.run(scenario())
    status, error = seen["refused"]
    assert status == 429 and error["type"] == "too_many_streams"
    assert error["details"] == {"limit": 3, "in_use": 3}


def test_an_idle_stream_is_closed(settings: Settings) -> None:
    """A queued job with no new event: the stream ends (without `done`) once it has been idle for
    sse_idle_timeout_s; without the timeout it would stay open (kept alive by pings) for ever."""
    idle = settings.model_copy(update={"sse_idle_timeout_s": 0.5})
    with serving(idle) as server:
        path = f"/jobs/{new_job(server.url)}/events"

        async def read_to_end() -> list[str]:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=120) as client,
                client.stream("GET", path) as response,
            ):
                return [line async for line in response.aiter_lines() if line.startswith("event:")]

        events = asyncio.run(asyncio.wait_for(read_to_end(), 60))
        assert events == ["event: status"]
        assert wait_until(lambda: server.open_streams == 0)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
