"""worker/storage.py against a real SeaweedFS S3 server (SigV4, presigned expiry enforced)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from m4v_cli.seaweed import SeaweedS3
from worker.storage import Storage, StorageError, video_keys


def make_storage(server: SeaweedS3, bucket: str, threshold: int = 8 * 1024 * 1024) -> Storage:
    return Storage(
        bucket=bucket,
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        multipart_threshold_bytes=threshold,
    )


def test_keys_are_dated_by_job_creation() -> None:
    keys = video_keys("abc", datetime(2025, 3, 7, 23, 59, tzinfo=UTC))
    assert keys.video == "videos/2025/03/07/abc.mp4"
    assert keys.thumbnail == "videos/2025/03/07/abc.jpg"
    assert keys.metadata == "videos/2025/03/07/abc.json"


def test_round_trip_keeps_bytes_and_content_type(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = make_storage(s3_server, s3_bucket)
    data = os.urandom(12345)
    storage.upload("videos/x.mp4", data, "video/mp4")
    assert storage.download("videos/x.mp4") == data
    assert storage.head("videos/x.mp4")["ContentType"] == "video/mp4"


def test_object_above_threshold_goes_up_in_parts(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = make_storage(s3_server, s3_bucket, threshold=1024 * 1024)
    data = os.urandom(9 * 1024 * 1024)  # > 8 MiB -> two 5 MiB-minimum parts
    storage.upload("big.bin", data, "application/octet-stream")
    etag = storage.head("big.bin")["ETag"].strip('"')
    assert etag.endswith("-2"), etag  # multipart ETags are md5-of-md5s with a part count
    assert storage.download("big.bin") == data


def test_small_object_is_a_single_put(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = make_storage(s3_server, s3_bucket)
    storage.upload("small.bin", b"x" * 1000, "application/octet-stream")
    assert "-" not in storage.head("small.bin")["ETag"]


def test_presigned_url_downloads_then_expires(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = make_storage(s3_server, s3_bucket)
    storage.upload("v.mp4", b"video-bytes", "video/mp4")
    fresh = httpx.get(storage.presign_get("v.mp4", expires_s=600))
    assert fresh.status_code == 200 and fresh.content == b"video-bytes"
    short = storage.presign_get("v.mp4", expires_s=1)
    time.sleep(2.2)
    assert httpx.get(short).status_code == 403


def test_ensure_bucket_creates_a_missing_bucket(s3_server: SeaweedS3) -> None:
    storage = make_storage(s3_server, f"m4v-new-{uuid.uuid4().hex[:8]}")
    for _ in range(50):  # SeaweedFS may refuse bucket creation for a moment after start
        try:
            storage.ensure_bucket()
            break
        except StorageError:
            time.sleep(0.2)
    storage.ensure_bucket()  # idempotent
    storage.upload("k", b"1", "text/plain")
    assert storage.download("k") == b"1"


def test_wrong_credentials_raise_storage_error(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = Storage(bucket=s3_bucket, endpoint_url=s3_server.endpoint, access_key="m4v", secret_key="wrong")
    with pytest.raises(StorageError, match="upload"):
        storage.upload("k", b"1", "text/plain")


def test_download_tree_fetches_a_prefix(s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_server, s3_bucket)
    storage.upload("ckpt/model.safetensors", b"w", "application/octet-stream")
    storage.upload("ckpt/sub/config.json", b"{}", "application/json")
    storage.upload("ckpt-other/x", b"no", "application/octet-stream")
    got = sorted(p.relative_to(tmp_path).as_posix() for p in storage.download_tree("ckpt", tmp_path))
    assert got == ["model.safetensors", "sub/config.json"]


def test_presigned_urls_use_the_public_endpoint_and_verify_there(
    s3_server: SeaweedS3, s3_bucket: str
) -> None:
    """Uploads go to the internal endpoint; URLs handed to clients are signed for the public one."""
    public = s3_server.endpoint.replace("127.0.0.1", "localhost")
    storage = Storage(
        bucket=s3_bucket,
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        public_endpoint_url=public,
    )
    storage.upload("pub.mp4", b"public-bytes", "video/mp4")
    url = storage.presign_get("pub.mp4", expires_s=600)
    assert url.startswith(public + "/")
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"public-bytes"
    # The signature covers the host: the same URL pointed at the internal host is refused.
    assert httpx.get(url.replace(public, s3_server.endpoint)).status_code == 403
