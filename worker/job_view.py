"""The worker's renderings of a job for clients: m4v_core.jobview.render_job with the video and thumbnail
presigned by the worker's storage (the API presigns its own on every read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m4v_core.jobview import public_result, render_job_json
from m4v_core.models import JobRecord

if TYPE_CHECKING:
    from worker.storage import Storage


def client_view(job: JobRecord, storage: Storage | None = None, expiry_s: int = 3600) -> dict[str, Any]:
    """The job as GET /jobs/{id} shows it, JSON-ready, with fresh URLs when a storage is given."""
    if job.result is None or storage is None:
        return render_job_json(job)
    result = public_result(job.result, lambda key: storage.presign_get(key, expiry_s), expiry_s)
    return render_job_json(job, result=result)
