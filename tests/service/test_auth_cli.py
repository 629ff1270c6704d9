"""`m4v keys create`: the printed key authenticates against an API configured with the printed entry."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from m4v_cli.main import app as cli
from service.app import create_app
from worker.contract import Settings


def test_created_key_works_and_only_its_hash_is_in_the_entry(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "team-a", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["entry"].startswith("team-a:") and made["key"] not in made["entry"]
    keyed = settings.model_copy(update={"auth_mode": "keys", "api_keys": [SecretStr(made["entry"])]})
    with TestClient(create_app(keyed)) as c:
        ok = c.post("/generate", json={"prompt": "x"}, headers={"Authorization": f"Bearer {made['key']}"})
        assert ok.status_code == 202, ok.text
        assert c.post("/generate", json={"prompt": "x"}).status_code == 401


def test_two_keys_are_different_and_bad_ids_are_refused() -> None:
    runner = CliRunner()
    first, second = (
        json.loads(runner.invoke(cli, ["keys", "create", "a", "--json"]).output) for _ in range(2)
    )
    assert first["key"] != second["key"]
    assert runner.invoke(cli, ["keys", "create", "no spaces"]).exit_code != 0
