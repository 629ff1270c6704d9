"""The API process's webhook dispatcher, so deliveries go out while no worker runs.

Where a delivery is sent from: whoever makes the state change queues it with WebhookSender.submit() into
the Redis-backed store of m4v_core/webhooks.py; any dispatcher attached to that store sends it. Workers run
one, but with scale-to-zero a job canceled while queued (service/jobs.py) may have no worker for hours,
and KEDA scales on queue depth, not on pending webhooks, so none would ever start for it. The API is
always up, so it runs a dispatcher too. The API and the workers then share one store: the claim in
WebhookSender.deliver_due() is one Redis script that moves a due delivery's score to the end of a
lease, so exactly one dispatcher attempts it, and whichever process is up delivers the retries.

Without a signing secret the API runs no dispatcher: it would claim the workers' deliveries and record
them as refused (never retried) in a deployment that gives the secret to the workers only. The API still
queues its deliveries, and the workers send them.
"""

from __future__ import annotations

import logging

from m4v_core.webhooks import WebhookDispatcher
from service.state import ServiceState

log = logging.getLogger(__name__)


def start_dispatcher(state: ServiceState) -> WebhookDispatcher | None:
    """Start delivering the store's due webhooks from this process; None without a signing secret."""
    if not state.webhooks.secret:
        log.warning("api webhook dispatcher off: no M4V_WEBHOOK_SECRET; workers deliver the api's webhooks")
        return None
    log.info("api webhook dispatcher started")
    return WebhookDispatcher(state.webhooks).start()
