"""Issue 16: per-key limits. A noisy key fills its own allowance, never the queue: a quiet key still gets
202; over a limit the 429 names the limit and the key's current use; a slot frees when a job ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from service.auth import key_entry, new_api_key
from service.quota import RESERVATION_GRACE_S
from tests.service.conftest import assert_error_shape

NOISY = new_api_key()
QUIET = new_api_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keyed(settings: Settings, **update: object) -> TestClient:
    entries = [SecretStr(key_entry("noisy", NOISY)), SecretStr(key_entry("quiet", QUIET))]
    return TestClient(
        create_app(settings.model_copy(update={"auth_mode": "keys", "api_keys": entries, **update}))
    )


def post(client: TestClient, key: str) -> object:
    return client.post("/generate", json={"prompt": "a red ball"}, headers=bearer(key))


@pytest.fixture
def limited(settings: Settings) -> Iterator[TestClient]:
    with keyed(settings, key_max_jobs=5, max_queue_depth=20) as client:
        yield client


def test_a_noisy_key_cannot_fill_the_queue_for_a_quiet_one(limited: TestClient) -> None:
    codes = [post(limited, NOISY).status_code for _ in range(30)]  # type: ignore[attr-defined]
    assert codes == [202] * 5 + [429] * 25
    assert post(limited, QUIET).status_code == 202  # type: ignore[attr-defined]

    refused = post(limited, NOISY)
    error = assert_error_shape(refused, 429, "key_limit_exceeded")
    assert error["details"]["exceeded"] == "jobs"
    assert error["details"]["limit"]["jobs"] == 5
    assert error["details"]["in_use"]["jobs"] == 5
    assert int(refused.headers["retry-after"]) >= 1  # type: ignore[attr-defined]


def test_a_job_that_ends_frees_its_slot(limited: TestClient) -> None:
    ids = [post(limited, NOISY).json()["id"] for _ in range(5)]  # type: ignore[attr-defined]
    assert post(limited, NOISY).status_code == 429  # type: ignore[attr-defined]
    assert limited.delete(f"/jobs/{ids[0]}", headers=bearer(NOISY)).status_code == 200
    assert post(limited, NOISY).status_code == 202  # type: ignore[attr-defined]
    assert post(limited, NOISY).status_code == 429  # type: ignore[attr-defined]


def test_the_compute_cap_counts_flops_in_flight(settings: Settings) -> None:
    with keyed(settings, key_max_jobs=0, key_max_flops=1.0) as client:
        # the first job always fits (the cap bounds concurrency, not job size: admission_max_flops does)
        assert post(client, NOISY).status_code == 202  # type: ignore[attr-defined]
        refused = post(client, NOISY)
        error = assert_error_shape(refused, 429, "key_limit_exceeded")
        assert error["details"]["exceeded"] == "flops"
        assert error["details"]["limit"]["flops"] == 1.0
        assert error["details"]["in_use"]["flops"] > 1.0 and error["details"]["in_use"]["jobs"] == 1
        assert post(client, QUIET).status_code == 202  # type: ignore[attr-defined]


def test_the_default_compute_cap_is_set(settings: Settings) -> None:
    """No key_max_flops configured: a cap of 20 default-sized jobs still applies."""
    with keyed(settings, key_max_jobs=0) as client:
        codes = [post(client, NOISY).status_code for _ in range(22)]  # type: ignore[attr-defined]
    assert codes == [202] * 20 + [429] * 2


def test_open_mode_has_no_per_key_limits(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"key_max_jobs": 1}))) as client:
        assert [client.post("/generate", json={"prompt": "x"}).status_code for _ in range(3)] == [202] * 3


def test_a_reservation_whose_job_was_never_stored_frees_its_slot_after_the_grace(settings: Settings) -> None:
    """The API died between reserving a slot and storing the job: the reservation (its wall-clock time in
    the key's inflight hash, its FLOPs in job_flops) holds the key's only slot until RESERVATION_GRACE_S have
    passed, then the next submission drops it. The times are written directly, no waiting."""
    with keyed(settings, key_max_jobs=1, max_queue_depth=20) as client:
        state = client.app.state.m4v  # type: ignore[attr-defined]
        keys, r = state.store.keys, state.redis
        owner = "noisy"  # the key id of NOISY's entry is its owner
        r.hset(keys.owner_inflight(owner), "lost", repr(time.time()))
        r.hset(keys.job_flops(), "lost", "1e12")
        assert_error_shape(post(client, NOISY), 429, "key_limit_exceeded")  # fresh: maybe still storing
        r.hset(keys.owner_inflight(owner), "lost", repr(time.time() - RESERVATION_GRACE_S - 1))
        assert post(client, NOISY).status_code == 202  # abandoned: dropped, the slot is free
        assert r.hget(keys.job_flops(), "lost") is None
        assert r.hget(keys.owner_inflight(owner), "lost") is None
