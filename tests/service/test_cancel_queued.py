"""DELETE /jobs/{id} on a queued job: its `canceled` webhook goes out with no worker running (the API's own
dispatcher sends it to a real receiver), only if subscribed, and its FLOP estimate leaves the queue's sum."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from standardwebhooks import Webhook

from m4v_core import JobStore, Settings
from m4v_core.keys import Keys
from m4v_core.webhooks import WebhookDispatcher, WebhookSender
from service.app import create_app
from tests.service.conftest import submit
from tests.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    signed = Settings(
        redis_url=settings.redis_url,
        key_prefix=settings.key_prefix,
        preset="tiny",
        log_json=True,
        webhook_secret=SECRET,
        webhook_allow_hosts=["127.0.0.1"],
    )
    with TestClient(create_app(signed)) as client:
        yield client


def wait_until_sent(client: TestClient, timeout_s: float = 10.0) -> None:
    """Until the store holds no pending delivery (attempts are recorded on the job before that)."""
    sender: WebhookSender = client.app.state.m4v.webhooks  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sender.pending():
        time.sleep(0.02)
    assert sender.pending() == 0


def test_queued_job_canceled_with_no_worker_gets_one_verified_canceled_webhook(
    api: TestClient, receiver: Receiver, store: JobStore
) -> None:
    assert api.get("/workers").json()["count"] == 0
    job = submit(api, webhook_url=receiver.url, webhook_events=["canceled"])
    assert api.delete(f"/jobs/{job['id']}").json()["status"] == "canceled"

    receiver.wait_for(1)
    wait_until_sent(api)
    (headers, body), *more = receiver.deliveries
    assert more == []
    event = Webhook(SECRET).verify(body, headers)
    assert event["type"] == "job.canceled"
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "canceled"
    assert "owner" not in event["data"] and "worker" not in event["data"]
    (attempt,) = store.get(job["id"]).webhook_deliveries
    assert (attempt.event, attempt.ok, attempt.webhook_id) == ("canceled", True, headers["webhook-id"])
    assert 'm4v_webhook_deliveries_total{outcome="delivered"} 1.0' in api.get("/metrics").text


def test_queued_job_not_subscribed_to_canceled_gets_no_webhook(
    api: TestClient, receiver: Receiver, store: JobStore
) -> None:
    quiet = submit(api, webhook_url=receiver.url, webhook_events=["completed", "failed"])
    loud = submit(api, webhook_url=receiver.url, webhook_events=["canceled"])
    api.delete(f"/jobs/{quiet['id']}")
    api.delete(f"/jobs/{loud['id']}")  # queued after `quiet` would have been: a barrier for it

    receiver.wait_for(1)
    wait_until_sent(api)
    assert [Webhook(SECRET).verify(b, h)["data"]["id"] for h, b in receiver.deliveries] == [loud["id"]]
    assert store.get(quiet["id"]).webhook_deliveries == []


def test_api_without_secret_leaves_the_canceled_webhook_to_the_workers(
    settings: Settings, receiver: Receiver, store: JobStore
) -> None:
    """No secret, no API dispatcher (it would record the workers' deliveries as refused): workers send it."""
    unsigned = settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})  # the receiver's address
    with TestClient(create_app(unsigned)) as client:
        job = submit(client, webhook_url=receiver.url, webhook_events=["canceled"])
        client.delete(f"/jobs/{job['id']}")
        # no dispatcher thread in this process: nothing can claim the queued delivery (no sleep needed)
        assert [t for t in threading.enumerate() if t.name == WebhookDispatcher.thread_name] == []
    assert receiver.deliveries == [] and store.get(job["id"]).webhook_deliveries == []

    worker_side = WebhookSender(store.r, store, SECRET, allow_hosts=["127.0.0.1"])
    assert worker_side.deliver_due() == 1
    worker_side.close()
    (headers, body), *_ = receiver.deliveries
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.canceled"
    signed = unsigned.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    with TestClient(create_app(signed)):  # the thread the check above looks for, when there is a secret
        assert any(t.name == WebhookDispatcher.thread_name for t in threading.enumerate())


def test_cancel_queued_job_drops_its_flop_estimate(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    r = redis.Redis.from_url(redis_url)
    kept = submit(client)
    job = submit(client)
    assert r.hexists(Keys(settings.key_prefix).job_flops(), job["id"])
    client.delete(f"/jobs/{job['id']}")
    assert not r.hexists(Keys(settings.key_prefix).job_flops(), job["id"])
    assert r.hexists(Keys(settings.key_prefix).job_flops(), kept["id"])
