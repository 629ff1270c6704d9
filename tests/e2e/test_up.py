"""`m4v up` as a user runs it: everything comes up, the worker reports its model, a signal stops it all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.process_helpers import alive, pids_of


def _wait_for_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Read stderr lines until `m4v up` prints its URL."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        match = re.search(r"m4v is up at (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"m4v up did not come up (exit {proc.poll()}):\n{''.join(seen)[-4000:]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_serves_a_loaded_worker_and_a_signal_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("M4V_")}
    argv = [sys.executable, "-m", "m4v_cli", "up", "--port", "0", "--home", str(home)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        url = _wait_for_url(proc, timeout_s=240)
        time.sleep(2.0)  # `m4v up` exits 1 within a second if the API or the worker dies after start
        assert proc.poll() is None, f"m4v up exited {proc.returncode}: {proc.stderr.read()[-4000:]}"  # type: ignore[union-attr]
        workers = httpx.get(f"{url}/workers", timeout=10).json()
        assert workers["ready"] == 1
        assert workers["workers"][0]["preset"] == "tiny"
        started = [pid for pid in pids_of(home) if alive(pid)]
        assert started, "expected redis-server and weed working in the state dir"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [pid for pid in started if alive(pid)] == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)
