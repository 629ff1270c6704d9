"""Readiness/startup probe of a worker container: exit 0 once its heartbeat says the model is loaded.

The worker writes {prefix}:worker:{name} (worker/heartbeat.py) only after its pipeline is loaded, and
deletes it when it stops, so the key is the one signal that opens exactly when jobs can be taken.
WorkerSettings come from the same M4V_* environment as the worker. Without M4V_WORKER_NAME the worker's
default name is "<hostname>:<pid>", so any heartbeat of this host counts.

    python /opt/m4v/probes/worker_ready.py      # exit 0 ready, 1 not ready (reason on stderr)
"""

from __future__ import annotations

import logging
import socket
import sys

import redis

from m4v_core import WorkerSettings
from m4v_core.heartbeat import parse_heartbeat
from m4v_core.keys import Keys

log = logging.getLogger("m4v.probe.ready")


def heartbeat_keys(client: redis.Redis, settings: WorkerSettings) -> list[str]:
    keys = Keys(settings.key_prefix)
    if settings.worker_name:
        return [keys.worker(settings.worker_name)]
    found = client.scan_iter(match=keys.worker(f"{socket.gethostname()}:*"), count=1000)
    return [k.decode() if isinstance(k, bytes) else k for k in found]


def is_ready(settings: WorkerSettings, timeout_s: float = 2.0) -> tuple[bool, str]:
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        for key in heartbeat_keys(client, settings):
            beat = parse_heartbeat(key, client.get(key))  # type: ignore[arg-type]
            if beat is not None and beat.model_loaded:
                return True, f"heartbeat {key!r} has model_loaded"
    except redis.RedisError as exc:
        return False, f"redis: {exc}"
    finally:
        client.close()
    return False, "no heartbeat with model_loaded for this worker yet"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    ready, reason = is_ready(WorkerSettings())  # type: ignore[call-arg]
    (log.info if ready else log.warning)(reason)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
