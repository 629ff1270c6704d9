"""Faults against real worker processes: SIGTERM drains at a step boundary; S3 stopped, then restarted."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue

from m4v_cli.seaweed import SeaweedS3, free_port
from m4v_core import TERMINAL_STATUSES, JobStore
from tests.conftest import s3_client
from tests.e2e.worker_processes import WorkerSlot, worker_env
from tests.worker.jobs_helpers import make_job, submit


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigterm_requeues_the_running_job_at_a_step_boundary_and_exits(
    redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, prefix=key_prefix)
    queue = Queue(store.keys.queue("normal"), connection=client)
    job = make_job(num_frames=17, first_frame_steps=[4, 4, 4], later_frame_steps=[3, 3, 3])
    submit(store, queue, job)
    slot = WorkerSlot(
        0, worker_env(redis_url, key_prefix, s3_server, s3_bucket, tmp_path / "spool"), tmp_path
    )
    slot.start()
    try:
        wait_until(lambda: store.get(job.id).progress.percent > 0, 60, "the job to make progress")
        assert slot.proc is not None
        slot.proc.send_signal(signal.SIGTERM)  # one SIGTERM, as docker/worker_drain.py sends
        # a hang guard, not a time claim: the drain finishes the step, uploads the partial video, requeues and
        # flushes the spool; on a 2-core box shared by three test runs that took just over 30 s once
        assert slot.proc.wait(timeout=120) == 0
        rec = store.get(job.id)
        assert (rec.status, rec.attempts, rec.worker) == ("queued", 1, None)  # the drained attempt counts
        assert queue.job_ids == [job.id]
        assert any(e[2].get("reason", "").startswith("worker stopping") for e in store.read_events(job.id))

        slot.start()  # the next worker runs it to the end
        wait_until(lambda: store.get(job.id).status in TERMINAL_STATUSES, 120, "the requeued job to finish")
        rec = store.get(job.id)
        assert rec.status == "succeeded" and rec.attempts == 2
    finally:
        slot.stop()


@pytest.mark.slow
def test_s3_stopped_during_uploads_then_restarted_loses_no_video(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    s3 = SeaweedS3(data_dir=tmp_path / "weed").start()  # fixed s3_port: a restart keeps the endpoint
    bucket = "m4v-faults"
    s3.ensure_bucket(bucket)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, prefix=key_prefix)
    queue = Queue(store.keys.queue("normal"), connection=client)
    env = worker_env(redis_url, key_prefix, s3, bucket, tmp_path / "spool")
    env.update({"M4V_S3_UPLOAD_ATTEMPTS": "2", "M4V_S3_RETRY_BASE_S": "0.1", "M4V_SPOOL_RETRY_S": "1"})
    slot = WorkerSlot(0, env, tmp_path)
    slot.start()
    ids: list[str] = []
    try:
        for _ in range(6):
            job = make_job(num_frames=1, first_frame_steps=[1, 1, 1], later_frame_steps=[1, 1, 1])
            submit(store, queue, job)
            ids.append(job.id)
        wait_until(lambda: store.get(ids[0]).status == "succeeded", 60, "the first job")
        s3.stop()
        wait_until(
            lambda: any(
                r is not None and r.error is not None and r.error.type == "upload_failed"
                for r in store.get_many(ids)
            ),
            60,
            "an upload_failed job while S3 is down",
        )
        assert list((tmp_path / "spool").iterdir()), "the failed job's video was not spooled"
        s3.start()
        wait_until(
            lambda: all(r is not None and r.result is not None for r in store.get_many(ids)),
            90,
            "every job to have its video once S3 is back (spool re-upload)",
        )
    finally:
        slot.stop()
    keys = {
        obj["Key"]
        for page in s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    }
    s3.stop()
    for rec in store.get_many(ids):
        assert rec is not None and rec.result is not None and rec.result.video_key in keys
        # a terminal status never changes: an upload_failed job keeps it and gains its video as a new fact
        assert rec.status == "succeeded" or (rec.error is not None and rec.error.type == "upload_failed")
    assert [p for p in (tmp_path / "spool").iterdir() if not p.name.startswith(".")] == []


def start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """A persistent (AOF, fsync always) redis-server of this test's own, so a restart keeps every job."""
    data_dir.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), 20, "redis-server to start")
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.slow
def test_redis_restart_mid_run_gives_503s_and_loses_no_accepted_job(
    key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from m4v_core import Settings
    from service.app import create_app

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path / "redis")
    slot = WorkerSlot(0, worker_env(url, key_prefix, s3_server, s3_bucket, tmp_path / "spool"), tmp_path)
    api = TestClient(
        create_app(
            Settings(
                redis_url=url,
                key_prefix=key_prefix,
                s3_endpoint=s3_server.endpoint,
                s3_bucket=s3_bucket,
                s3_access_key=s3_server.access_key,
                s3_secret_key=s3_server.secret_key,
            )
        )
    )
    body = {
        "prompt": "a ball",
        "num_frames": 1,
        "first_frame_steps": [1, 1, 1],
        "later_frame_steps": [1, 1, 1],
    }
    ids: list[str] = []
    try:
        slot.start()
        with api:
            for _ in range(6):
                resp = api.post("/generate", json=body)
                assert resp.status_code in (200, 201, 202), resp.text
                ids.append(resp.json()["id"])
            store = JobStore(redis.Redis.from_url(url), prefix=key_prefix)
            wait_until(lambda: store.get(ids[0]).status != "queued", 60, "the worker to start a job")
            server.terminate()
            server.wait(timeout=10)
            down = api.post("/generate", json=body)
            assert down.status_code == 503 and "Retry-After" in down.headers, down.text
            time.sleep(2)
            server = start_redis(port, tmp_path / "redis")
            wait_until(
                lambda: all(r is not None and r.status in TERMINAL_STATUSES for r in store.get_many(ids)),
                120,
                "every accepted job to finish after the Redis restart",
            )
            statuses = [r.status for r in store.get_many(ids) if r is not None]
            assert statuses == ["succeeded"] * len(ids)
            assert api.post("/generate", json=body).status_code in (200, 201, 202)
    finally:
        slot.stop()
        server.terminate()
        server.wait(timeout=10)
