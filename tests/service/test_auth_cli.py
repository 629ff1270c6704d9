"""`m4v keys create`: the printed key authenticates against an API configured with the printed entry."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from m4v_cli.main import app as cli
from m4v_core import Settings
from service.app import create_app


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


def test_the_printed_append_command_adds_the_key_to_a_running_apis_keys_file(
    settings: Settings, tmp_path: Path
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("# kubectl writes no final newline\nold:" + "a" * 64)
    result = CliRunner().invoke(cli, ["keys", "create", "team-a"])
    assert result.exit_code == 0, result.output
    key = re.findall(r"m4v_[A-Za-z0-9_-]{43}", result.output)[0]
    command = next(line.strip() for line in result.output.splitlines() if "$M4V_API_KEYS_FILE" in line)
    keyed = settings.model_copy(
        update={"auth_mode": "keys", "api_keys_file": str(keys_file), "api_keys_reload_s": 0}
    )
    with TestClient(create_app(keyed)) as c:
        headers = {"Authorization": f"Bearer {key}"}
        assert c.post("/generate", json={"prompt": "x"}, headers=headers).status_code == 401
        env = {**os.environ, "M4V_API_KEYS_FILE": str(keys_file)}
        subprocess.run(["bash", "-c", command], env=env, check=True)
        assert c.post("/generate", json={"prompt": "x"}, headers=headers).status_code == 202
    assert keys_file.read_text().splitlines()[1] == "old:" + "a" * 64  # the last line was kept whole
