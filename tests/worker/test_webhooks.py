"""m4v_core/webhooks.py: Standard Webhooks signatures, retries with a stable id, event filter, refused URLs.

The SSRF guard itself (resolve once, check, pin the address) is tested in tests/worker/test_ssrf.py.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from m4v_core import JobStore
from m4v_core.webhook_signing import sign
from m4v_core.webhooks import WebhookDispatcher, WebhookSender
from tests.webhook_receiver import Receiver
from tests.worker.jobs_helpers import make_job
from worker.metrics import WorkerMetrics

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), prefix=key_prefix)


def make_sender(store: JobStore, **kwargs: object) -> WebhookSender:
    defaults: dict[str, object] = {"retry_delays_s": [0.0, 0.0], "allow_hosts": ["127.0.0.1"], "jitter": 0.0}
    defaults.update(kwargs)
    return WebhookSender(store.r, store, SECRET, **defaults)  # type: ignore[arg-type]


def test_signature_matches_the_standard_webhooks_reference() -> None:
    body = '{"type":"job.completed"}'
    ref = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(1700000000, tz=UTC), body)
    assert sign(SECRET, "msg_1", 1700000000, body) == ref
    assert sign(SECRET, "msg_1", 1700000001, body) != ref


def test_delivery_verifies_with_standardwebhooks_and_carries_the_job(store: JobStore) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    metrics = WorkerMetrics()
    sender = make_sender(store, transport=httpx.MockTransport(handler), metrics=metrics)
    delivery = sender.submit(job, "started")
    assert delivery is not None
    assert sender.deliver_due() == 1
    payload = Webhook(SECRET).verify(seen[0].content, dict(seen[0].headers))
    assert payload["type"] == "job.started"
    assert payload["data"]["id"] == job.id and "owner" not in payload["data"]
    assert seen[0].headers["webhook-id"] == delivery.webhook_id
    assert [a.ok for a in store.get(job.id).webhook_deliveries] == [True]
    assert metrics.sample("m4v_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    assert sender.pending() == 0


def test_tampered_body_does_not_verify(store: JobStore) -> None:
    seen: list[httpx.Request] = []
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    sender = make_sender(
        store, transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200))
    )
    sender.submit(job, "started")
    sender.deliver_due()
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(seen[0].content.replace(b"started", b"failed"), dict(seen[0].headers))


def test_unsubscribed_events_and_jobs_without_url_send_nothing(store: JobStore) -> None:
    sender = make_sender(store, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    job = make_job(webhook_url="http://127.0.0.1:9/hook", events=["completed"])
    assert sender.submit(job, "started") is None
    assert sender.submit(job, "progress") is None
    assert sender.submit(job, "completed") is not None
    assert sender.submit(make_job(), "completed") is None
    assert sender.pending() == 1


def test_failures_are_retried_then_given_up_and_recorded(store: JobStore) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    metrics = WorkerMetrics()
    sender = make_sender(store, transport=httpx.MockTransport(lambda r: httpx.Response(503)), metrics=metrics)
    sender.submit(job, "failed")
    for _ in range(5):
        sender.deliver_due(now=time.time() + 1)
    attempts = store.get(job.id).webhook_deliveries
    assert [a.attempt for a in attempts] == [1, 2, 3]  # 1 try + 2 retries
    assert all(a.status_code == 503 and not a.ok for a in attempts)
    assert metrics.sample("m4v_webhook_deliveries_total", {"outcome": "retrying"}) == 2
    assert metrics.sample("m4v_webhook_deliveries_total", {"outcome": "failed"}) == 1
    assert sender.pending() == 0


def test_retry_waits_for_its_backoff(store: JobStore) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    sender = make_sender(
        store, retry_delays_s=[100.0], transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    sender.submit(job, "completed")
    assert sender.deliver_due() == 1
    assert sender.deliver_due() == 0  # next try is ~100 s away
    assert sender.deliver_due(now=time.time() + 130) == 1


def test_redirects_are_not_followed(store: JobStore) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest"})

    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    make_sender(store, retry_delays_s=[], transport=httpx.MockTransport(handler)).submit(job, "started")
    make_sender(store, retry_delays_s=[], transport=httpx.MockTransport(handler)).deliver_due()
    assert calls == ["http://127.0.0.1:9/hook"]
    assert store.get(job.id).webhook_deliveries[0].status_code == 302


def test_refused_url_is_recorded_and_never_retried(store: JobStore) -> None:
    job = make_job(webhook_url="http://10.0.0.1/hook")
    store.create(job)
    metrics = WorkerMetrics()
    sender = make_sender(
        store, allow_hosts=[], metrics=metrics, transport=httpx.MockTransport(lambda r: 1 / 0)
    )
    sender.submit(job, "started")
    assert sender.deliver_due() == 1
    (attempt,) = store.get(job.id).webhook_deliveries
    assert attempt.error is not None and attempt.error.startswith("refused")
    assert metrics.sample("m4v_webhook_deliveries_total", {"outcome": "refused"}) == 1
    assert sender.pending() == 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(codes=[500, 500])  # then 200
    yield rec
    rec.close()


def test_real_receiver_gets_third_try_with_same_id_and_valid_signature(
    store: JobStore, receiver: Receiver
) -> None:
    job = make_job(webhook_url=receiver.url)
    store.create(job)
    sender = make_sender(store, retry_delays_s=[0.1, 0.1, 0.1], jitter=0.5, rng=random.Random(0))
    dispatcher = WebhookDispatcher(sender, poll_s=0.05).start()
    try:
        sender.submit(job, "completed")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(receiver.deliveries) < 3 or sender.pending()):
            time.sleep(0.05)
    finally:
        dispatcher.stop()
        sender.close()
    assert len(receiver.deliveries) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.deliveries}
    assert len(ids) == 1
    headers, body = receiver.deliveries[2]
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.completed"
    assert json.loads(body)["data"]["id"] == job.id
    attempts = store.get(job.id).webhook_deliveries
    assert [(a.attempt, a.status_code, a.ok) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]


def test_pending_retry_survives_a_new_sender(store: JobStore) -> None:
    """A retry scheduled by one worker process is delivered by the next one (state lives in Redis)."""
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    make_sender(store, transport=httpx.MockTransport(lambda r: httpx.Response(500))).submit(job, "completed")
    make_sender(store, transport=httpx.MockTransport(lambda r: httpx.Response(500))).deliver_due()
    seen: list[str] = []
    restarted = make_sender(
        store, transport=httpx.MockTransport(lambda r: seen.append("x") or httpx.Response(200))
    )
    assert restarted.deliver_due() == 1
    assert seen == ["x"]
    assert [a.ok for a in store.get(job.id).webhook_deliveries] == [False, True]


def test_two_dispatchers_on_one_store_send_each_delivery_once(store: JobStore) -> None:
    """A worker's and the API's dispatcher drain one Redis store: the claim gives each delivery to one."""
    seen: list[str] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.005)  # widen the window in which a second dispatcher could pick the same delivery
        with lock:
            seen.append(request.headers["webhook-id"])
        return httpx.Response(204)

    senders = [make_sender(store, transport=httpx.MockTransport(handler)) for _ in range(2)]
    submitted = set()
    for _ in range(40):
        job = make_job(webhook_url="http://127.0.0.1:9/hook")
        store.create(job)
        delivery = senders[0].submit(job, "canceled")
        assert delivery is not None
        submitted.add(delivery.webhook_id)
    dispatchers = [WebhookDispatcher(s, poll_s=0.001).start() for s in senders]
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and senders[0].pending():
            time.sleep(0.01)
    finally:
        for d in dispatchers:
            d.stop()
    assert sorted(seen) == sorted(submitted)
