"""What one webhook delivery is: the Delivery record kept in the outbox, its webhook-id, and build_delivery()
turning a job event into one (m4v_core/webhooks.py describes the outbox as a whole)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from m4v_core.jobview import render_job_json
from m4v_core.models import JobRecord

TERMINAL_EVENTS = ("completed", "failed", "canceled")  # retried by default; others are sent once


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
