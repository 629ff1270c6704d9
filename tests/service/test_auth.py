"""The auth matrix: no key, malformed header, unknown key, another key's job; open mode only if asked for."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from service.auth import KeyRegistry, key_entry, new_api_key
from tests.service.conftest import assert_error_shape

ALICE = new_api_key()
BOB = new_api_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    keyed_settings = settings.model_copy(
        update={
            "auth_mode": "keys",
            "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
        }
    )
    with TestClient(create_app(keyed_settings)) as c:
        yield c


def post_job(client: TestClient, key: str) -> str:
    response = client.post("/generate", json={"prompt": "a red ball"}, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_settings_default_to_keys_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M4V_AUTH_MODE", raising=False)
    assert Settings().auth_mode == "keys"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/generate"), ("GET", "/jobs/x"), ("DELETE", "/jobs/x"), ("GET", "/jobs/x/video"),
     ("GET", "/jobs/x/events"), ("GET", "/workers")],
)  # fmt: skip
def test_every_job_route_answers_401_without_a_key(keyed: TestClient, method: str, path: str) -> None:
    response = keyed.request(method, path, json={"prompt": "a red ball"} if method == "POST" else None)
    error = assert_error_shape(response, 401, "unauthorized")
    assert "Authorization: Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer m4v_not-a-real-key", "Basic YWxpY2U6cHc=", f"Bearer {ALICE}x", f"{ALICE}", "Bearer "],
)
def test_unknown_or_malformed_keys_answer_401(keyed: TestClient, header: str) -> None:
    response = keyed.post("/generate", json={"prompt": "a red ball"}, headers={"Authorization": header})
    assert_error_shape(response, 401, "unauthorized")


def test_a_key_sees_its_own_job_and_another_key_gets_404(keyed: TestClient) -> None:
    job_id = post_job(keyed, ALICE)
    assert keyed.get(f"/jobs/{job_id}", headers=bearer(ALICE)).json()["id"] == job_id
    for method, path in (("GET", ""), ("GET", "/video"), ("GET", "/events"), ("DELETE", "")):
        response = keyed.request(method, f"/jobs/{job_id}{path}", headers=bearer(BOB))
        assert_error_shape(response, 404, "not_found")
    assert keyed.get(f"/jobs/{job_id}", headers=bearer(ALICE)).json()["status"] == "queued"  # not canceled


def test_another_keys_job_is_indistinguishable_from_an_unknown_id(keyed: TestClient) -> None:
    job_id = post_job(keyed, ALICE)
    theirs = keyed.get(f"/jobs/{job_id}", headers=bearer(BOB)).json()["error"]
    unknown = keyed.get("/jobs/0123456789abcdef0123456789abcdef", headers=bearer(BOB)).json()["error"]
    assert theirs["type"] == unknown["type"] and theirs["message"].replace(job_id, "X") == unknown[
        "message"
    ].replace("0123456789abcdef0123456789abcdef", "X")


def test_idempotency_keys_are_scoped_per_api_key(keyed: TestClient) -> None:
    body = {"prompt": "a red ball"}
    first = keyed.post("/generate", json=body, headers={**bearer(ALICE), "Idempotency-Key": "k1"})
    other = keyed.post("/generate", json=body, headers={**bearer(BOB), "Idempotency-Key": "k1"})
    assert first.status_code == other.status_code == 202
    assert first.json()["id"] != other.json()["id"]


def test_probes_and_metrics_need_no_key(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_openapi_declares_the_bearer_scheme(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())


def test_keys_mode_without_keys_rejects_everything_and_logs_an_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="service"):
        app = create_app(settings.model_copy(update={"auth_mode": "keys", "api_keys": []}))
        with TestClient(app) as c:
            assert_error_shape(c.post("/generate", json={"prompt": "x"}, headers=bearer(ALICE)), 401)
    assert any("M4V_API_KEYS is empty" in r.getMessage() for r in caplog.records)


def test_open_mode_accepts_anonymous_callers_and_warns(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings.model_copy(update={"auth_mode": "open"}))
    with caplog.at_level(logging.WARNING, logger="service"), TestClient(app) as c:
        job_id = c.post("/generate", json={"prompt": "a red ball"}).json()["id"]
        assert c.get(f"/jobs/{job_id}").status_code == 200
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "auth_mode=open" in r.getMessage()
    ]
    assert warnings


@pytest.mark.parametrize(
    "entry", ["alice", "alice:xyz", ":" + "a" * 64, "open:" + "a" * 64, "al ice:" + "a" * 64]
)
def test_registry_refuses_malformed_entries_without_echoing_them(entry: str) -> None:
    with pytest.raises(ValueError, match="entry 0") as info:
        KeyRegistry.from_entries([entry])
    assert entry not in str(info.value)


def test_registry_maps_a_key_to_its_id_and_nothing_else() -> None:
    bob_upper_hex = "bob:" + key_entry("bob", BOB).split(":")[1].upper()
    registry = KeyRegistry.from_entries([key_entry("alice", ALICE), bob_upper_hex])
    assert registry.identify(ALICE) == "alice" and registry.identify(BOB) == "bob"
    assert registry.identify(ALICE.upper()) is None
    assert registry.identify(key_entry("alice", ALICE).split(":")[1]) is None  # the hash is not a key
