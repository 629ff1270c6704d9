"""A real server for client tests: the API under uvicorn and one tiny CPU worker, each its own process, on the
test Redis (M4V_TEST_REDIS_URL) and the session's SeaweedFS, with three API keys: alice and bob, which every
test may use, and carol, kept for the one test that lists everything a key has."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from m4v_cli.seaweed import SeaweedS3, free_port
from m4v_core.keys import Keys
from service.auth import key_entry, new_api_key
from tests.e2e.worker_processes import ROOT, WorkerSlot, worker_env

# Jobs the tests submit: the tiny preset's 128x128, 9 frames, one step per pyramid stage.
FAST_JOB = {"num_frames": 9, "first_frame_steps": [1, 1, 1], "later_frame_steps": [1, 1, 1]}
V1_FAST_JOB = {"num_frames": 9, "num_inference_steps": 3}  # the same through /v1/videos
READY_TIMEOUT_S = 300.0


@dataclass
class LiveStack:
    url: str
    alice: str  # API keys
    bob: str
    carol: str
    key_prefix: str
    api: subprocess.Popen[bytes]
    worker: WorkerSlot
    logs: Path

    def stop(self) -> None:
        self.worker.stop()
        if self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("*.log")))


def start_live_stack(redis_url: str, s3: SeaweedS3, bucket: str, tmp: Path) -> LiveStack:
    prefix = f"m4vtest{uuid.uuid4().hex[:10]}"
    alice, bob, carol = new_api_key(), new_api_key(), new_api_key()
    env = worker_env(redis_url, prefix, s3, bucket, tmp / "spool")
    env.update(
        {
            "M4V_AUTH_MODE": "keys",
            "M4V_API_KEYS": json.dumps(
                [key_entry("alice", alice), key_entry("bob", bob), key_entry("carol", carol)]
            ),
            "M4V_PLAYGROUND": "false",
            "M4V_FLEET_VIEW_TTL_S": "0",
        }
    )
    port = free_port()
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(port)]
    with (logs / "api.log").open("wb") as out:
        api = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = WorkerSlot(0, env, logs)
    worker.start()
    stack = LiveStack(f"http://127.0.0.1:{port}", alice, bob, carol, prefix, api, worker, logs)
    try:
        _wait_ready(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def _wait_ready(stack: LiveStack) -> None:
    """Until the API answers and the worker's heartbeat says its model is loaded."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {stack.alice}"}
    while time.monotonic() < deadline:
        if stack.api.poll() is not None or (stack.worker.proc and stack.worker.proc.poll() is not None):
            raise RuntimeError(f"a live-stack process exited:\n{stack.log_tail()}")
        try:
            if httpx.get(f"{stack.url}/workers", headers=headers, timeout=5).json().get("ready") == 1:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"live stack not ready after {READY_TIMEOUT_S:.0f}s:\n{stack.log_tail()}")


def drop_keys(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for pattern in Keys(prefix).everything():
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
