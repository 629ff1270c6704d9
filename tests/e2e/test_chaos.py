"""Chaos: 100 tiny jobs over 2 real worker processes (`python -m worker.main`, tiny preset, CPU, 1 thread)
with 5 random SIGKILLs, each killed worker restarted, and one worker paused (SIGSTOP) mid-job until the reaper
gave its job to another run, then resumed. Every job must end succeeded, or failed with a reason (none left
queued/running), with exactly one `done` event; every succeeded job's stored video is the one its record
describes (sha256) with the frames it asked for; and each job's terminal webhook reached a real receiver,
verified, with one stable webhook-id however many runs and deliveries it took.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import pytest
import redis
from rq import Queue
from standardwebhooks import Webhook

from m4v_cli.seaweed import SeaweedS3
from m4v_core import TERMINAL_STATUSES, JobRecord, JobStore
from tests.conftest import s3_client
from tests.e2e.worker_processes import WorkerSlot, worker_env
from tests.webhook_receiver import Receiver
from tests.worker.jobs_helpers import SECRET, make_job, submit

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
    receiver = Receiver()
    ids, frames = [], []
    for _ in range(JOBS):
        job = make_job(
            webhook_url=receiver.url,
            events=["completed", "failed"],
            num_frames=rng.choice([1, 5]),
            first_frame_steps=[1, 1, 1],
            later_frame_steps=[1, 1, 1],
        )
        submit(store, queue, job)
        ids.append(job.id)
        frames.append(job.spec.num_frames)

    env = worker_env(redis_url, key_prefix, s3_server, s3_bucket, tmp_path / "spool")
    env.update(
        {
            "M4V_WEBHOOK_SECRET": SECRET,
            "M4V_WEBHOOK_ALLOW_HOSTS": '["127.0.0.1"]',
            "M4V_WEBHOOK_RETRY_DELAYS_S": "[0.5, 0.5, 0.5]",
        }
    )
    slots = [WorkerSlot(i, env, tmp_path) for i in range(2)]
    for slot in slots:
        slot.start()
    began = time.monotonic()
    kills = 0
    superseded: list[str] = []  # jobs whose paused run the reaper gave away
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
            if not superseded and done >= JOBS // 2:
                superseded += pause_a_running_worker_past_its_lease(store, slots, records)
            time.sleep(0.2)
        # Every restarted worker must still be serving (it re-registered under its old name).
        exited = {
            slot.index: slot.proc.poll()
            for slot in slots
            if slot.proc is not None and slot.proc.poll() is not None
        }
        hooks = terminal_webhooks(receiver, store.get_many(ids))  # the live workers deliver them
    finally:
        for slot in slots:
            slot.stop()
        receiver.close()
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
    for r in records:
        assert r is not None
        assert [typ for _, typ, _ in store.read_events(r.id, count=10_000)].count("done") == 1, r.id
    assert superseded, "the paused worker's job was never given to another run"
    for r in records:  # one terminal webhook per job, verified; retries and re-runs keep its one id
        assert r is not None
        event = "completed" if r.status == "succeeded" else "failed"
        assert hooks.get(r.id) == {(f"msg_{r.id}_{event}", f"job.{event}")}, r.id
    retried = sum(1 for r in records if r is not None and r.attempts > 1)
    print(f"chaos: {dict(statuses)} in {elapsed:.0f}s, {kills} kills, {retried} jobs ran more than once")


def pause_a_running_worker_past_its_lease(
    store: JobStore, slots: list[WorkerSlot], records: list[JobRecord | None]
) -> list[str]:
    """SIGSTOP the worker of a running job until the reaper has settled that run (the record left it: back
    to queued or run again under another attempt), then SIGCONT: the resumed run must write nothing more.
    [] if no job was running, or it finished before the pause took hold."""
    by_name = {f"slot-{slot.index}": slot for slot in slots}
    running = [r for r in records if r is not None and r.status == "running" and r.worker in by_name]
    if not running:
        return []
    job = running[0]
    slot = by_name[job.worker or ""]
    assert slot.proc is not None
    slot.proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 120  # the reaper lock a paused worker holds expires after 60 s
        while time.monotonic() < deadline:
            rec = store.get(job.id)
            if rec.status != "running" or rec.attempt_id != job.attempt_id:
                return [job.id] if rec.attempt_id != job.attempt_id else []
            time.sleep(0.1)
        raise AssertionError(f"job {job.id} of a paused worker was never settled")
    finally:
        slot.proc.send_signal(signal.SIGCONT)


def terminal_webhooks(receiver: Receiver, records: list[JobRecord | None]) -> dict[str, set[tuple[str, str]]]:
    """job id -> {(webhook-id, type)} of the verified terminal webhooks received, once every finished job has
    one (or after 60 s: the caller asserts what came)."""
    finished = {r.id for r in records if r is not None and r.status in TERMINAL_STATUSES}
    terminal: dict[str, set[tuple[str, str]]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        terminal = {}
        for headers, body in list(receiver.deliveries):
            payload = verified(headers, body)
            if payload["type"] in ("job.completed", "job.failed", "job.canceled"):
                seen = (headers["webhook-id"], payload["type"])
                terminal.setdefault(payload["data"]["id"], set()).add(seen)
        if set(terminal) >= finished:
            break
        time.sleep(0.2)
    return terminal


def verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The payload, once its signature checks out with the Standard Webhooks reference signer (its verify()
    also refuses timestamps older than 5 minutes, and this run is longer than that)."""
    at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(SECRET).sign(headers["webhook-id"], at, body.decode())
    assert expected in headers["webhook-signature"].split(" "), headers
    payload: dict[str, Any] = json.loads(body)
    return payload
