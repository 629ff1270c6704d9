"""worker/shutdown.py flush_spool: what a draining worker uploads from its spool before it exits, and that
the drain deadline bounds it. Real Redis and SeaweedFS; S3 that refuses (nothing listens) or hangs (a
socket that never answers). The whole drain with a real worker process: tests/e2e/test_drain_spool.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobError, JobStore
from worker.shutdown import flush_spool
from worker.spool import Spool, SpooledObject
from worker.storage import Storage

from .jobs_helpers import make_job, result_for

DATA = b"\x00mp4" * 64


def spool_failed_jobs(store: JobStore, spool: Spool, n: int) -> list[str]:
    """n jobs failed with upload_failed, each with its video in the spool."""
    ids = []
    for _ in range(n):
        job = make_job()
        job.status, job.error = "failed", JobError(type="upload_failed", message="S3 down")
        store.create(job)
        key = f"videos/{job.id}.mp4"
        spool.keep(job.id, [SpooledObject(key, DATA, "video/mp4")], result_for(key, DATA))
        ids.append(job.id)
    return ids


def storage_at(endpoint: str, bucket: str = "b", server: SeaweedS3 | None = None) -> Storage:
    keys = (server.access_key, server.secret_key) if server else ("a", "s")
    return Storage(bucket, endpoint_url=endpoint, access_key=keys[0], secret_key=keys[1], upload_attempts=1)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections (the kernel's backlog) and never answers: an S3 behind a dead route."""
    server = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_the_flush_uploads_every_entry_and_the_records_gain_their_videos(
    tmp_path: Path, store: JobStore, s3_server: SeaweedS3, s3_bucket: str
) -> None:
    spool = Spool(tmp_path / "spool")
    ids = spool_failed_jobs(store, spool, 3)
    live = storage_at(s3_server.endpoint, s3_bucket, s3_server)
    out = flush_spool(spool, live, store, budget_s=60, clock=lambda: 0.0)
    assert sorted(out.values()) == ["failed"] * 3 and spool.pending() == []
    for job_id in ids:
        assert live.download(f"videos/{job_id}.mp4") == DATA
        rec = store.get(job_id)
        assert rec.status == "failed" and rec.result is not None


def test_the_flush_starts_no_upload_past_its_deadline(tmp_path: Path, store: JobStore) -> None:
    """S3 refuses; the injected clock passes the deadline after the first entry: the rest wait for a later
    spool pass (another worker's, on a shared claim)."""
    spool = Spool(tmp_path / "spool")
    spool_failed_jobs(store, spool, 3)
    ticks = iter([0.0, 0.0, 5.0, 10.0, 15.0])  # deadline 0 + 4: the first entry is tried, then time is up
    out = flush_spool(spool, storage_at("http://127.0.0.1:9"), store, budget_s=4, clock=lambda: next(ticks))
    assert len(out) == 1 and next(iter(out.values())).startswith("error:")
    assert len(spool.pending()) == 3


def test_an_upload_hanging_past_the_deadline_does_not_hold_the_exit(
    tmp_path: Path, store: JobStore, silent_endpoint: str
) -> None:
    """botocore would wait its 30 s read timeout (times its retries); the flush returns at its 1 s budget and
    the entry stays in the spool."""
    spool = Spool(tmp_path / "spool")
    spool_failed_jobs(store, spool, 1)
    out = flush_spool(spool, storage_at(silent_endpoint), store, budget_s=1)
    assert out == {} and len(spool.pending()) == 1
