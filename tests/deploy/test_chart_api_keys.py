"""The chart's keys file: auth.apiKeysSecret is mounted (whole, read-only) into the api only,
M4V_API_KEYS_FILE points at it, M4V_API_KEYS keeps working, and the api re-reads the file where the chart
mounts it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from m4v_core import Settings
from service.auth import key_entry, new_api_key
from tests.deploy.chart_render import VARIANTS, container, pod_spec, render

helm = pytest.importorskip("helm_python")


def api_keys_wiring(values: dict[str, Any]) -> dict[str, Any]:
    """The api's M4V_API_KEYS* env entries, its api-keys mount and volume; the worker's env names."""
    rendered = render(values)
    api_doc = rendered.one("Deployment", "api")
    api = container(api_doc, "api")
    worker = container(rendered.one("Deployment", "worker"), "worker")
    return {
        "env": {e["name"]: e for e in api["env"] if e["name"].startswith("M4V_API_KEYS")},
        "mount": next((m for m in api["volumeMounts"] if m["name"] == "api-keys"), None),
        "volume": next((v for v in pod_spec(api_doc)["volumes"] if v["name"] == "api-keys"), None),
        "worker_env": {e["name"] for e in worker["env"]},
        "worker_volumes": {v["name"] for v in pod_spec(rendered.one("Deployment", "worker"))["volumes"]},
    }


def test_without_a_keys_secret_the_api_gets_only_m4v_api_keys() -> None:
    wiring = api_keys_wiring({})
    assert set(wiring["env"]) == {"M4V_API_KEYS"}
    assert wiring["mount"] is None and wiring["volume"] is None


def test_the_keys_secret_is_mounted_whole_and_read_only_where_m4v_api_keys_file_points() -> None:
    values = VARIANTS["api-keys-file"]
    wiring = api_keys_wiring(values)
    auth = values["auth"]
    assert wiring["volume"]["secret"]["secretName"] == auth["apiKeysSecret"]
    assert wiring["volume"]["secret"]["items"] == [
        {"key": auth["apiKeysSecretKey"], "path": auth["apiKeysSecretKey"]}
    ]
    mount = wiring["mount"]
    assert mount["readOnly"] is True
    assert "subPath" not in mount and "subPathExpr" not in mount  # the kubelet never updates a subPath
    assert wiring["env"]["M4V_API_KEYS_FILE"]["value"] == f"{mount['mountPath']}/{auth['apiKeysSecretKey']}"
    assert wiring["env"]["M4V_API_KEYS"]["valueFrom"]["secretKeyRef"]["key"] == "M4V_API_KEYS"  # still there
    assert "M4V_API_KEYS_FILE" not in wiring["worker_env"] and "api-keys" not in wiring["worker_volumes"]


@pytest.mark.parametrize(
    "auth",
    [
        {"apiKeysSecret": "Not_A_Name"},
        {"apiKeysSecret": "k", "apiKeysSecretKey": "a/b"},
        {"apiKeysSecret": "k", "apiKeysMountPath": "relative/dir"},
        {"apiKeysSecret": "k", "unknown": 1},
    ],
)
def test_bad_keys_file_values_fail_at_render(auth: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render({"auth": auth})


def test_api_keys_file_is_chart_managed_not_a_setting() -> None:
    with pytest.raises(helm.HelmError):
        render({"settings": {"api_keys_file": "/etc/keys"}})


def test_the_api_rereads_keys_where_the_chart_mounts_them(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Render with the mount under tmp_path, lay the Secret out there as the kubelet does, start the app
    with the rendered environment, then update the Secret the kubelet's way (new dir, ..data swapped)."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    mount = tmp_path / "etc-m4v-api-keys"
    values = {"auth": {"apiKeysSecret": "m4v-api-keys", "apiKeysMountPath": str(mount)}}
    rendered = render(values)
    env = {e["name"]: e.get("value") for e in container(rendered.one("Deployment", "api"), "api")["env"]}
    for key, value in rendered.one("ConfigMap", "config")["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("M4V_API_KEYS_FILE", env["M4V_API_KEYS_FILE"])
    monkeypatch.setenv("M4V_API_KEYS_RELOAD_S", "0.1")
    old, new = new_api_key(), new_api_key()

    def kubelet_publish(version: str, text: str) -> None:
        (mount / version).mkdir(parents=True)
        (mount / version / "api-keys").write_text(text)
        (mount / "..data_tmp").symlink_to(version)
        os.replace(mount / "..data_tmp", mount / "..data")
        if not (mount / "api-keys").is_symlink():
            (mount / "api-keys").symlink_to("..data/api-keys")

    kubelet_publish("..v1", key_entry("team-a", old))
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, preset="tiny")  # type: ignore[call-arg]
    assert settings.api_keys_file == str(mount / "api-keys") and settings.auth_mode == "keys"
    with TestClient(create_app(settings)) as client:

        def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return client.post("/generate", json={"prompt": "x"}, headers=headers).status_code

        assert (status(old), status(new)) == (202, 401)
        kubelet_publish("..v2", f"# rotated\n{key_entry('team-a', new)}")
        time.sleep(0.15)
        assert (status(old), status(new)) == (401, 202)
