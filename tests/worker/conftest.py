"""Fixtures of the worker tests that run jobs through a real worker: real Redis, SeaweedFS, the tiny model
(tiny_pipeline: tests/conftest.py). Helpers (queue, work, Hooks, ...) are in jobs_helpers.py."""

from __future__ import annotations

import pytest
import redis

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobStore, Settings
from tests.worker.jobs_helpers import SECRET, service_settings


@pytest.fixture
def settings(redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str) -> Settings:
    return service_settings(
        redis_url,
        key_prefix,
        s3_server,
        s3_bucket,
        webhook_secret=SECRET,
        webhook_retry_delays_s=[0.05],
        worker_name=f"w-{key_prefix}",
        heartbeat_s=0.2,
    )


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore(redis.Redis.from_url(settings.redis_url), prefix=settings.key_prefix)
