"""docker-compose.yml (no Docker engine here): it parses, its services are the ones the README names, and
every M4V_* variable it sets is a real Settings field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from m4v_core import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
ROOT = COMPOSE.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_redis_s3_api_and_gpu_and_cpu_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "s3", "api", "worker", "worker-cpu"}
    assert services["worker"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in services["worker-cpu"]
    assert services["worker-cpu"]["environment"]["M4V_PRESET"] == "tiny"
    assert services["worker-cpu"]["build"]["target"] == "cpu"


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"  # an acknowledged job survives a crash
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"  # records are never evicted
    assert any(v.split(":")[0] in compose["volumes"] and v.endswith(":/data") for v in redis["volumes"])
    s3 = compose["services"]["s3"]
    assert any(v.split(":")[0] in compose["volumes"] for v in s3["volumes"])


def test_every_env_name_in_compose_is_a_settings_field(compose: dict[str, Any]) -> None:
    fields = {f"M4V_{n.upper()}" for n in Settings.model_fields}
    seen = 0
    for name, service in compose["services"].items():
        if name == "redis":  # Redis's own container (REDISCLI_AUTH for its healthcheck)
            continue
        for var in service.get("environment", {}):
            seen += 1
            assert var in fields, f"{name}: {var} is not a Settings field"
    assert seen > 20


def test_compose_interpolations_name_only_settings_or_build_knobs() -> None:
    fields = {f"M4V_{n.upper()}" for n in Settings.model_fields}
    # not settings: a host path, a build arg, Redis's password (in M4V_REDIS_URL and redis-server's command)
    knobs = {"M4V_MODELS_DIR", "TORCH_CUDA_ARCH_LIST", "REDIS_PASSWORD"}
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used - fields - knobs == set()


def test_services_reach_redis_and_s3_by_their_compose_names(compose: dict[str, Any]) -> None:
    api_env = compose["services"]["api"]["environment"]
    assert api_env["M4V_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert api_env["M4V_REDIS_URL"].endswith("@redis:6379/0")
    assert api_env["M4V_S3_ENDPOINT"].startswith("http://s3:")
    port = api_env["M4V_S3_ENDPOINT"].rsplit(":", 1)[1]
    assert f"-s3.port={port}" in compose["services"]["s3"]["command"]


def test_compose_builds_from_dockerfiles_that_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_redis_requires_the_password_that_the_services_use(compose: dict[str, Any]) -> None:
    """Redis is the root of trust (rq payloads are pickles): compose refuses to start without REDIS_PASSWORD,
    Redis requires it, its healthcheck and every service's M4V_REDIS_URL carry it."""
    redis_service = compose["services"]["redis"]
    command = redis_service["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert redis_service["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD}"
    for name in ("api", "worker", "worker-cpu"):
        assert "${REDIS_PASSWORD" in compose["services"][name]["environment"]["M4V_REDIS_URL"], name


def test_workers_keep_their_spool_on_a_named_volume(compose: dict[str, Any]) -> None:
    for name in ("worker", "worker-cpu"):
        service = compose["services"][name]
        spool = service["environment"]["M4V_SPOOL_DIR"]
        assert f"spool:{spool}" in service["volumes"] and "spool" in compose["volumes"]
