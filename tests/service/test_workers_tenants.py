"""Issue 16: GET /workers shows a tenant the id of a job a worker is running only if the job is its own."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import JobStore, Settings
from service.app import create_app
from service.auth import key_entry, new_api_key
from tests.service.fleet_helpers import publish_worker

ALICE = new_api_key()
BOB = new_api_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_tenant_sees_only_its_own_busy_job_ids(settings: Settings, store: JobStore) -> None:
    keyed = settings.model_copy(
        update={
            "auth_mode": "keys",
            "api_keys": [SecretStr(key_entry("alice", ALICE)), SecretStr(key_entry("bob", BOB))],
        }
    )
    with TestClient(create_app(keyed)) as client:
        jobs = {
            key: client.post("/generate", json={"prompt": "x"}, headers=bearer(key)).json()["id"]
            for key in (ALICE, BOB)
        }
        publish_worker(store, "gpu-a", busy_job=jobs[ALICE])
        publish_worker(store, "gpu-b", busy_job=jobs[BOB])
        seen = {
            key: {
                w["name"]: w["busy_job"]
                for w in client.get("/workers", headers=bearer(key)).json()["workers"]
            }
            for key in (ALICE, BOB)
        }
        fleet = client.get("/workers", headers=bearer(ALICE)).json()
    assert seen[ALICE] == {"gpu-a": jobs[ALICE], "gpu-b": None}
    assert seen[BOB] == {"gpu-a": None, "gpu-b": jobs[BOB]}
    assert fleet["busy"] == 2  # both workers still count as busy
