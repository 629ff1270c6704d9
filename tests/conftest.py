"""Real services for tests: the machine's Redis (a key prefix per test) and a SeaweedFS S3 server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from botocore.config import Config

from m4v_cli.seaweed import SeaweedS3
from m4v_core.keys import Keys

REDIS_URL = os.environ.get("M4V_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def _open_auth_by_default() -> Iterator[None]:
    """Settings default to auth_mode=keys; tests (and the processes they start) run in open mode unless they
    pass auth_mode="keys" themselves, as tests/service/test_auth*.py do."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M4V_AUTH_MODE", os.environ.get("M4V_TEST_AUTH_MODE", "open"))
        yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    redis.Redis.from_url(REDIS_URL).ping()
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique prefix per test; its keys (and rq queues) are deleted afterwards."""
    prefix = f"m4vtest{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for pattern in Keys(prefix).everything():
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(data_dir=Path(tmp_path_factory.mktemp("seaweed"))).start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> str:
    """A fresh bucket per test (SeaweedFS may need a moment after start before buckets can be made)."""
    name = f"m4v-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_server)
    for _ in range(50):
        try:
            client.create_bucket(Bucket=name)
            return name
        except client.exceptions.ClientError:
            time.sleep(0.2)
    client.create_bucket(Bucket=name)
    return name


def s3_client(server: SeaweedS3):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def tiny_pipeline() -> Any:
    """The tiny preset's pipeline on CPU, loaded once per test module."""
    from model.pipeline import VideoPipeline

    return VideoPipeline.from_preset("tiny", device="cpu")
