"""worker/pipeline.py: weights from s3:// are downloaded once into the local cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from m4v_cli.seaweed import SeaweedS3
from m4v_core import Settings
from tests.conftest import s3_client
from worker.pipeline import fetch_s3_weights, resolve_weights, split_s3_url


def s3_settings(server: SeaweedS3) -> Settings:
    return Settings(
        s3_endpoint=server.endpoint, s3_access_key=server.access_key, s3_secret_key=server.secret_key
    )


def test_split_s3_url_rejects_missing_parts() -> None:
    assert split_s3_url("s3://b/ckpt/tiny/") == ("b", "ckpt/tiny")
    for bad in ("s3://bucket", "s3:///key", "http://b/k"):
        with pytest.raises(ValueError):
            split_s3_url(bad)


def test_single_file_is_downloaded_once_and_then_served_from_cache(
    s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="ckpt/tiny.safetensors", Body=b"weights-v1")
    url = f"s3://{s3_bucket}/ckpt/tiny.safetensors"
    path = fetch_s3_weights(url, s3_settings(s3_server), tmp_path)
    assert path.name == "tiny.safetensors" and path.read_bytes() == b"weights-v1"
    client.delete_object(Bucket=s3_bucket, Key="ckpt/tiny.safetensors")
    assert fetch_s3_weights(url, s3_settings(s3_server), tmp_path) == path  # no second download


def test_prefix_is_downloaded_as_a_directory(s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path) -> None:
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="ckpt/m4v/model.safetensors", Body=b"w")
    client.put_object(Bucket=s3_bucket, Key="ckpt/m4v/config.json", Body=b"{}")
    settings = s3_settings(s3_server).model_copy(update={"weights": f"s3://{s3_bucket}/ckpt/m4v"})
    local = Path(resolve_weights(settings, tmp_path) or "")
    assert local.is_dir()
    assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]


def test_missing_local_weights_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_weights(Settings(weights=str(tmp_path / "nope")))
    assert resolve_weights(Settings()) is None
