"""Outbound webhooks in the Standard Webhooks form (https://www.standardwebhooks.com), delivered off the job.

A job only calls WebhookSender.submit(): that writes the delivery to Redis and returns. A background
thread (WebhookDispatcher) claims due deliveries, POSTs them and reschedules failures with backoff, so a
slow or dead receiver never blocks or fails a job, and pending retries survive a worker restart.
Every worker and every API process (service/webhooks.py) runs a dispatcher on the same Redis store; the
claim below is atomic, so however many run, each attempt of a delivery is made by exactly one of them.

Redis (p = key prefix):
  {p}:webhooks:due        ZSET webhook_id -> unix time the next attempt is due (or the claim lease ends)
  {p}:webhooks:payload    HASH webhook_id -> Delivery JSON (url, body, attempts made)

Outcomes (m4v_webhook_deliveries_total{outcome}): delivered, retrying (failed, another try scheduled),
failed (failed, no tries left), refused (URL not allowed or no signing secret; never retried).

Every POST goes through m4v_core/ssrf.py's PinnedTransport: the receiver's name is resolved once per attempt,
checked (no private/loopback/link-local address unless allow-listed), and that checked address is the one
connected to, so a DNS answer that changes between check and connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import redis

from m4v_core.background import BackgroundThread
from m4v_core.jobview import render_job_json
from m4v_core.models import JobRecord, WebhookAttempt
from m4v_core.ssrf import PinnedTransport, Resolver, WebhookRefusedError, system_resolver
from m4v_core.store import JobNotFoundError, JobStore

if TYPE_CHECKING:
    from prometheus_client import Counter

    from m4v_core.settings import CommonSettings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
CLAIM_LEASE_S = 60.0  # a claimed delivery becomes due again if its worker dies mid-attempt

# Claim up to ARGV[2] deliveries due at ARGV[1] by pushing their score to ARGV[3] (the lease end). One script
# runs at a time in Redis, so two dispatchers (workers, API) never claim the same delivery.
_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""


class DeliveryMetrics(Protocol):
    """What WebhookSender counts into: worker.metrics.WorkerMetrics and service.metrics.ApiMetrics."""

    webhook_deliveries: Counter  # labels: outcome


@dataclass(frozen=True)
class Delivery:
    """One event for one URL. webhook_id and body stay fixed across retries; the signature is per attempt."""

    webhook_id: str
    job_id: str
    event: str
    url: str
    body: str
    attempts: int = 0  # attempts made so far

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(raw: str | bytes) -> Delivery:
        return Delivery(**json.loads(raw))


def decode_secret(secret: str) -> bytes:
    """whsec_<base64> -> key bytes (the Standard Webhooks secret format)."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    key = base64.b64decode(raw + "=" * (-len(raw) % 4))
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """webhook-signature header value: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>."""
    mac = hmac.new(decode_secret(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


TERMINAL_EVENTS = frozenset({"completed", "failed", "canceled"})


def webhook_id_for(job_id: str, event: str) -> str:
    """A terminal event's id is the same for every attempt and writer of the job (receivers de-duplicate on
    it); other events get a fresh one."""
    return f"msg_{job_id}_{event}" if event in TERMINAL_EVENTS else f"msg_{uuid.uuid4().hex}"


def build_delivery(job: JobRecord, event: str, data: dict[str, Any] | None = None) -> Delivery | None:
    """The delivery of `event` for this job, or None if it has no webhook_url or did not subscribe."""
    if job.request.webhook_url is None or event not in job.request.webhook_events:
        return None
    payload = {"type": f"job.{event}", "timestamp": datetime.now(UTC).isoformat()}
    body = json.dumps({**payload, "data": data or render_job_json(job)}, separators=(",", ":"))
    return Delivery(
        webhook_id=webhook_id_for(job.id, event),
        job_id=job.id,
        event=event,
        url=str(job.request.webhook_url),
        body=body,
    )


class WebhookSender:
    """Persists deliveries in Redis and performs attempts; thread-safe (one httpx.Client, Redis pool)."""

    def __init__(
        self,
        client: redis.Redis,
        store: JobStore,
        secret: str | None,
        retry_delays_s: Sequence[float] = (5, 30, 120, 300, 600, 1200, 1800),
        timeout_s: float = 10.0,
        allow_hosts: Sequence[str] = (),
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = system_resolver,
        metrics: DeliveryMetrics | None = None,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.r = client
        self.store = store
        self.secret = secret
        self.retry_delays_s = list(retry_delays_s)
        self.allow_hosts = list(allow_hosts)
        self.metrics = metrics
        self.jitter = jitter
        self.rng = rng or random.Random()
        # `transport` (tests: httpx.MockTransport) only ever sees requests already pinned to a checked IP
        pinned = PinnedTransport(allow_hosts, resolver=resolver, inner=transport)
        self.http = httpx.Client(transport=pinned, timeout=timeout_s, follow_redirects=False)
        self.due_key = store.keys.webhooks_due()
        self.payload_key = store.keys.webhooks_payload()
        self._claim = self.r.register_script(_CLAIM_LUA)

    @classmethod
    def from_settings(
        cls, settings: CommonSettings, client: redis.Redis, store: JobStore, **kwargs: Any
    ) -> WebhookSender:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return cls(
            client,
            store,
            secret,
            retry_delays_s=settings.webhook_retry_delays_s,
            timeout_s=settings.webhook_timeout_s,
            allow_hosts=settings.webhook_allow_hosts,
            **kwargs,
        )

    def close(self) -> None:
        self.http.close()

    # --- queueing ---
    def submit(self, job: JobRecord, event: str, data: dict[str, Any] | None = None) -> Delivery | None:
        """Queue `event` for delivery now (if the job subscribed). Never raises for Redis-side reasons."""
        delivery = build_delivery(job, event, data)
        if delivery is None:
            return None
        try:
            self._save(delivery, due=time.time())
        except redis.RedisError:
            log.exception("could not queue webhook", extra={"job_id": job.id, "event": event})
            return None
        return delivery

    def queue(
        self, pipe: redis.client.Pipeline, job: JobRecord, event: str, data: dict[str, Any] | None = None
    ) -> Delivery | None:
        """Add `event`'s delivery (if the job subscribed) to the caller's transaction, due now: it is queued
        exactly when the caller's other writes (the record, its events) are (JobStore.update's `also`)."""
        delivery = build_delivery(job, event, data)
        if delivery is not None:
            self._queue(pipe, delivery, due=time.time())
        return delivery

    def pending(self) -> int:
        """Deliveries not finished yet (due now, claimed, or waiting for a retry)."""
        return int(self.r.zcard(self.due_key))

    def due_count(self, within_s: float = CLAIM_LEASE_S) -> int:
        """Deliveries due within `within_s` from now; the default also counts those being attempted now
        (a claim pushes the score to the lease end)."""
        return int(self.r.zcount(self.due_key, "-inf", time.time() + within_s))

    def _save(self, delivery: Delivery, due: float) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            self._queue(pipe, delivery, due)
            pipe.execute()

    def _queue(self, pipe: redis.client.Pipeline, delivery: Delivery, due: float) -> None:
        pipe.hset(self.payload_key, delivery.webhook_id, delivery.to_json())
        pipe.zadd(self.due_key, {delivery.webhook_id: due})

    def _drop(self, delivery: Delivery) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(self.due_key, delivery.webhook_id)
            pipe.hdel(self.payload_key, delivery.webhook_id)
            pipe.execute()

    # --- delivering ---
    def deliver_due(self, limit: int = 20, now: float | None = None) -> int:
        """Claim and attempt up to `limit` due deliveries; returns how many were attempted."""
        now = time.time() if now is None else now
        ids = self._claim(keys=[self.due_key], args=[now, limit, now + CLAIM_LEASE_S])
        done = 0
        for raw_id in ids:
            raw = self.r.hget(self.payload_key, raw_id)
            if raw is None:  # payload lost: nothing to send
                self.r.zrem(self.due_key, raw_id)
                continue
            self.attempt(Delivery.from_json(raw))
            done += 1
        return done

    def attempt(self, delivery: Delivery) -> str:
        """One POST; records it on the job, then reschedules or drops the delivery. Returns the outcome."""
        attempt_no = delivery.attempts + 1
        status_code, error = self._post(delivery)
        ok = status_code is not None and 200 <= status_code < 300
        if ok:
            outcome = "delivered"
        elif error is not None and error.startswith("refused"):
            outcome = "refused"
        elif attempt_no <= len(self.retry_delays_s):
            outcome = "retrying"
        else:
            outcome = "failed"
        self._record(delivery, attempt_no, status_code, error, ok)
        if outcome == "retrying":
            delay = self.retry_delays_s[attempt_no - 1] * (1 + self.rng.uniform(-self.jitter, self.jitter))
            self._save(
                Delivery(**{**asdict(delivery), "attempts": attempt_no}), due=time.time() + max(0.0, delay)
            )
        else:
            self._drop(delivery)
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(outcome=outcome).inc()
        log.info(
            "webhook attempt",
            extra={
                "job_id": delivery.job_id,
                "event": delivery.event,
                "webhook_id": delivery.webhook_id,
                "attempt": attempt_no,
                "status_code": status_code,
                "outcome": outcome,
            },
        )
        return outcome

    def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        if not self.secret:
            return None, "refused: no webhook signing secret configured (M4V_WEBHOOK_SECRET)"
        headers = signed_headers(self.secret, delivery.webhook_id, delivery.body)
        try:
            response = self.http.post(delivery.url, content=delivery.body.encode(), headers=headers)
        except (WebhookRefusedError, httpx.InvalidURL) as exc:  # raised before anything is sent
            return None, f"refused: {exc}"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        error = None if response.is_success else f"HTTP {response.status_code}"
        return response.status_code, error

    def _record(
        self, delivery: Delivery, attempt_no: int, code: int | None, error: str | None, ok: bool
    ) -> None:
        entry = WebhookAttempt(
            event=delivery.event,  # type: ignore[arg-type]
            webhook_id=delivery.webhook_id,
            attempt=attempt_no,
            at=datetime.now(UTC),
            status_code=code,
            error=error,
            ok=ok,
        )
        try:
            self.store.update(delivery.job_id, lambda job: job.webhook_deliveries.append(entry))
        except JobNotFoundError:
            log.warning("webhook for an expired job", extra={"job_id": delivery.job_id})


class WebhookDispatcher(BackgroundThread):
    """Background thread running WebhookSender.deliver_due() every poll_s until stopped."""

    thread_name = "m4v-webhooks"

    def __init__(self, sender: WebhookSender, poll_s: float = 0.5) -> None:
        self.sender = sender
        self.poll_s = poll_s
        super().__init__()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.sender.deliver_due()
            except (redis.RedisError, ValueError, OSError):  # Redis blips must not end the thread
                log.exception("webhook dispatcher iteration failed")
                busy = 0
            if not busy:
                self._stop.wait(self.poll_s)
