"""Local spool for finished videos S3 would not take: nothing encoded is thrown away.

When the upload of a finished job fails after its retries, the job fails with error.type upload_failed and
its objects (MP4, thumbnail, metadata) are written here with the result they describe:

  {spool_dir}/{job_id}/manifest.json   {"job_id", "objects": [{"key", "file", "content_type"}], "result"}
  {spool_dir}/{job_id}/0.bin, 1.bin, ...

Spool.retry_all() (the worker's Recovery thread, every spool_retry_s; `m4v reupload` by hand) uploads them,
moves the record failed(upload_failed) -> succeeded with the result, appends the "done" event, and removes
the directory.
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

    def keep(self, job_id: str, objects: list[SpooledObject], result: JobResult) -> Path:
        """Write the objects and manifest atomically (temp dir, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / job_id
        tmp = Path(tempfile.mkdtemp(prefix=f".{job_id}-", dir=self.root))
        entries = []
        for i, obj in enumerate(objects):
            (tmp / f"{i}.bin").write_bytes(obj.data)
            entries.append({"key": obj.key, "file": f"{i}.bin", "content_type": obj.content_type})
        manifest = {"job_id": job_id, "objects": entries, "result": result.model_dump(mode="json")}
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
        self, job_id: str, storage: Storage, store: JobStore, webhooks: WebhookSender | None = None
    ) -> str:
        """Upload one spooled job; returns the record's status afterwards ("missing" if it expired).

        Raises StorageError if S3 still refuses (the spool entry is kept)."""
        folder = self.root / job_id
        manifest = json.loads((folder / MANIFEST).read_text())
        for entry in manifest["objects"]:
            storage.upload(entry["key"], (folder / entry["file"]).read_bytes(), entry["content_type"])
        result = JobResult.model_validate(manifest["result"])
        status = self._mark_succeeded(job_id, result, store, webhooks, storage)
        shutil.rmtree(folder)
        log.info("spooled video uploaded", extra={"job_id": job_id, "status": status})
        return status

    def retry_all(
        self, storage: Storage, store: JobStore, webhooks: WebhookSender | None = None
    ) -> dict[str, str]:
        """Try every spooled job once; job id -> status, or "error: ..." for those still failing."""
        from worker.storage import StorageError

        out: dict[str, str] = {}
        for job_id in self.pending():
            try:
                out[job_id] = self.reupload(job_id, storage, store, webhooks)
            except StorageError as exc:
                out[job_id] = f"error: {exc}"
        return out

    def _mark_succeeded(
        self,
        job_id: str,
        result: JobResult,
        store: JobStore,
        webhooks: WebhookSender | None,
        storage: Storage,
    ) -> str:
        moved = False

        def change(job: JobRecord) -> bool:
            nonlocal moved
            if job.status != "failed" or job.error is None or job.error.type != "upload_failed":
                return False
            job.status = "succeeded"
            job.error = None
            job.result = result
            job.finished_at = datetime.now(UTC)
            job.progress = job.progress.model_copy(update={"percent": 100.0})
            moved = True
            return True

        try:
            job = store.update(job_id, change)
        except JobNotFoundError:
            return "missing"
        if moved:
            view = client_view(job, storage, self.presign_expiry_s)
            store.append_event(job_id, "done", view)
            if webhooks is not None:
                webhooks.submit(job, "completed", data=view)
        return job.status
