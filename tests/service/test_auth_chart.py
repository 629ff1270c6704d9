"""The Helm chart carries the API keys in its Secret (never the ConfigMap) in the form Settings reads."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from m4v_core import Settings
from service.auth import KeyRegistry, key_entry, new_api_key

pytest.importorskip("helm_python")
from tests.deploy.chart_render import container, render  # noqa: E402  (needs the Helm SDK)

KEY = new_api_key()
ENTRY = key_entry("team-a", KEY)


def test_api_keys_go_to_the_secret_and_parse_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render({"secrets": {"apiKeys": [ENTRY]}})
    secret = rendered.one("Secret", "secret")["data"]
    raw = base64.b64decode(secret["M4V_API_KEYS"]).decode()
    assert json.loads(raw) == [ENTRY]
    for cm in rendered.kind("ConfigMap"):
        assert ENTRY not in yaml.safe_dump(cm)
        assert cm["data"].get("M4V_AUTH_MODE", "keys") == "keys"
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container(rendered.one("Deployment", "api"), "api")["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs["M4V_API_KEYS"] == "M4V_API_KEYS"
    monkeypatch.setenv("M4V_API_KEYS", raw)
    monkeypatch.setenv("M4V_AUTH_MODE", "keys")
    settings = Settings()  # type: ignore[call-arg]  # fields from M4V_* env, as in the pod
    registry = KeyRegistry.from_entries([k.get_secret_value() for k in settings.api_keys])
    assert registry.identify(KEY) == "team-a"


@pytest.mark.parametrize(
    "values",
    [
        {"secrets": {"apiKeys": [KEY]}},
        {"settings": {"api_keys": [ENTRY]}},
        {"settings": {"auth_mode": "none"}},
    ],
)
def test_raw_keys_keys_under_settings_and_unknown_modes_fail_at_render(values: dict[str, object]) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011  (the Helm SDK's error type is not public)
        render(values)
