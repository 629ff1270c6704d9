"""M4V_API_KEYS_FILE: keys added, removed or broken in the file take effect within api_keys_reload_s,
without restarting the app; keys from M4V_API_KEYS stay valid alongside; a Kubernetes symlink swap is
followed."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from m4v_core import Settings
from service.app import create_app
from service.auth import key_entry, new_api_key
from tests.service.conftest import assert_error_shape

RELOAD_S = 0.2
ALICE, BOB, CAROL = new_api_key(), new_api_key(), new_api_key()


def write_keys(path: Path, *lines: str) -> None:
    """Replace the file in one rename, as editors and the kubelet do (the API never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def status(client: TestClient, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return client.post("/generate", json={"prompt": "a red ball"}, headers=headers).status_code


def after_reload_interval() -> None:
    time.sleep(RELOAD_S * 1.25)


def keyed_app(settings: Settings, keys_file: Path, env_keys: list[str] | None = None) -> TestClient:
    update = {
        "auth_mode": "keys",
        "api_keys": [SecretStr(e) for e in env_keys or []],
        "api_keys_file": str(keys_file),
        "api_keys_reload_s": RELOAD_S,
    }
    return TestClient(create_app(settings.model_copy(update=update)))


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    write_keys(path, "# team keys", key_entry("alice", ALICE), "")
    return path


@pytest.fixture
def client(settings: Settings, keys_file: Path) -> Iterator[TestClient]:
    with keyed_app(settings, keys_file) as c:
        yield c


def test_a_key_added_to_the_file_works_after_the_reload_interval(client: TestClient, keys_file: Path) -> None:
    assert status(client, ALICE) == 202
    assert status(client, BOB) == 401
    write_keys(keys_file, key_entry("alice", ALICE), key_entry("bob", BOB))
    after_reload_interval()
    assert status(client, BOB) == 202
    assert status(client, ALICE) == 202


def test_a_key_removed_from_the_file_answers_401_after_the_reload_interval(
    client: TestClient, keys_file: Path
) -> None:
    write_keys(keys_file, key_entry("alice", ALICE), key_entry("bob", BOB))
    after_reload_interval()
    assert status(client, BOB) == 202
    write_keys(keys_file, key_entry("bob", BOB))
    after_reload_interval()
    response = client.post("/generate", json={"prompt": "x"}, headers={"Authorization": f"Bearer {ALICE}"})
    assert_error_shape(response, 401, "unauthorized")
    assert status(client, BOB) == 202


def test_a_broken_file_keeps_the_previous_keys_and_logs_the_line_not_its_text(
    client: TestClient, keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad_line = "bob " + key_entry("bob", BOB).split(":")[1]  # a hash with a space for the colon
    write_keys(keys_file, "# rotated", key_entry("carol", CAROL), bad_line)
    with caplog.at_level(logging.INFO, logger="service"):
        after_reload_interval()
        assert status(client, ALICE) == 202  # the last good set stays in force
        assert status(client, CAROL) == 401  # nothing of the broken version is taken
        after_reload_interval()
        assert status(client, ALICE) == 202  # the same broken version is not reported again
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "M4V_API_KEYS_FILE line 3" in errors[0].getMessage()
    logged = "\n".join(r.getMessage() + str(vars(r)) for r in caplog.records)
    assert bad_line.split()[1] not in logged and key_entry("carol", CAROL) not in logged
    write_keys(keys_file, key_entry("carol", CAROL))  # fixed: taken at the next check
    after_reload_interval()
    assert status(client, CAROL) == 202 and status(client, ALICE) == 401


def test_keys_from_the_setting_and_the_file_are_both_valid(settings: Settings, keys_file: Path) -> None:
    with keyed_app(settings, keys_file, env_keys=[key_entry("bob", BOB)]) as c:
        assert status(c, ALICE) == 202 and status(c, BOB) == 202
        write_keys(keys_file, key_entry("carol", CAROL), key_entry("bob", BOB))  # bob in both: fine
        after_reload_interval()
        assert (status(c, ALICE), status(c, BOB), status(c, CAROL)) == (401, 202, 202)
        write_keys(keys_file)  # an emptied file leaves M4V_API_KEYS in force
        after_reload_interval()
        assert (status(c, BOB), status(c, CAROL)) == (202, 401)


def test_a_kubernetes_secret_update_by_symlink_swap_is_followed(settings: Settings, tmp_path: Path) -> None:
    """The kubelet's layout: <mount>/api-keys -> ..data/api-keys, ..data -> ..<timestamp>/; an update
    writes a new timestamp dir, renames a new ..data link over the old one, then deletes the old dir."""
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(version: str, *lines: str) -> None:
        (mount / version).mkdir()
        (mount / version / "api-keys").write_text("\n".join(lines))  # no final newline, as kubectl writes
        (mount / "..data_tmp").symlink_to(version)
        os.replace(mount / "..data_tmp", mount / "..data")

    publish("..2025_01_01_v1", key_entry("alice", ALICE))
    (mount / "api-keys").symlink_to("..data/api-keys")
    with keyed_app(settings, mount / "api-keys") as c:
        assert (status(c, ALICE), status(c, BOB)) == (202, 401)
        publish("..2025_01_02_v2", key_entry("bob", BOB))
        for old in (mount / "..2025_01_01_v1").iterdir():
            old.unlink()
        after_reload_interval()
        assert (status(c, ALICE), status(c, BOB)) == (401, 202)


def test_each_reload_logs_key_ids_and_never_hashes(
    client: TestClient, keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_keys(keys_file, key_entry("bob", BOB))
    with caplog.at_level(logging.INFO, logger="service"):
        after_reload_interval()
        assert status(client, BOB) == 202
    reloads = [r for r in caplog.records if r.getMessage() == "api keys reloaded"]
    assert len(reloads) == 1
    fields = vars(reloads[0])
    assert (fields["key_ids"], fields["added"], fields["removed"]) == (["bob"], ["bob"], ["alice"])
    logged = "\n".join(r.getMessage() + str(vars(r)) for r in caplog.records)
    for entry in (key_entry("bob", BOB), key_entry("alice", ALICE)):
        assert entry.split(":")[1] not in logged


def test_a_missing_file_after_start_keeps_the_keys_and_logs_one_error(
    client: TestClient, keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file.unlink()
    with caplog.at_level(logging.ERROR, logger="service"):
        after_reload_interval()
        assert status(client, ALICE) == 202
        after_reload_interval()
        assert status(client, ALICE) == 202
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "No such file" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("lines", "message"),
    [(None, "No such file"), (["# ok", "", "alice:not-hex"], "M4V_API_KEYS_FILE line 3")],
)
def test_a_missing_or_broken_file_at_start_stops_the_start(
    settings: Settings, tmp_path: Path, lines: list[str] | None, message: str
) -> None:
    path = tmp_path / "api-keys"
    if lines is not None:
        write_keys(path, *lines)
    with pytest.raises((OSError, ValueError), match=message) as info, keyed_app(settings, path):
        pass
    assert "not-hex" not in str(info.value)
