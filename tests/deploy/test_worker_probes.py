"""The worker container's probe scripts (docker/worker_ready.py, docker/worker_drain.py) against real
Redis heartbeats (worker/heartbeat.py) and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from m4v_core.keys import Keys
from worker.heartbeat import HeartbeatWriter, WorkerState

ROOT = Path(__file__).resolve().parents[2]
READY = ROOT / "docker" / "worker_ready.py"
DRAIN = ROOT / "docker" / "worker_drain.py"


def run_ready(redis_url: str, key_prefix: str, worker_name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M4V_")}
    env |= {"M4V_REDIS_URL": redis_url, "M4V_KEY_PREFIX": key_prefix, "M4V_WORKER_NAME": worker_name}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(READY)], env=env, capture_output=True, text=True, timeout=30)


def test_ready_probe_fails_before_the_heartbeat_and_passes_once_the_model_is_loaded(
    redis_url: str, key_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    name = "pod-abc"
    assert run_ready(redis_url, key_prefix, name).returncode == 1
    state = WorkerState(name=name, preset="tiny", device="cpu", loaded_at=datetime.now(UTC))
    beat = HeartbeatWriter(client, Keys(key_prefix), state, period_s=5.0)
    beat.beat()  # written, but model_loaded still False
    assert run_ready(redis_url, key_prefix, name).returncode == 1
    state.model_loaded = True
    beat.beat()
    ok = run_ready(redis_url, key_prefix, name)
    assert ok.returncode == 0, ok.stderr
    assert run_ready(redis_url, key_prefix, "another-pod").returncode == 1
    beat.stop()  # a stopping worker removes its key: not ready any more
    assert run_ready(redis_url, key_prefix, name).returncode == 1


def test_ready_probe_reports_unreachable_redis_as_not_ready(key_prefix: str) -> None:
    result = run_ready("redis://127.0.0.1:1/0", key_prefix, "pod-abc")
    assert result.returncode == 1
    assert "redis" in result.stderr.lower()


GRACEFUL = """
import signal, sys, time
def stop(signum, frame):
    time.sleep(0.5)  # finishing the current job
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
while True:
    time.sleep(0.05)
"""


def test_drain_sends_one_sigterm_and_waits_until_the_worker_exits() -> None:
    worker = subprocess.Popen([sys.executable, "-c", GRACEFUL], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "up"
    reaper = _reap_in_background(worker)
    start = time.monotonic()
    drain = subprocess.run(
        [sys.executable, str(DRAIN), "--pid", str(worker.pid), "--timeout-s", "20"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert drain.returncode == 0, drain.stderr
    assert time.monotonic() - start >= 0.5  # it waited for the job to finish
    reaper.join(5)
    assert worker.returncode == 0  # exited by its own handler: no second signal cut it


def test_drain_gives_up_after_its_timeout_when_the_worker_keeps_running() -> None:
    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    stubborn = subprocess.Popen([sys.executable, "-c", ignore_term])
    try:
        time.sleep(0.3)
        drain = subprocess.run(
            [sys.executable, str(DRAIN), "--pid", str(stubborn.pid), "--timeout-s", "1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert drain.returncode == 1
        assert stubborn.poll() is None
    finally:
        os.kill(stubborn.pid, signal.SIGKILL)
        stubborn.wait()


def _reap_in_background(proc: subprocess.Popen[str]):  # type: ignore[no-untyped-def]
    """Wait on the child from a thread, as a container runtime would reap PID 1 (no zombie left behind)."""
    import threading

    thread = threading.Thread(target=proc.wait, daemon=True)
    thread.start()
    return thread
