"""Real worker processes (`python -m worker.main`, tiny preset, CPU) for the chaos and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from m4v_cli.seaweed import SeaweedS3
from m4v_core import failpoints

ROOT = Path(__file__).resolve().parents[2]


def worker_env(redis_url: str, key_prefix: str, s3: SeaweedS3, bucket: str, spool: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "M4V_REDIS_URL": redis_url,
            "M4V_KEY_PREFIX": key_prefix,
            "M4V_S3_ENDPOINT": s3.endpoint,
            "M4V_S3_BUCKET": bucket,
            "M4V_S3_ACCESS_KEY": s3.access_key,
            "M4V_S3_SECRET_KEY": s3.secret_key,
            "M4V_PRESET": "tiny",
            "M4V_DEVICE": "cpu",
            "M4V_TORCH_THREADS": "1",
            "M4V_WORKER_METRICS_PORT": "0",
            "M4V_HEARTBEAT_S": "0.5",
            "M4V_JOB_LEASE_S": "2",
            "M4V_REAPER_INTERVAL_S": "0.5",
            "M4V_MAX_ATTEMPTS": "3",
            "M4V_SPOOL_DIR": str(spool),
            "M4V_LOG_LEVEL": "WARNING",
        }
    )
    return env


class WorkerSlot:
    """One worker process slot; kill() SIGKILLs it, start() brings up a fresh process, armed with the given
    failpoints (m4v_core/failpoints.py) if any; fired() names the one its process died at."""

    def __init__(self, index: int, env: dict[str, str], logs: Path) -> None:
        self.index = index
        self.env = env
        self.logs = logs
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.logs / f"worker-{self.index}-{self.starts}.log"

    def start(self, armed: str = "") -> None:
        self.starts += 1
        # The same name on every restart, like a container restarted inside its pod (the chart sets the pod
        # name): the new process must come up although the killed one never deregistered from rq.
        env = dict(self.env, M4V_WORKER_NAME=f"slot-{self.index}")
        env.pop(failpoints.ENV, None)
        if armed:
            env[failpoints.ENV] = armed
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.main"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def fired(self) -> str | None:
        """The failpoint whose marker the current process wrote (its log holds stdout and stderr), or None."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith(failpoints.MARKER):
                return line.removeprefix(failpoints.MARKER).split()[0]
        return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
