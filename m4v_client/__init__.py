"""A Python client for m4v-serve: httpx only (installs without torch), sync and async.

from m4v_client import Client
with Client("http://127.0.0.1:8000", api_key="m4v_...") as m4v:
    job = m4v.submit("a red circle moving right", num_frames=17)
    job = m4v.wait(job["id"], progress=lambda event: print(event.event, event.json()))
    m4v.download(job["id"], "out.mp4")
"""

from m4v_client.async_client import AsyncClient
from m4v_client.client import Client
from m4v_client.common import TERMINAL, Job
from m4v_client.errors import APIError, M4VError, WaitTimeoutError, WebhookVerificationError, check
from m4v_client.sse import SSEEvent
from m4v_client.webhooks import verify_webhook

__all__ = [
    "TERMINAL",
    "APIError",
    "AsyncClient",
    "Client",
    "Job",
    "M4VError",
    "SSEEvent",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "check",
    "verify_webhook",
]
