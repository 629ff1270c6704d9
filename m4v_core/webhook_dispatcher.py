"""WebhookDispatcher: the background thread that runs WebhookSender.deliver_due() in every worker and API
process (m4v_core/webhooks.py describes the outbox as a whole)."""

from __future__ import annotations

import logging

import redis

from m4v_core.background import BackgroundThread
from m4v_core.webhook_sender import WebhookSender

log = logging.getLogger("m4v_core.webhooks")  # one logger name for the whole outbox, as before the split


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
