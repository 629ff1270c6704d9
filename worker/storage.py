"""S3-compatible object storage for videos (boto3): uploads, multipart above a threshold, presigned GETs.

Every boto3/botocore failure leaves this module as StorageError, so the job boundary can report
error.type = upload_failed without knowing botocore's exception tree.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from m4v_core import WorkerSettings

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest allowed part (except the last)


class StorageError(RuntimeError):
    """An S3 request failed (network, auth, missing bucket, ...)."""


@dataclass(frozen=True)
class VideoKeys:
    video: str
    thumbnail: str
    metadata: str


def video_keys(job_id: str, created_at: datetime, attempt_id: str | None = None) -> VideoKeys:
    """videos/YYYY/MM/DD/<id>.<attempt>.mp4 (+ .jpg, + .json), dated by the job's creation. Each attempt of
    a job writes its own objects, so a superseded run can never overwrite the video of the run that owns the
    record; the record's result names the winner's keys (worker/attempt.py)."""
    stem = f"videos/{created_at:%Y/%m/%d}/{job_id}" + (f".{attempt_id}" if attempt_id else "")
    return VideoKeys(video=f"{stem}.mp4", thumbnail=f"{stem}.jpg", metadata=f"{stem}.json")


class Storage:
    """One bucket on one S3 endpoint."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        multipart_threshold_bytes: int = 8 * 1024 * 1024,
        upload_attempts: int = 5,
        retry_base_s: float = 0.5,
        retry_max_s: float = 8.0,
        public_endpoint_url: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.upload_attempts = max(1, upload_attempts)
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            # path style: SeaweedFS/MinIO endpoints have no per-bucket DNS names.
            # botocore retries throttling/5xx within one try; upload() adds its own backoff loop on top.
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        # Presigned URLs go to clients: signed for the endpoint they reach (SigV4 signs the host).
        self.presign_client = (
            boto3.client(
                "s3",
                endpoint_url=public_endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
            if public_endpoint_url
            else self.client
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=max(MIN_PART_BYTES, multipart_threshold_bytes),
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Storage:
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            multipart_threshold_bytes=settings.multipart_threshold_bytes,
            upload_attempts=settings.s3_upload_attempts,
            retry_base_s=settings.s3_retry_base_s,
            retry_max_s=settings.s3_retry_max_s,
            public_endpoint_url=settings.s3_public_endpoint,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (dev/test; production buckets come from infrastructure)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"head_bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"head_bucket {self.bucket}: {exc}") from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("created bucket", extra={"bucket": self.bucket})
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"create_bucket {self.bucket}: {exc}") from exc

    def upload(self, key: str, data: bytes, content_type: str) -> None:
        """Upload bytes (multipart above the threshold), up to upload_attempts tries with exponential
        backoff between them; StorageError after the last. Same key, same bytes: a retry overwrites."""
        delay = self.retry_base_s
        for attempt in range(1, self.upload_attempts + 1):
            try:
                self.client.upload_fileobj(
                    io.BytesIO(data),
                    self.bucket,
                    key,
                    ExtraArgs={"ContentType": content_type},
                    Config=self.transfer,
                )
                return
            except (ClientError, BotoCoreError, Boto3Error) as exc:
                if attempt == self.upload_attempts:
                    raise StorageError(
                        f"upload s3://{self.bucket}/{key} failed after {attempt} tries: {exc}"
                    ) from exc
                log.warning(
                    "upload failed; retrying",
                    extra={"key": key, "attempt": attempt, "retry_in_s": delay, "error": str(exc)[:200]},
                )
                time.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)

    def download(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(obj["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"download s3://{self.bucket}/{key}: {exc}") from exc

    def download_tree(self, prefix: str, dest: Path) -> list[Path]:
        """Download the object `prefix`, or every object under `prefix/`, into dest keeping relative paths."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            found = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
            wanted = [k for k in found if k == prefix or k.startswith(prefix.rstrip("/") + "/")]
            if not wanted:
                raise StorageError(f"nothing at s3://{self.bucket}/{prefix}")
            out: list[Path] = []
            for key in wanted:
                rel = Path(key).name if key == prefix else key[len(prefix.rstrip("/")) + 1 :]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, key, str(target))
                out.append(target)
            return out
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"download s3://{self.bucket}/{prefix}: {exc}") from exc

    def head(self, key: str) -> dict[str, Any]:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"head s3://{self.bucket}/{key}: {exc}") from exc

    def presign_get(self, key: str, expires_s: int) -> str:
        """A GET URL anyone can use for expires_s seconds (SigV4 query signature; no network call)."""
        try:
            url = self.presign_client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"presign s3://{self.bucket}/{key}: {exc}") from exc
        return str(url)
