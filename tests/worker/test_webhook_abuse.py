"""Issue 16: what one webhook receiver can cost the dispatchers, against the real WebhookSender and real
receivers on 127.0.0.1 (raw sockets, so they can misbehave below HTTP): a slow-drip answer, a huge answer,
a dispatcher process SIGKILLed mid-attempt; and the retry policy (terminal events only, > 24 h, progress
throttled, bounded attempt list)."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from m4v_core import JobStore
from m4v_core.settings import CommonSettings
from m4v_core.webhooks import ATTEMPTS_KEPT, CLAIM_LEASE_S, WebhookSender
from tests.worker.jobs_helpers import make_job

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
DAY_S = 24 * 3600


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), prefix=key_prefix)


def make_sender(store: JobStore, **kwargs: object) -> WebhookSender:
    defaults: dict[str, object] = {"retry_delays_s": [0.0], "allow_hosts": ["127.0.0.1"], "jitter": 0.0}
    defaults.update(kwargs)
    return WebhookSender(store.r, store, SECRET, **defaults)  # type: ignore[arg-type]


class RawReceiver:
    """A TCP server on 127.0.0.1 that reads one HTTP request per connection, then runs `answer(conn)`.
    `sent` counts the bytes the answer got onto the socket before the client went away; `got_request` is
    set once a request arrived."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.sent = 0
        self.requests = 0
        self.got_request = threading.Event()
        self.finished = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            self.got_request.set()
            with contextlib.suppress(OSError):  # the sender closed the connection
                self.answer(self, conn)  # type: ignore[operator]
            self.finished.set()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.sock.close()


DRIP_ANSWER = b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 600 + b"\r\ncontent-length: 0\r\n\r\n"
DRIP_EVERY_S = 0.05  # the whole answer would take 31 s


def drip(rec: RawReceiver, conn: socket.socket) -> None:
    for i in range(len(DRIP_ANSWER)):
        rec.send(conn, DRIP_ANSWER[i : i + 1])
        time.sleep(DRIP_EVERY_S)


HUGE_BYTES = 64 * 1024 * 1024


def huge(rec: RawReceiver, conn: socket.socket) -> None:
    rec.send(conn, b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % HUGE_BYTES)
    chunk = bytes(65536)
    for _ in range(HUGE_BYTES // len(chunk)):
        rec.send(conn, chunk)


@pytest.fixture
def receivers() -> Iterator[list[RawReceiver]]:
    made: list[RawReceiver] = []
    yield made
    for rec in made:
        rec.close()


def test_a_slow_drip_receiver_holds_an_attempt_no_longer_than_its_deadline(
    store: JobStore, receivers: list[RawReceiver]
) -> None:
    """Each byte comes well within the 1 s read timeout, so only the attempt deadline can end the attempt:
    without one, the receiver delivers its whole 31 s answer and the attempt counts as delivered."""
    rec = RawReceiver(drip)
    receivers.append(rec)
    job = make_job(webhook_url=rec.url)
    store.create(job)
    sender = make_sender(store, timeout_s=1.0, attempt_deadline_s=1.0)
    sender.submit(job, "completed")
    started = time.monotonic()
    assert sender.deliver_due() == 1
    held = time.monotonic() - started
    rec.finished.wait(10)
    (attempt,) = store.get(job.id).webhook_deliveries
    assert not attempt.ok and attempt.status_code is None
    assert attempt.error is not None and "Timeout" in attempt.error
    assert rec.sent < len(DRIP_ANSWER)  # cut off mid-answer
    assert held < len(DRIP_ANSWER) * DRIP_EVERY_S  # generous: the whole drip would take this long
    assert sender.pending() == 1  # a terminal event: retried later
    print(f"slow drip: attempt held {held:.2f} s (deadline 1 s), {rec.sent} of {len(DRIP_ANSWER)} bytes sent")


def test_a_huge_answer_is_not_read_into_memory(store: JobStore, receivers: list[RawReceiver]) -> None:
    """A 64 MiB answer: the sender reads a few KiB and hangs up; Python memory stays far below the body."""
    rec = RawReceiver(huge)
    receivers.append(rec)
    job = make_job(webhook_url=rec.url)
    store.create(job)
    sender = make_sender(store)
    sender.submit(job, "completed")
    tracemalloc.start()
    try:
        assert sender.deliver_due() == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rec.finished.wait(10)
    (attempt,) = store.get(job.id).webhook_deliveries
    assert attempt.ok and attempt.status_code == 200
    assert peak < 4 * 1024 * 1024, peak
    assert rec.sent < HUGE_BYTES // 2  # the receiver was cut off (what it sent sat in socket buffers)
    print(
        f"huge answer: peak Python memory {peak / 1024:.0f} KiB, receiver got {rec.sent / 2**20:.1f} MiB out"
    )


KILLED_SENDER = textwrap.dedent(
    """
    import sys, redis
    from m4v_core import JobStore
    from m4v_core.webhooks import WebhookSender
    url, prefix, secret, retries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = JobStore(redis.Redis.from_url(url), prefix=prefix)
    sender = WebhookSender(store.r, store, secret, retry_delays_s=[0.0] * retries, allow_hosts=["127.0.0.1"],
                           timeout_s=50, attempt_deadline_s=50)
    sender.deliver_due()
    """
)


def hang_then_answer(rec: RawReceiver, conn: socket.socket) -> None:
    """The first request gets no answer until its sender goes away; later ones get 200."""
    if rec.requests == 1:
        conn.recv(1)  # returns when the sender's socket is closed (its process was killed)
    else:
        rec.send(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


@pytest.mark.parametrize("retries", [0, 1])
def test_an_attempt_whose_sender_was_killed_is_counted_once(
    store: JobStore, redis_url: str, receivers: list[RawReceiver], retries: int
) -> None:
    """A dispatcher process claims the delivery, POSTs it to a receiver that never answers, and is SIGKILLed
    while it waits. The attempt was counted when claimed: after the lease the next claim is the next attempt.
    With no tries left the delivery is given up (recorded as interrupted), not sent again for ever."""
    rec = RawReceiver(hang_then_answer)
    receivers.append(rec)
    job = make_job(webhook_url=rec.url)
    store.create(job)
    sender = make_sender(store, retry_delays_s=[0.0] * retries)
    assert sender.submit(job, "completed") is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SENDER, redis_url, store.keys.prefix, SECRET, str(retries)], cwd=ROOT
    )
    try:
        assert rec.got_request.wait(60), "the dispatcher process never sent the webhook"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.get(job.id).webhook_deliveries == []  # the killed sender recorded nothing
    assert sender.deliver_due() == 0  # still leased to the dead sender
    assert sender.deliver_due(now=time.time() + CLAIM_LEASE_S + 1) == 1
    attempts = store.get(job.id).webhook_deliveries
    if retries == 0:  # the killed try was the only one: given up, not sent again
        assert rec.requests == 1
        assert [(a.attempt, a.ok) for a in attempts] == [(1, False)]
        assert attempts[0].error is not None and "interrupted" in attempts[0].error
    else:  # the next claim is attempt 2 (the last), not attempt 1 again
        assert rec.requests == 2
        assert [(a.attempt, a.ok) for a in attempts] == [(2, True)]
    assert sender.pending() == 0


