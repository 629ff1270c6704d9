"""Fresh presigned GET URLs for finished videos. Presigning is local SigV4 maths: no network call."""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from m4v_core import ApiSettings, JobResult
from m4v_core.jobview import JobResultOut, public_result
from service.errors import StorageUnavailableError

log = logging.getLogger(__name__)


def s3_client(settings: ApiSettings, endpoint: str | None) -> Any:
    """The API's boto3 S3 client for ``endpoint`` (path-style, SigV4), with the settings' region and keys."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


class Presigner:
    def __init__(self, settings: ApiSettings):
        self.bucket = settings.s3_bucket
        self.expiry_s = settings.presign_expiry_s
        # URLs go to clients: sign them for the endpoint clients reach (SigV4 signs the host).
        self.client: Any = s3_client(settings, settings.s3_public_endpoint or settings.s3_endpoint)

    def url(self, key: str) -> str:
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expiry_s
                )
            )
        except BotoCoreError as exc:  # e.g. NoCredentialsError: nothing to sign with
            raise StorageUnavailableError(f"cannot presign video URLs: {exc}", retry_after_s=60) from exc

    def result(self, result: JobResult) -> JobResultOut:
        """The public result with freshly signed URLs (left empty, and logged, if signing is impossible)."""
        try:
            return public_result(result, self.url, self.expiry_s)
        except StorageUnavailableError as exc:
            log.warning("result without URLs: %s", exc.message)
            return public_result(result)
