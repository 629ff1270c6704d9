"""WebhookSender: the outbox in Redis (queue, atomic claim, reschedule, drop) and each attempt (signed POST
under one deadline, outcome, retry with backoff, the attempt recorded on the job).
m4v_core/webhooks.py describes the outbox as a whole and the bounds on what a receiver can cost."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import redis

from m4v_core.deadline_http import deadline, deadline_transport
from m4v_core.models import JobRecord, WebhookAttempt
from m4v_core.ssrf import PinnedTransport, Resolver, WebhookRefusedError, system_resolver
from m4v_core.store import JobNotFoundError, JobStore
from m4v_core.webhook_delivery import TERMINAL_EVENTS, Delivery, build_delivery
from m4v_core.webhook_signing import SigningSecrets, signed_headers

if TYPE_CHECKING:
    from prometheus_client import Counter

    from m4v_core.settings import CommonSettings

log = logging.getLogger("m4v_core.webhooks")  # one logger name for the whole outbox, as before the split

CLAIM_LEASE_S = 60.0  # a claimed delivery becomes due again if its worker dies mid-attempt
# Backoff before each retry of a terminal event: 13 tries over about 40 h (32 h at the -20 % jitter), so a
# receiver that is down for a whole day still gets the job's end.
DEFAULT_RETRY_DELAYS_S = (5, 30, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200)
MAX_RESPONSE_BYTES = 4096  # of a receiver's answer read at most; the rest is never read
ATTEMPTS_KEPT = 20  # newest delivery attempts kept on a job record (webhook_deliveries)

# Claim up to ARGV[2] deliveries due at ARGV[1] by pushing their score to ARGV[3] (the lease end). One script
# runs at a time in Redis, so two dispatchers (workers, API) never claim the same delivery.
# The attempt is counted here, in the claim: the payload's `attempts` goes up by one in the same script, so a
# dispatcher killed mid-attempt has still spent that attempt, and the next claim after the lease is the next
# attempt (never the same one again, without end). Returns [id1, payload1, id2, payload2, ...]; an id whose
# payload is gone is dropped.
_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    local d = cjson.decode(raw)
    d['attempts'] = (tonumber(d['attempts']) or 0) + 1
    raw = cjson.encode(d)
    redis.call('HSET', KEYS[2], id, raw)
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, raw)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


class DeliveryMetrics(Protocol):
    """What WebhookSender counts into: worker.metrics.WorkerMetrics and service.metrics.ApiMetrics."""

    webhook_deliveries: Counter  # labels: outcome


class WebhookSender:
    """Persists deliveries in Redis and performs attempts; thread-safe (one httpx.Client, Redis pool)."""

    def __init__(
        self,
        client: redis.Redis,
        store: JobStore,
        secret: str | SigningSecrets | None,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
        timeout_s: float = 10.0,
        allow_hosts: Sequence[str] = (),
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = system_resolver,
        metrics: DeliveryMetrics | None = None,
        jitter: float = 0.2,
        rng: random.Random | None = None,
        attempt_deadline_s: float = 15.0,
        retry_events: Sequence[str] = TERMINAL_EVENTS,
        progress_interval_s: float = 10.0,
    ) -> None:
        if not 0 < attempt_deadline_s < CLAIM_LEASE_S:
            raise ValueError(f"attempt_deadline_s must be in (0, {CLAIM_LEASE_S}) s (the claim lease)")
        self.r = client
        self.store = store
        self.secrets = secret if isinstance(secret, SigningSecrets) else SigningSecrets(secret)
        self.secret = self.secrets.master  # the shared secret: a dispatcher runs only where it is set
        self.retry_delays_s = list(retry_delays_s)
        self.allow_hosts = list(allow_hosts)
        self.metrics = metrics
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempt_deadline_s = attempt_deadline_s
        self.retry_events = frozenset(retry_events)
        self.progress_interval_s = progress_interval_s
        # `transport` (tests: httpx.MockTransport) only ever sees requests already pinned to a checked IP;
        # the default one bounds the whole exchange by the attempt deadline (m4v_core/deadline_http.py)
        pinned = PinnedTransport(allow_hosts, resolver=resolver, inner=transport or deadline_transport())
        self.http = httpx.Client(transport=pinned, timeout=timeout_s, follow_redirects=False)
        self.due_key = store.keys.webhooks_due()
        self.payload_key = store.keys.webhooks_payload()
        self._claim = self.r.register_script(_CLAIM_LUA)

    @classmethod
    def from_settings(
        cls, settings: CommonSettings, client: redis.Redis, store: JobStore, **kwargs: Any
    ) -> WebhookSender:
        return cls(
            client,
            store,
            SigningSecrets.from_settings(settings),
            retry_delays_s=settings.webhook_retry_delays_s,
            timeout_s=settings.webhook_timeout_s,
            allow_hosts=settings.webhook_allow_hosts,
            attempt_deadline_s=settings.webhook_attempt_deadline_s,
            retry_events=settings.webhook_retry_events,
            progress_interval_s=settings.webhook_progress_interval_s,
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
    def max_attempts(self, event: str) -> int:
        """Tries a delivery of `event` gets: 1 + retries for retry_events (terminal by default), else 1."""
        return 1 + len(self.retry_delays_s) if event in self.retry_events else 1

    def deliver_due(self, limit: int = 20, now: float | None = None) -> int:
        """Claim and attempt up to `limit` due deliveries; returns how many were attempted."""
        now = time.time() if now is None else now
        claimed = self._claim(keys=[self.due_key, self.payload_key], args=[now, limit, now + CLAIM_LEASE_S])
        for raw in claimed[1::2]:
            self.attempt(Delivery.from_json(raw))
        return len(claimed) // 2

    def attempt(self, delivery: Delivery) -> str:
        """One POST; records it on the job, then reschedules or drops the delivery. Returns the outcome.

        `delivery.attempts` already counts this attempt (the claim counted it); a delivery built by hand
        with attempts=0 is attempt 1.
        """
        attempt_no = max(delivery.attempts, 1)
        status_code: int | None = None
        if attempt_no > self.max_attempts(delivery.event):
            # claimed again after its lease: the sender of the last allowed try stopped during it
            outcome, error = "failed", "interrupted: the sender stopped during the last allowed attempt"
            attempt_no -= 1
            self._record(delivery, attempt_no, None, error, False)
        elif delivery.event == "progress" and not self._progress_allowed(delivery):
            outcome, error = "throttled", None  # best-effort: a newer progress webhook comes soon enough
        else:
            status_code, error = self._post(delivery)
            ok = status_code is not None and 200 <= status_code < 300
            if ok:
                outcome = "delivered"
            elif error is not None and error.startswith("refused"):
                outcome = "refused"
            elif attempt_no < self.max_attempts(delivery.event):
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
                "error": error,
            },
        )
        return outcome

    def _progress_allowed(self, delivery: Delivery) -> bool:
        """At most one progress webhook per job every progress_interval_s (a Redis gate with that TTL)."""
        if self.progress_interval_s <= 0:
            return True
        gate = self.store.keys.webhook_progress_gate(delivery.job_id)
        return bool(self.r.set(gate, "1", nx=True, px=max(1, int(self.progress_interval_s * 1000))))

    def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        try:
            owner = self.store.get(delivery.job_id).owner
        except JobNotFoundError:
            return None, "refused: the job's record has expired"
        secrets = self.secrets.for_owner(owner)
        if not secrets:
            return None, "refused: no webhook signing secret configured (M4V_WEBHOOK_SECRET)"
        headers = signed_headers(secrets, delivery.webhook_id, delivery.body)
        status_code: int | None = None
        try:
            with (
                deadline(self.attempt_deadline_s),
                self.http.stream(
                    "POST", delivery.url, content=delivery.body.encode(), headers=headers
                ) as response,
            ):
                status_code = response.status_code
                _discard(response)
        except (WebhookRefusedError, httpx.InvalidURL) as exc:  # raised before anything is sent
            return None, f"refused: {exc}"
        except httpx.TimeoutException as exc:
            if status_code is None:
                return None, f"{type(exc).__name__}: no answer within the attempt deadline or a timeout"
        except httpx.HTTPError as exc:
            if status_code is None:
                return None, f"{type(exc).__name__}: {exc}"
        assert status_code is not None
        return status_code, None if 200 <= status_code < 300 else f"HTTP {status_code}"

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

        def add(job: JobRecord) -> None:
            job.webhook_deliveries.append(entry)
            del job.webhook_deliveries[:-ATTEMPTS_KEPT]  # the newest ATTEMPTS_KEPT only

        try:
            self.store.update(delivery.job_id, add)
        except JobNotFoundError:
            log.warning("webhook for an expired job", extra={"job_id": delivery.job_id})


def _discard(response: httpx.Response) -> None:
    """Read at most MAX_RESPONSE_BYTES of the answer (raw: a compressed body is never expanded) and drop
    them; closing the response then closes the connection. A receiver's body is never held in memory."""
    if response.is_stream_consumed:  # an in-memory answer (httpx.MockTransport): nothing left to read
        return
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES:
            break
