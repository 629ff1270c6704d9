"""Issue 16: each API key's webhooks are signed with its own secret (derived from M4V_WEBHOOK_SECRET or
configured), shown to that key by GET /webhook-secret; during a rotation two signatures verify; open mode
signs with the shared secret and never shows it. Real API dispatcher, real receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from standardwebhooks import Webhook
from typer.testing import CliRunner

from m4v_cli.main import app as cli
from m4v_core import Settings
from m4v_core.webhook_signing import derive_key_secret
from m4v_core.webhooks import WebhookSender
from service.app import create_app
from service.auth import key_entry, new_api_key
from tests.service.conftest import assert_error_shape
from tests.webhook_receiver import Receiver

ALICE = new_api_key()
BOB = new_api_key()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


SHARED = new_secret()
OLD = new_secret()
CONFIGURED = new_secret()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def keyed(settings: Settings, **update: object) -> TestClient:
    return TestClient(
        create_app(
            settings.model_copy(
                update={
                    "auth_mode": "keys",
                    "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
                    "webhook_secret": SecretStr(SHARED),
                    "webhook_allow_hosts": ["127.0.0.1"],
                    **update,
                }
            )
        )
    )


def cancel_with_webhook(client: TestClient, key: str, receiver: Receiver) -> tuple[dict[str, str], bytes]:
    """A job of `key` canceled while queued: the API's own dispatcher sends its `canceled` webhook."""
    body = {"prompt": "a red ball", "webhook_url": receiver.url, "webhook_events": ["canceled"]}
    job = client.post("/generate", json=body, headers=bearer(key)).json()
    before = len(receiver.deliveries)
    assert client.delete(f"/jobs/{job['id']}", headers=bearer(key)).status_code == 200
    receiver.wait_for(before + 1)
    sender: WebhookSender = client.app.state.m4v.webhooks  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sender.pending():
        time.sleep(0.02)
    return receiver.deliveries[before]


def test_each_key_verifies_its_own_webhooks_and_no_one_elses(settings: Settings, receiver: Receiver) -> None:
    with keyed(settings) as client:
        alice = client.get("/webhook-secret", headers=bearer(ALICE)).json()
        bob = client.get("/webhook-secret", headers=bearer(BOB)).json()
        headers, body = cancel_with_webhook(client, ALICE, receiver)
    assert alice["key_id"] == "alice" and bob["key_id"] == "bob"
    (alice_secret,), (bob_secret,) = alice["secrets"], bob["secrets"]
    assert len({alice_secret, bob_secret, SHARED}) == 3
    assert Webhook(alice_secret).verify(body, headers)["type"] == "job.canceled"
    for other in (bob_secret, SHARED):  # bob cannot forge (or verify) alice's webhooks with his secret
        with pytest.raises(Exception, match="signature"):
            Webhook(other).verify(body, headers)


def test_a_rotation_signs_with_both_secrets_until_the_old_one_is_dropped(
    settings: Settings, receiver: Receiver
) -> None:
    with keyed(settings, webhook_secret_previous=SecretStr(OLD)) as client:
        listed = client.get("/webhook-secret", headers=bearer(ALICE)).json()["secrets"]
        headers, body = cancel_with_webhook(client, ALICE, receiver)
    assert listed == [derive_key_secret(SHARED, "alice"), derive_key_secret(OLD, "alice")]  # current first
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in listed:  # a receiver still on the old secret and one already on the new both verify
        assert Webhook(secret).verify(body, headers)["type"] == "job.canceled"
    with keyed(settings) as client:  # rotation over: the old secret no longer verifies
        headers, body = cancel_with_webhook(client, ALICE, receiver)
    assert Webhook(listed[0]).verify(body, headers)["type"] == "job.canceled"
    with pytest.raises(Exception, match="signature"):
        Webhook(listed[1]).verify(body, headers)


def test_a_configured_key_secret_replaces_the_derived_one(settings: Settings, receiver: Receiver) -> None:
    with keyed(settings, webhook_key_secrets={"bob": SecretStr(CONFIGURED)}) as client:
        assert client.get("/webhook-secret", headers=bearer(BOB)).json()["secrets"] == [CONFIGURED]
        headers, body = cancel_with_webhook(client, BOB, receiver)
    assert Webhook(CONFIGURED).verify(body, headers)["type"] == "job.canceled"


def test_open_mode_signs_with_the_shared_secret_and_never_shows_it(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"auth_mode": "open", "webhook_secret": SecretStr(SHARED)})
    with TestClient(create_app(open_settings)) as client:
        response = client.get("/webhook-secret")
    assert_error_shape(response, 404, "not_found")
    assert SHARED not in response.text


def test_the_cli_prints_what_the_api_shows(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M4V_WEBHOOK_SECRET", SHARED)
    monkeypatch.setenv("M4V_WEBHOOK_SECRET_PREVIOUS", OLD)
    printed = CliRunner().invoke(cli, ["keys", "webhook-secret", "alice"])
    assert printed.exit_code == 0, printed.output
    with keyed(settings, webhook_secret_previous=SecretStr(OLD)) as client:
        shown = client.get("/webhook-secret", headers=bearer(ALICE)).json()["secrets"]
    assert printed.output.split() == shown
