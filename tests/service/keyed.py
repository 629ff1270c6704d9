"""Two API keys, alice and bob, for tests of what each caller may see."""

from __future__ import annotations

from pydantic import SecretStr

from m4v_core import Settings
from service.auth import key_entry, new_api_key

ALICE = new_api_key()
BOB = new_api_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def with_two_keys(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_mode": "keys",
            "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
        }
    )
