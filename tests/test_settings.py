"""Settings are split by process (m4v_core/settings.py); every field is read by the process it belongs to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from m4v_core.settings import ApiSettings, CommonSettings, ModelSettings, Settings, WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
API_ONLY = set(ApiSettings.model_fields) - set(CommonSettings.model_fields)
WORKER_ONLY = set(WorkerSettings.model_fields) - set(CommonSettings.model_fields)


def _readers(name: str, *packages: str) -> list[str]:
    """Files under `packages` that read the attribute `name` (``.name``), tests excluded."""
    out = subprocess.run(
        ["git", "grep", "-l", "-E", rf"\.{name}\b", "--", *packages], cwd=ROOT, capture_output=True, text=True
    )
    return [p for p in out.stdout.split() if p.endswith(".py")]


def test_the_split_covers_every_field_once() -> None:
    assert set(Settings.model_fields) == set(ApiSettings.model_fields) | set(WorkerSettings.model_fields)
    assert not API_ONLY & WORKER_ONLY
    assert set(ModelSettings.model_fields) <= WORKER_ONLY


def test_every_setting_is_read_by_its_own_process() -> None:
    unread = []
    for name in Settings.model_fields:
        if name in API_ONLY:
            where = ("service", "m4v_cli/main.py")  # `m4v api` binds api_host:api_port
        elif name in WORKER_ONLY:
            where = ("worker", "docker")  # docker/worker_ready.py: the worker's probe
        else:
            where = ("service", "worker", "m4v_core", "m4v_cli")
        if not _readers(name, *where):
            unread.append(name)
    assert unread == [], f"settings nobody reads (remove them or read them): {unread}"


def test_a_process_never_reads_the_others_settings() -> None:
    crossing = [
        (path, name)
        for names, packages in ((WORKER_ONLY, ("service",)), (API_ONLY, ("worker",)))
        for name in names
        for path in _readers(name, *packages)
        if re.search(rf"settings\.{name}\b", (ROOT / path).read_text())
    ]
    assert crossing == []


def test_each_process_builds_only_its_own_settings() -> None:
    app = (ROOT / "service" / "app.py").read_text()
    worker = (ROOT / "worker" / "main.py").read_text()
    assert "ApiSettings()" in app and "WorkerSettings()" not in app
    assert re.search(r"\bSettings\(\)", app) is None
    assert "WorkerSettings()" in worker and re.search(r"\bSettings\(\)", worker) is None
