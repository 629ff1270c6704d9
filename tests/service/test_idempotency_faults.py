"""Idempotency-Key under faults (issue 15, item 6), against the real Redis and the real app:
an API that dies holding a key, a transaction whose reply is lost after it committed, replays that wait."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

import service.submit
from m4v_core import Settings
from m4v_core.keys import Keys
from service.app import create_app
from tests.service.conftest import assert_error_shape
from tests.service.reply_cutter import ReplyCutter

BODY = {"prompt": "a cat on a mat", "seed": 3}

# A real API process that dies (os._exit) inside POST /generate, after the key was reserved and before the
# job was stored: what a SIGKILL, an OOM kill or a node loss does there.
CRASH = """
import os, sys
import service.submit
from fastapi.testclient import TestClient
from m4v_core import Settings
from service.app import create_app

url, prefix, key, body = sys.argv[1:5]
service.submit._admit = lambda state: os._exit(3)
with TestClient(create_app(Settings(redis_url=url, key_prefix=prefix, preset="tiny"))) as client:
    headers = {"Idempotency-Key": key, "content-type": "application/json"}
    client.post("/generate", content=body, headers=headers)
"""


def post(client: TestClient, key: str, body: dict[str, object] = BODY):  # type: ignore[no-untyped-def]
    return client.post("/generate", json=body, headers={"Idempotency-Key": key})


def stored_jobs(r: redis.Redis, prefix: str) -> list[str]:
    """Ids of every job record under the prefix (`{p}:job:{id}`, not its events or flags)."""
    keys = [k.decode() for k in r.scan_iter(match=f"{prefix}:job:*", count=1000)]
    return sorted(k.split(":")[2] for k in keys if k.count(":") == 2)


def test_an_api_that_died_holding_a_key_frees_it_within_seconds(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    """Before: the dead request's key lived job_ttl_s (7 days) and every retry got 409 after 2 s."""
    r = redis.Redis.from_url(redis_url)
    args = [redis_url, settings.key_prefix, "k-crash", json.dumps(BODY)]
    died = subprocess.run([sys.executable, "-c", CRASH, *args], timeout=300, capture_output=True)
    assert died.returncode == 3, died.stderr.decode()[-2000:]
    key = Keys(settings.key_prefix).idempotency("open", "k-crash")
    assert 0 < r.ttl(key) <= 60  # a reservation, not a 7-day poisoned key
    assert stored_jobs(r, settings.key_prefix) == []
    # A retry now waits for the dead reservation to lapse, then creates the job itself.
    retry = post(client, "k-crash")
    assert retry.status_code == 202, retry.text
    assert post(client, "k-crash").json()["id"] == retry.json()["id"]
    assert stored_jobs(r, settings.key_prefix) == [retry.json()["id"]]


@pytest.fixture
def cut_client(settings: Settings, redis_url: str) -> Iterator[tuple[TestClient, ReplyCutter]]:
    """The app talking to Redis through a ReplyCutter that loses the reply of the job's transaction."""
    r = redis.Redis.from_url(redis_url)
    upstream = urlsplit(redis_url)
    cutter = ReplyCutter(
        upstream=(upstream.hostname or "127.0.0.1", upstream.port or 6379),
        marker=b"lost-reply-marker",
        committed=lambda: bool(stored_jobs(r, settings.key_prefix)),
        cuts=20,  # more than any client retry: every copy of the transaction loses its reply
    )
    port = cutter.start()
    url = f"redis://127.0.0.1:{port}{upstream.path}"
    try:
        with TestClient(create_app(settings.model_copy(update={"redis_url": url}))) as client:
            yield client, cutter
    finally:
        cutter.close()


def test_a_job_committed_before_its_reply_was_lost_is_what_a_retry_gets(
    cut_client: tuple[TestClient, ReplyCutter], settings: Settings, redis_url: str
) -> None:
    """Before: the request answered 503 and deleted the key, and the client's retry created a second job
    (two records, both queued)."""
    client, cutter = cut_client
    body = {"prompt": "lost-reply-marker: a dog", "seed": 4}
    first = post(client, "k-cut", body)
    assert cutter.cut_count >= 1  # the reply of a committed transaction was lost
    assert first.status_code in (202, 503), first.text
    cutter.cuts = 0
    retry = post(client, "k-cut", body)
    assert retry.status_code == 200, retry.text
    r = redis.Redis.from_url(redis_url)
    assert stored_jobs(r, settings.key_prefix) == [retry.json()["id"]]  # one job, the one a retry gets
    if first.status_code == 202:
        assert first.json()["id"] == retry.json()["id"]
    queued = r.lrange(Keys(settings.key_prefix).rq_queue("normal"), 0, -1)
    assert queued == [retry.json()["id"].encode()]  # queued once


