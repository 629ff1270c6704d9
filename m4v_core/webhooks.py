"""Outbound webhooks in the Standard Webhooks form (https://www.standardwebhooks.com), delivered off the job.

A job only calls WebhookSender.submit(): that writes the delivery to Redis and returns. A background
thread (WebhookDispatcher) claims due deliveries, POSTs them and reschedules failures with backoff, so a
slow or dead receiver never blocks or fails a job, and pending retries survive a worker restart.
Every worker and every API process (service/webhooks.py) runs a dispatcher on the same Redis store; the
claim (a Redis script) is atomic, so however many run, each attempt of a delivery is made by exactly one
of them.

This module is the import point; the code is in three modules:
  m4v_core/webhook_delivery.py    Delivery, webhook_id_for(), build_delivery(): what one delivery is
  m4v_core/webhook_sender.py      WebhookSender: the Redis outbox, the claim script, each signed attempt
  m4v_core/webhook_dispatcher.py  WebhookDispatcher: the background thread calling deliver_due()
and the signing in m4v_core/webhook_signing.py.

Redis (p = key prefix):
  {p}:webhooks:due        ZSET webhook_id -> unix time the next attempt is due (or the claim lease ends)
  {p}:webhooks:payload    HASH webhook_id -> Delivery JSON (url, body, attempts made)

What a receiver can cost a dispatcher is bounded (issue 16):
- time: one deadline for the whole attempt (`webhook_attempt_deadline_s`, below the claim lease), on every
  connect, write, read and TLS handshake (m4v_core/deadline_http.py), so a receiver dripping bytes cannot
  hold an attempt past it; `webhook_timeout_s` still bounds each single operation;
- memory: at most MAX_RESPONSE_BYTES of the answer are read, never decompressed, then dropped;
- attempts: counted when claimed (the claim script), so a dispatcher killed mid-attempt has spent it and the
  delivery is given up once its tries are spent, instead of being claimed again for ever; only
  `webhook_retry_events` (the terminal events by default) are retried, over DEFAULT_RETRY_DELAYS_S (more
  than 24 h); `started` and `progress` are sent once (best-effort) and progress at most once per job every
  `webhook_progress_interval_s`; a job record keeps its newest ATTEMPTS_KEPT attempts.

Outcomes (m4v_webhook_deliveries_total{outcome}): delivered, retrying (failed, another try scheduled),
failed (failed, no tries left, or the last try interrupted), refused (URL not allowed or no signing secret;
never retried), throttled (a progress webhook dropped by the per-job interval).

Every POST goes through m4v_core/ssrf.py's PinnedTransport: the receiver's name is resolved once per attempt,
checked (no private/loopback/link-local address unless allow-listed), and that checked address is the one
connected to, so a DNS answer that changes between check and connect (rebinding) cannot redirect it.
"""

from m4v_core.webhook_delivery import TERMINAL_EVENTS, Delivery, build_delivery, webhook_id_for
from m4v_core.webhook_dispatcher import WebhookDispatcher
from m4v_core.webhook_sender import (
    ATTEMPTS_KEPT,
    CLAIM_LEASE_S,
    DEFAULT_RETRY_DELAYS_S,
    MAX_RESPONSE_BYTES,
    DeliveryMetrics,
    WebhookSender,
)

__all__ = [
    "ATTEMPTS_KEPT",
    "CLAIM_LEASE_S",
    "DEFAULT_RETRY_DELAYS_S",
    "MAX_RESPONSE_BYTES",
    "TERMINAL_EVENTS",
    "Delivery",
    "DeliveryMetrics",
    "WebhookDispatcher",
    "WebhookSender",
    "build_delivery",
    "webhook_id_for",
]
