"""Chaos: 100 tiny jobs over 2 real worker processes (`python -m worker.main`, tiny preset, CPU, 1 thread)
with 5 random SIGKILLs, each killed worker restarted. Every job must end succeeded, or failed with a reason
(none left queued/running), and every succeeded job's stored video is the one its record describes (sha256)
with the frames it asked for.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections import Counter
from pathlib import Path

import av
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


def test_random_sigkills_lose_no_job_and_every_record_points_at_its_own_video(
    redis_url: str, key_prefix: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, prefix=key_prefix)
    queue = Queue(store.keys.queue("normal"), connection=client)
    ids, frames = [], []
    for _ in range(JOBS):
        job = make_job(
            num_frames=rng.choice([1, 5]), first_frame_steps=[1, 1, 1], later_frame_steps=[1, 1, 1]
        )
        submit(store, queue, job)
        ids.append(job.id)
        frames.append(job.spec.num_frames)

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
    # Each run of a job uploads to keys of its own attempt; the record names the winner's. Its object must be
    # the video the record describes (sha256) with the frames the request asked for. (Before attempt keys
    # this counted objects per job id, which could not fail: every run wrote the same key.)
    s3 = s3_client(s3_server)
    for r, n_frames in zip(records, frames, strict=True):
        assert r is not None
        if r.status == "succeeded":
            assert r.result is not None
            data = s3.get_object(Bucket=s3_bucket, Key=r.result.video_key)["Body"].read()
            assert hashlib.sha256(data).hexdigest() == r.result.sha256, r.id
            with av.open(io.BytesIO(data)) as container:
                assert sum(1 for _ in container.decode(video=0)) == n_frames == r.result.frames, r.id
    retried = sum(1 for r in records if r is not None and r.attempts > 1)
    print(f"chaos: {dict(statuses)} in {elapsed:.0f}s, {kills} kills, {retried} jobs ran more than once")
