"""A draining worker uploads its spool before it exits (issue 15: "durable spool ... flushed on drain"):
a real `python -m worker.main`, real Redis and SeaweedFS. A pod's spool is an emptyDir unless the chart
mounts a shared claim, so a video left in it at exit is lost with the pod."""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue

from m4v_cli.seaweed import SeaweedS3
from m4v_core import JobStore
from tests.conftest import s3_client
from tests.e2e.worker_processes import WorkerSlot, worker_env
from tests.worker.jobs_helpers import make_job, submit


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def spooled(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) if spool.is_dir() else []


@pytest.mark.slow
def test_a_draining_worker_uploads_its_spool_before_it_exits(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Before: the worker exited 0 with the video still in its spool (the next spool pass was
    M4V_SPOOL_RETRY_S away, and a SIGTERMed pod does not get there)."""
    s3_server = SeaweedS3(data_dir=tmp_path / "weed").start()  # fixed s3_port: a restart keeps the endpoint
    bucket = f"m4v-late-{uuid.uuid4().hex[:10]}"
    s3_server.ensure_bucket(bucket)
    s3_server.stop()  # S3 down: every upload is refused
    spool = tmp_path / "spool"
    env = worker_env(redis_url, key_prefix, s3_server, bucket, spool)
    env |= {
        "M4V_S3_CREATE_BUCKET": "false",
        "M4V_S3_UPLOAD_ATTEMPTS": "1",
        "M4V_S3_RETRY_BASE_S": "0",
        "M4V_SPOOL_RETRY_S": "3600",  # after its first pass at start, the worker's next one is an hour away
        "M4V_DRAIN_SPOOL_FLUSH_S": "120",
    }
    store = JobStore(redis.Redis.from_url(redis_url), prefix=key_prefix)
    job = make_job(num_frames=1, first_frame_steps=[1, 1, 1], later_frame_steps=[1, 1, 1])
    submit(store, Queue(store.keys.queue("normal"), connection=store.r), job)
    slot = WorkerSlot(0, env, tmp_path)
    slot.start()
    try:
        wait_for(lambda: store.get(job.id).status == "failed", 120, "the job to fail its upload")
        rec = store.get(job.id)
        assert rec.error is not None and rec.error.type == "upload_failed" and rec.result is None
        assert len(spooled(spool)) == 1
        s3_server.start()  # S3 takes uploads again
        s3 = s3_client(s3_server)
        assert slot.proc is not None
        slot.proc.send_signal(signal.SIGTERM)  # one SIGTERM, as docker/worker_drain.py sends
        assert slot.proc.wait(timeout=180) == 0
        assert spooled(spool) == []
        rec = store.get(job.id)
        assert rec.status == "failed" and rec.result is not None  # the video is a new fact; the status stays
        stored = s3.get_object(Bucket=bucket, Key=rec.result.video_key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == rec.result.sha256
    finally:
        slot.stop()
        s3_server.stop()
