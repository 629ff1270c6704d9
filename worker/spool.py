"""Local spool for finished videos S3 would not take: nothing encoded is thrown away.

When the upload of a finished job fails after its retries, the job fails with error.type upload_failed and
its objects (MP4, thumbnail, metadata) are written here with the result they describe:

  {spool_dir}/{job_id}.{attempt_id}/manifest.json   {"job_id", "attempt_id", "objects": [{"key", "file",
                                                   "content_type"}], "result"}
  {spool_dir}/{job_id}.{attempt_id}/0.bin, 1.bin, ...   (one entry per run: runs never replace each other's)

Spool.retry_all() (the worker's Recovery thread, every spool_retry_s; `m4v reupload` by hand) uploads them
once the record is finished, and removes the directory. The record's terminal status never changes: the late
upload is a new fact on it (its `result`, the video's keys, set if it has none and the spooled run is the
attempt that finished the job) with a `result` event, and no second terminal webhook.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from m4v_core import JobRecord, JobResult, JobStore
from m4v_core.store import JobNotFoundError
from worker.job_view import client_view

if TYPE_CHECKING:
    from m4v_core import WorkerSettings
    from m4v_core.webhooks import WebhookSender
    from worker.storage import Storage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SpooledObject:
    key: str
    data: bytes
    content_type: str


def default_spool_dir(settings: WorkerSettings) -> Path:
    return Path(settings.spool_dir) if settings.spool_dir else Path(tempfile.gettempdir()) / "m4v-spool"


@dataclass
class Spool:
    root: Path
    presign_expiry_s: int = 3600  # of the URLs in the `done` event and webhook once the upload succeeds

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Spool:
        return cls(default_spool_dir(settings), settings.presign_expiry_s)

    def keep(
        self, job_id: str, objects: list[SpooledObject], result: JobResult, attempt_id: str | None = None
    ) -> Path:
        """Write the objects and manifest atomically (temp dir, then rename); attempt_id: the run's."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / (f"{job_id}.{attempt_id}" if attempt_id else job_id)
        tmp = Path(tempfile.mkdtemp(prefix=f".{job_id}-", dir=self.root))
        entries = []
        for i, obj in enumerate(objects):
            (tmp / f"{i}.bin").write_bytes(obj.data)
            entries.append({"key": obj.key, "file": f"{i}.bin", "content_type": obj.content_type})
        manifest = {
            "job_id": job_id,
            "attempt_id": attempt_id,
            "objects": entries,
            "result": result.model_dump(mode="json"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        log.warning("upload failed; video kept in spool", extra={"job_id": job_id, "path": str(final)})
        return final

    def pending(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def reupload(
        self, entry: str, storage: Storage, store: JobStore, webhooks: WebhookSender | None = None
    ) -> str:
        """Upload one spooled job once its record is finished; returns the record's status ("missing" if it
        expired, "running"/"queued" while another run still owns it: the entry is kept for later).

        Raises StorageError if S3 still refuses (the spool entry is kept). ``webhooks`` is unused: a late
        upload sends no webhook (kept for callers)."""
        folder = self.root / entry
        manifest = json.loads((folder / MANIFEST).read_text())
        job_id = manifest["job_id"]
        try:
            status = store.get(job_id).status
        except JobNotFoundError:
            status = "missing"
        if status in ("queued", "running"):
            return status
        if status != "missing":
            for entry in manifest["objects"]:
                storage.upload(entry["key"], (folder / entry["file"]).read_bytes(), entry["content_type"])
            result = JobResult.model_validate(manifest["result"])
            status = self._attach(job_id, manifest.get("attempt_id"), result, store, storage)
        shutil.rmtree(folder)
        log.info("spooled video uploaded", extra={"job_id": job_id, "status": status})
        return status

    def retry_all(
        self, storage: Storage, store: JobStore, webhooks: WebhookSender | None = None
    ) -> dict[str, str]:
        """Try every spool entry once; entry (the job id, or "<job id>.<attempt id>") -> status, or
        "error: ..." for those still failing."""
        from worker.storage import StorageError

        out: dict[str, str] = {}
        for entry in self.pending():
            try:
                out[entry] = self.reupload(entry, storage, store, webhooks)
            except StorageError as exc:
                out[entry] = f"error: {exc}"
        return out

    def _attach(
        self, job_id: str, attempt_id: str | None, result: JobResult, store: JobStore, storage: Storage
    ) -> str:
        """The uploaded video becomes the record's result if the record is finished, has none, and was
        finished by the spooled run (or by a run from before attempt ids); its status stays what it is."""
        now = datetime.now(UTC)

        def change(job: JobRecord) -> bool:
            if not job.finished or job.result is not None:
                return False
            if attempt_id is not None and job.attempt_id != attempt_id:
                return False
            job.result = result
            return True

        def also(pipe: redis.client.Pipeline, job: JobRecord) -> None:
            view = client_view(job, storage, self.presign_expiry_s)
            store.queue_event(pipe, job_id, "result", {**view, "uploaded_at": now.isoformat()})

        try:
            return store.update(job_id, change, also=also).status
        except JobNotFoundError:
            return "missing"