def test_a_lost_reply_without_a_key_stores_and_queues_the_job_once(
    cut_client: tuple[TestClient, ReplyCutter], settings: Settings, redis_url: str
) -> None:
    """Before: 503 for a job that was stored and queued (a client would submit it again)."""
    client, cutter = cut_client
    first = client.post("/generate", json={"prompt": "lost-reply-marker: a fox"})
    assert cutter.cut_count == 1
    assert first.status_code == 202, first.text  # read back: it committed
    r = redis.Redis.from_url(redis_url)
    keys = Keys(settings.key_prefix)
    assert r.lrange(keys.rq_queue("normal"), 0, -1) == [first.json()["id"].encode()]
    assert r.xlen(keys.events(first.json()["id"])) == 1


class HeldAdmission:
    """Holds POST /generate between reserving its key and storing its job, until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.inner = service.submit._admit

    def __call__(self, state: object) -> None:
        self.entered.set()
        assert self.release.wait(60), "never released"
        self.inner(state)  # type: ignore[arg-type]


REPLAYS = 60  # more than the threadpool's 40 threads


async def _replays_while_the_first_request_is_held(settings: Settings, held: HeldAdmission) -> dict:  # type: ignore[type-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.m4v.clock = lambda: 0.0  # a replay's wait never times out: only the first request ends it
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            headers = {"Idempotency-Key": "k-wait"}
            first = asyncio.create_task(http.post("/generate", json=BODY, headers=headers))
            while not held.entered.is_set():
                await asyncio.sleep(0.01)
            replays = [
                asyncio.create_task(http.post("/generate", json=BODY, headers=headers))
                for _ in range(REPLAYS)
            ]
            # Let the replays reach their wait (a head start, not a measurement: they can only end once the
            # first request is released), then ask a sync route, which needs a threadpool thread.
            await asyncio.sleep(0.5)
            ready = await http.get("/readyz")
            replays_done_before_ready = sum(t.done() for t in replays)
            held.release.set()
            return {
                "ready": ready.status_code,
                "done_before_ready": replays_done_before_ready,
                "first": await first,
                "replays": await asyncio.gather(*replays),
            }


def test_replays_wait_on_the_event_loop_and_get_the_first_requests_job(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each replay slept in a threadpool thread; 60 of them took all 40, /readyz waited behind
    them, and after 2 s every replay answered 409 although the first request then stored its job."""
    held = HeldAdmission()
    monkeypatch.setattr(service.submit, "_admit", held)
    out = asyncio.run(_replays_while_the_first_request_is_held(settings, held))
    assert out["ready"] == 200
    assert out["done_before_ready"] == 0  # /readyz answered while every replay was still waiting
    assert out["first"].status_code == 202
    job_id = out["first"].json()["id"]
    assert [(x.status_code, x.json()["id"]) for x in out["replays"]] == [(200, job_id)] * REPLAYS


def test_a_replay_gives_up_on_a_live_reservation_by_the_injected_clock(
    settings: Settings, redis_url: str
) -> None:
    """A replay waits at most WAIT_S by the app's clock, then 409 with Retry-After (no real waiting here)."""
    ticks = iter(range(0, 10_000, 100))
    with TestClient(create_app(settings)) as client:
        client.app.state.m4v.clock = lambda: float(next(ticks))  # type: ignore[attr-defined]
        first = post(client, "k-live")
        key = Keys(settings.key_prefix).idempotency("open", "k-live")
        r = redis.Redis.from_url(redis_url)
        digest, job_id = r.get(key).decode().split(" ")  # type: ignore[union-attr]
        r.set(key, f"pending {digest} {job_id}", ex=60)  # as while a request stores its job
        replay = post(client, "k-live")
        error = assert_error_shape(replay, 409, "idempotency_conflict")
        assert int(replay.headers["retry-after"]) > 0
        assert error["details"]["job_id"] == first.json()["id"]
        assert "still being processed" in error["message"]
