"""m4v_client.verify_webhook accepts what the server signs (m4v_core.webhooks) and refuses forgeries."""

from __future__ import annotations

import base64
import json
import os

import pytest
from standardwebhooks import Webhook

from m4v_client import WebhookVerificationError, verify_webhook
from m4v_core.webhook_signing import signed_headers

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
BODY = json.dumps({"type": "job.completed", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "j1"}})
NOW = 1_800_000_000.0


def test_accepts_the_servers_signature_like_the_reference_verifier() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY, now=NOW)
    assert verify_webhook(BODY.encode(), headers, SECRET, now=NOW) == json.loads(BODY)
    assert verify_webhook(BODY, {k.title(): v for k, v in headers.items()}, SECRET, now=NOW + 299)["data"]
    Webhook(SECRET).verify(BODY, signed_headers(SECRET, "msg_1", BODY))  # the same headers pass the reference


@pytest.mark.parametrize(
    "change",
    ["body", "secret", "id", "stale", "future", "no-signature"],
)
def test_refuses_anything_changed(change: str) -> None:
    headers = signed_headers(SECRET, "msg_1", BODY, now=NOW)
    body, secret, now = BODY, SECRET, NOW
    if change == "body":
        body = BODY.replace("j1", "j2")
    elif change == "secret":
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    elif change == "stale":
        now = NOW + 301
    elif change == "future":
        now = NOW - 301
    else:
        del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret, now=now)
