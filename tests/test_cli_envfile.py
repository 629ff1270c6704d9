"""`m4v up` settings files (.env, --config; never over the process environment) and its links when it listens
on every interface."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from m4v_cli.envfile import EnvFileError, apply_env_files, read_env_file
from m4v_cli.main import app


def test_parses_comments_quotes_and_export(tmp_path: Path) -> None:
    path = tmp_path / "settings.env"
    path.write_text(
        "# comment\n\nexport M4V_PRESET=tiny\nM4V_S3_BUCKET = 'videos'\nM4V_LOG_LEVEL=\"DEBUG\"\n"
    )
    assert read_env_file(path) == {"M4V_PRESET": "tiny", "M4V_S3_BUCKET": "videos", "M4V_LOG_LEVEL": "DEBUG"}
    path.write_text("M4V_PRESET=tiny\nnot a setting\n")
    with pytest.raises(EnvFileError, match=r"settings.env:2"):
        read_env_file(path)


def test_environment_beats_config_beats_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=dotenv\nB=dotenv\nC=dotenv\n")
    config = tmp_path / "up.env"
    config.write_text("B=config\nC=config\n")
    environ = {"C": "environment"}
    assert apply_env_files(config, cwd=tmp_path, environ=environ) == [tmp_path / ".env", config]
    assert environ == {"A": "dotenv", "B": "config", "C": "environment"}
    with pytest.raises(EnvFileError, match="no such file"):
        apply_env_files(tmp_path / "missing.env", cwd=tmp_path, environ={})


def test_up_refuses_a_missing_config_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--config", str(tmp_path / "nope.env")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_up_on_every_interface_links_to_a_reachable_address(tmp_path: Path) -> None:
    from m4v_cli.embedded import Stack, UpOptions, _configure, lan_address

    stack = Stack(env={})
    _configure(stack, UpOptions(home=tmp_path, host="0.0.0.0", port=0))
    port = stack.env["M4V_API_PORT"]
    assert stack.env["M4V_API_HOST"] == "0.0.0.0" and stack.url == f"http://127.0.0.1:{port}"
    assert stack.env["M4V_PUBLIC_URL"] == f"http://{lan_address()}:{port}"
    local = Stack(env={})
    _configure(local, UpOptions(home=tmp_path, host="127.0.0.1", port=0))
    assert local.env["M4V_PUBLIC_URL"] == local.url
