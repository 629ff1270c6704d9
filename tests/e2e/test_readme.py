"""The README is executable: its first command makes a real MP4; its snippets and settings table are true."""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from m4v_core.settings import Settings
from model.config import get_preset

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def setup_commands() -> list[str]:
    """The two set-up commands: the first two bash blocks, before the first section heading."""
    top = README.read_text().split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", top, flags=re.S)]


def run_part(command: str) -> str:
    """What follows the install steps of an `a && b && c` command line."""
    parts = [p.strip() for p in command.split("&&")]
    return " && ".join(p for p in parts if not p.startswith("pip install"))


def test_readme_top_has_exactly_two_setup_commands_installing_torch_first() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    for command in commands:
        assert command.startswith("pip install torch==2.13.0 && pip install -e ")
    assert run_part(commands[0]).startswith("m4v up --generate ")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_part = run_part(setup_commands()[1])
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_part == "python -m pytest"
    assert re.search(rf"^\s*{re.escape(test_part)}\b", ci, flags=re.M), (
        ".ci/run does not run the README command"
    )


def test_readme_configuration_table_matches_every_settings_field() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from gen_settings_table import END, START, settings_table
    finally:
        sys.path.pop(0)
    text = README.read_text()
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    for name in Settings.model_fields:
        assert f"`M4V_{name.upper()}`" in table, f"M4V_{name.upper()} missing from the README table"
    assert table == settings_table(), "README table is stale: python docs/gen_settings_table.py --write"


def test_readme_webhook_snippet_accepts_our_signature_and_rejects_a_forgery() -> None:
    from standardwebhooks import WebhookVerificationError

    from m4v_core.webhook_signing import signed_headers

    snippet = next(b for b in code_blocks("python") if "def verify_m4v_webhook" in b)
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    verify = namespace["verify_m4v_webhook"]
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    body = '{"type": "job.completed", "timestamp": "2025-01-01T00:00:00Z", "data": {"id": "j1"}}'
    headers = signed_headers(secret, "msg_1", body)
    assert verify(body.encode(), headers, secret)["data"]["id"] == "j1"  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        verify(body.replace("j1", "j2").encode(), headers, secret)  # type: ignore[operator]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_readme_first_command_makes_a_playable_mp4(tmp_path: Path) -> None:
    command = run_part(setup_commands()[0])
    argv = shlex.split(command)
    assert argv[:3] == ["m4v", "up", "--generate"] and "-o" in argv
    out = tmp_path / argv[argv.index("-o") + 1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("M4V_")}  # embedded Redis and S3
    env["M4V_HOME"] = str(tmp_path / "home")
    started = time.monotonic()
    proc = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    elapsed = time.monotonic() - started
    logs = "\n".join(p.read_text()[-3000:] for p in (tmp_path / "home" / "logs").glob("*.log"))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}\n{logs}"
    cfg = get_preset("tiny")
    width, height = cfg.default_resolution
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert stream.codec_context.name == "h264"
    assert len(frames) == cfg.default_frames
    assert (frames[0].width, frames[0].height) == (width, height)
    assert elapsed < 400