def test_only_terminal_events_are_retried_by_default(store: JobStore) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    sender = make_sender(store, transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    assert sender.submit(job, "started") is not None
    assert sender.deliver_due() == 1
    assert sender.pending() == 0  # started: best-effort, one try
    assert sender.submit(job, "completed") is not None
    assert sender.deliver_due() == 1
    assert sender.pending() == 1  # completed: retried
    assert [(a.event, a.attempt) for a in store.get(job.id).webhook_deliveries] == [
        ("started", 1),
        ("completed", 1),
    ]


def test_the_default_retry_window_of_terminal_events_is_more_than_a_day() -> None:
    delays = CommonSettings().webhook_retry_delays_s
    assert sum(delays) * (1 - 0.2) >= DAY_S  # even with every delay at the bottom of its jitter
    sender_default = WebhookSender.__init__.__defaults__
    assert sender_default is not None and sum(sender_default[0]) * (1 - 0.2) >= DAY_S


def test_progress_webhooks_are_throttled_per_job(store: JobStore) -> None:
    seen: list[str] = []
    sender = make_sender(
        store,
        progress_interval_s=3600,
        transport=httpx.MockTransport(lambda r: seen.append(r.headers["webhook-id"]) or httpx.Response(204)),
    )
    jobs = [make_job(webhook_url="http://127.0.0.1:9/hook") for _ in range(2)]
    for job in jobs:
        store.create(job)
    first = [sender.submit(job, "progress") for job in jobs]
    for job in jobs:
        for _ in range(3):
            sender.submit(job, "progress")
    assert sender.deliver_due() == 8
    assert sorted(seen) == sorted(d.webhook_id for d in first if d is not None)  # one per job
    assert sender.pending() == 0


def test_the_attempts_kept_on_a_job_record_are_bounded(store: JobStore) -> None:
    job = make_job(webhook_url="http://127.0.0.1:9/hook")
    store.create(job)
    sender = make_sender(
        store, retry_delays_s=[0.0] * 40, transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    sender.submit(job, "failed")
    for _ in range(ATTEMPTS_KEPT + 10):
        assert sender.deliver_due(now=time.time() + 1) == 1
    attempts = store.get(job.id).webhook_deliveries
    assert len(attempts) == ATTEMPTS_KEPT
    assert attempts[-1].attempt == ATTEMPTS_KEPT + 10  # the newest are kept
