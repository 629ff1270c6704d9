"""The API's own S3 access: stream a stored video or thumbnail through the API (GET /v1/videos/{id}/content)
and delete a job's objects (DELETE /v1/videos/{id}). Presigned URLs for clients are service/presign.py's.

The layout is the workers' (worker/storage.py video_keys, worker/preview.py preview_prefix): the video, its
thumbnail and metadata share the stem videos/YYYY/MM/DD/<id>, previews live under previews/YYYY/MM/DD/<id>/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from m4v_core import ApiSettings, JobRecord
from service.errors import StorageUnavailableError
from service.presign import s3_client

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
RETRY_AFTER_S = 30


@dataclass(frozen=True)
class StoredObject:
    body: Iterator[bytes]
    length: int | None
    content_type: str


def _unavailable(what: str, exc: Exception) -> StorageUnavailableError:
    """503 for the client without botocore's text, which names the S3 endpoint (an internal address, issue
    16); the operator's log keeps it."""
    log.warning("%s: %s", what, exc)
    return StorageUnavailableError(f"{what}: object storage is unavailable; retry later", RETRY_AFTER_S)


class ObjectStore:
    def __init__(self, settings: ApiSettings):
        self.bucket = settings.s3_bucket
        # the address the API reaches (workers upload there too)
        self.client: Any = s3_client(settings, settings.s3_endpoint)

    def open(self, key: str) -> StoredObject:
        """The object's bytes as chunks; 503 storage_unavailable if S3 cannot give it."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("cannot read the stored object", exc) from exc
        body = obj["Body"]
        return StoredObject(
            body=body.iter_chunks(CHUNK_BYTES),
            length=obj.get("ContentLength"),
            content_type=obj.get("ContentType") or "application/octet-stream",
        )

    def delete_job_objects(self, job: JobRecord) -> int:
        """Delete the job's video, thumbnail, metadata and previews; the number of objects deleted."""
        keys = [f"{_stem(job)}.mp4", f"{_stem(job)}.jpg", f"{_stem(job)}.json"]
        if job.result is not None:
            keys += [job.result.video_key] + ([job.result.thumbnail_key] if job.result.thumbnail_key else [])
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"previews/{job.created_at:%Y/%m/%d}/{job.id}/"
            )
            keys += [o["Key"] for page in pages for o in page.get("Contents", [])]
            unique = sorted(set(keys))
            for start in range(0, len(unique), 1000):
                chunk = [{"Key": k} for k in unique[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("cannot delete the stored objects", exc) from exc
        log.info("job objects deleted", extra={"job_id": job.id, "objects": len(unique)})
        return len(unique)


def _stem(job: JobRecord) -> str:
    return f"videos/{job.created_at:%Y/%m/%d}/{job.id}"
