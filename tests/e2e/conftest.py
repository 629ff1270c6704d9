"""One live server (API + worker processes) shared by the client, SDK and CLI tests of this directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from m4v_cli.seaweed import SeaweedS3
from tests.e2e.live_stack import LiveStack, drop_keys, start_live_stack


@pytest.fixture(scope="session")
def live(
    redis_url: str, s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    bucket = f"m4v-live-{uuid.uuid4().hex[:12]}"  # the worker creates it at start
    stack = start_live_stack(redis_url, s3_server, bucket, tmp_path_factory.mktemp("live"))
    yield stack
    stack.stop()
    drop_keys(redis_url, stack.key_prefix)
