"""preStop hook of a worker container: start rq's warm shutdown and block until the worker has exited.

SIGTERM makes the rq worker stop dequeuing, finish the current sampler step and requeue the job (or finish it
if nearly done), then exit (worker/rqworker.py, worker/shutdown.py). A second SIGTERM is rq's cold shutdown,
which abandons the job (the reaper requeues it). The kubelet sends its own SIGTERM only after preStop returns,
so this hook sends the first one itself and does not return while the worker lives: the kubelet's signal then
finds nothing to cut. terminationGracePeriodSeconds bounds the whole wait.

    python /opt/m4v/probes/worker_drain.py [--pid 1] [--timeout-s N]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

log = logging.getLogger("m4v.probe.drain")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return False


def drain(pid: int, timeout_s: float, poll_s: float = 0.5) -> bool:
    """SIGTERM once, then wait; True when the process has exited within timeout_s."""
    if not alive(pid):
        return True
    os.kill(pid, signal.SIGTERM)
    log.info("sent SIGTERM (rq warm shutdown) to pid %d; waiting up to %.0f s", pid, timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            log.info("worker pid %d exited", pid)
            return True
        time.sleep(poll_s)
    log.warning("worker pid %d still running after %.0f s", pid, timeout_s)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, default=1, help="worker process (PID 1 in the container)")
    parser.add_argument("--timeout-s", type=float, default=24 * 3600, help="give up after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return 0 if drain(args.pid, args.timeout_s) else 1


if __name__ == "__main__":
    sys.exit(main())
