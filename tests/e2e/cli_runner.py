"""Run the `m4v` command as a user does: a separate process, server and key from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.e2e.live_stack import LiveStack
from tests.e2e.worker_processes import ROOT


def cli_env(live: LiveStack, key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M4V_")}
    env.update(M4V_SERVER=live.url, M4V_API_KEY=key or live.alice, PYTHONPATH=str(ROOT), COLUMNS="200")
    return env


def m4v(
    live: LiveStack, *args: str, key: str | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m4v_cli", *args],
        cwd=ROOT,
        env=cli_env(live, key),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def m4v_json(live: LiveStack, *args: str, key: str | None = None) -> Any:
    done = m4v(live, *args, key=key)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
