"""Chaos: 100 tiny jobs over 2 real worker processes (`python -m worker.main`, tiny preset, CPU, 1 thread)
with 5 random SIGKILLs, each killed worker restarted. Every job must end succeeded, or failed with a reason
(none left queued/running), and every succeeded job has exactly one video object in S3.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from rq import Queue

from m4v_cli.seaweed import SeaweedS3
from m4v_core import TERMINAL_STATUSES, JobStore
from tests.conftest import s3_client
from tests.e2e.worker_processes import WorkerSlot, worker_env
from tests.worker.jobs_helpers import make_job, submit

ROOT = Path(__file__).resolve().parents[2]
JOBS = 100
KILLS = 5
# A safety net, not a speed requirement: 100 tiny jobs on 2 single-thread workers take ~2 min on an idle
# 2-core box, and well over 4 min when other test runs share it (pytest's own timeout is 600 s).
DEADLINE_S = 480
pytestmark = pytest.mark.slow


def test_random_sigkills_lose_no_job_and_duplicate_no_video(
    redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, prefix=key_prefix)
    queue = Queue(store.keys.queue("normal"), connection=client)
    ids = []
    for _ in range(JOBS):
        job = make_job(
            num_frames=rng.choice([1, 5]), first_frame_steps=[1, 1, 1], later_frame_steps=[1, 1, 1]
        )
        submit(store, queue, job)
        ids.append(job.id)

    env = worker_env(redis_url, key_prefix, s3_server, s3_bucket, tmp_path / "spool")
    slots = [WorkerSlot(i, env, tmp_path) for i in range(2)]
    for slot in slots:
        slot.start()
    began = time.monotonic()
    kills = 0
    try:
        # Kill by progress, not by the clock, so all kills land mid-run however fast the machine is.
        kill_at = sorted(rng.sample(range(5, JOBS - 20), KILLS))
        while time.monotonic() - began < DEADLINE_S:
            records = store.get_many(ids)
            done = sum(1 for r in records if r is not None and r.status in TERMINAL_STATUSES)
            if done == JOBS:
                break
            if kills < KILLS and done >= kill_at[kills]:
                victim = rng.choice(slots)
                victim.kill()
                victim.start()
                kills += 1
            time.sleep(0.2)
        # Every restarted worker must still be serving (it re-registered under its old name).
        exited = {
            slot.index: slot.proc.poll()
            for slot in slots
            if slot.proc is not None and slot.proc.poll() is not None
        }
    finally:
        for slot in slots:
            slot.stop()
    elapsed = time.monotonic() - began

    records = store.get_many(ids)
    statuses = Counter(r.status if r is not None else "missing" for r in records)
    assert kills == KILLS
    assert not exited, f"worker slots exited on their own (slot: exit code): {exited}"
    assert set(statuses) <= {"succeeded", "failed"}, f"{statuses} after {elapsed:.0f}s"
    for r in records:
        assert r is not None
        if r.status == "failed":
            assert r.error is not None and r.error.type and r.error.message
    objects = [
        obj["Key"]
        for page in s3_client(s3_server).get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for obj in page.get("Contents", [])
    ]
    videos = Counter(Path(k).stem for k in objects if k.endswith(".mp4"))
    for r in records:
        assert r is not None
        if r.status == "succeeded":
            assert r.result is not None and videos[r.id] == 1 and r.result.video_key in objects
    retried = sum(1 for r in records if r is not None and r.attempts > 1)
    print(f"chaos: {dict(statuses)} in {elapsed:.0f}s, {kills} kills, {retried} jobs ran more than once")
