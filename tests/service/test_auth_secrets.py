"""No secret in logs or error bodies: API keys (valid or not), the S3 secret, the webhook secret."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from m4v_core.logs import JsonFormatter
from service.app import create_app
from service.auth import key_entry, new_api_key

API_KEY = new_api_key()
WRONG_KEY = "m4v_wrong-" + new_api_key()[4:]
S3_SECRET = "s3-secret-5f1c2a9e7d"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXdlYmhvb2stc2VjcmV0"


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Everything any server-side logger writes, at DEBUG, in the service's JSON format (the test client's
    own httpx request log, which prints the URLs this test sends, is not the server's)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(lambda record: not record.name.startswith("httpx"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_keys_and_storage_secrets_never_reach_logs_or_responses(
    settings: Settings, log_text: io.StringIO
) -> None:
    secret_settings = settings.model_copy(
        update={
            "auth_mode": "keys",
            "api_keys": [SecretStr(key_entry("alice", API_KEY))],
            "s3_access_key": SecretStr("s3-access-key-id"),
            "s3_secret_key": SecretStr(S3_SECRET),
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "log_level": "DEBUG",
        }
    )
    bodies: list[str] = [repr(secret_settings), str(secret_settings.model_dump())]
    with TestClient(create_app(secret_settings)) as c:
        ok = {"Authorization": f"Bearer {API_KEY}"}
        bad = {"Authorization": f"Bearer {WRONG_KEY}"}
        job_id = c.post("/generate", json={"prompt": "a red ball"}, headers=ok).json()["id"]
        responses = [
            c.get(f"/jobs/{job_id}", headers=ok),
            c.get(f"/jobs/{job_id}/video", headers=ok),
            c.get("/jobs/unknown", headers=ok),
            c.post("/generate", json={"prompt": API_KEY, "width": -1}, headers=ok),
            c.post("/generate", json={"prompt": "a red ball"}, headers=bad),
            c.get(f"/jobs/{job_id}?key={WRONG_KEY}", headers=bad),
            c.get("/workers", headers={"Authorization": f"Basic {API_KEY}"}),
            c.get("/metrics"),
            c.get("/openapi.json"),
        ]
        bodies += [r.text + str(dict(r.headers)) for r in responses]
    logs = log_text.getvalue()
    assert "api keys loaded" in logs and "rejected an unknown API key" in logs  # the capture works
    for secret in (API_KEY, WRONG_KEY, S3_SECRET, WEBHOOK_SECRET):
        assert secret not in logs, f"a secret reached the logs: {secret[:8]}..."
        assert not [b for b in bodies if secret in b], f"a secret reached a response: {secret[:8]}..."
