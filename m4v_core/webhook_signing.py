"""Signing of outbound webhooks in the Standard Webhooks form (https://www.standardwebhooks.com): the secret
format, the v1 HMAC-SHA256 signature and headers, per-API-key secrets derived from the master secret, and
which secrets sign a given job's webhooks (rotation: two signatures in one header). Delivery is
m4v_core/webhooks.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import SecretStr

    from m4v_core.settings import CommonSettings

SECRET_PREFIX = "whsec_"


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


def signed_headers(
    secret: str | Sequence[str], msg_id: str, body: str, now: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers. Several secrets (rotation) give one space-separated signature each, current
    first; a receiver accepts the message if any of them verifies with the secret it holds."""
    timestamp = int(now if now is not None else time.time())
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }


def derive_key_secret(master: str, key_id: str) -> str:
    """The signing secret of API key `key_id`: whsec_ + base64 HMAC-SHA256(master key, label + key id).

    Each tenant gets its own secret without any state to store: one who can verify its webhooks learns
    nothing that signs another tenant's (HMAC is a PRF; the master key never leaves the servers).
    """
    mac = hmac.new(decode_secret(master), f"m4v-webhook-signing-v1\0{key_id}".encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class SigningSecrets:
    """Which secrets sign a job's webhooks.

    master     M4V_WEBHOOK_SECRET: signs open-mode jobs (owner None) itself; per-key secrets derive from it
    previous   M4V_WEBHOOK_SECRET_PREVIOUS: during a rotation, webhooks are signed with the secrets derived
               from both (two signatures in one header), so receivers can switch at their own pace
    per_key    M4V_WEBHOOK_KEY_SECRETS: a configured secret for some key ids, instead of the derived one
    """

    master: str | None
    previous: str | None = None
    per_key: dict[str, str] | None = None

    def for_owner(self, owner: str | None) -> list[str]:
        """The secrets a job of `owner` is signed with, current first; [] when none is configured."""
        if owner is not None and self.per_key and owner in self.per_key:
            return [self.per_key[owner]]
        masters = [m for m in (self.master, self.previous) if m]
        if owner is None:
            return masters
        return [derive_key_secret(m, owner) for m in masters]

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> SigningSecrets:
        def value(secret: SecretStr | None) -> str | None:
            return secret.get_secret_value() if secret else None

        return cls(
            master=value(settings.webhook_secret),
            previous=value(settings.webhook_secret_previous),
            per_key={k: v.get_secret_value() for k, v in settings.webhook_key_secrets.items()},
        )
