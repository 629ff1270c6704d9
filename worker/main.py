"""The worker process: settings -> device/dtype/TF32 -> pipeline loaded once -> heartbeat, metrics,
webhook thread -> rq SimpleWorker on {prefix}-high, -normal, -low (dequeued in that order).

Only this module decides CUDA, bf16 and TF32.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
import torch
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq import Queue

from m4v_core import JobStore, WorkerSettings
from m4v_core.logs import configure_logging
from m4v_core.redis_client import connection_options
from m4v_core.webhooks import WebhookDispatcher, WebhookSender
from worker.capacity import device_memory_bytes, gpu_count
from worker.context import JobContext
from worker.heartbeat import HeartbeatWriter, WorkerState
from worker.leases import ActiveLeases, LeaseRenewer
from worker.metrics import WorkerMetrics
from worker.pipeline import load_pipeline
from worker.recovery import INTERMEDIATE_STUCK_LEASES, Reaper, Recovery
from worker.rqworker import M4VWorker
from worker.shutdown import flush_spool
from worker.spool import Spool
from worker.storage import Storage

log = logging.getLogger(__name__)

REDIS_SOCKET_TIMEOUT_S = 10.0


def choose_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("M4V_DEVICE=cuda but no CUDA device is visible")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def choose_dtype(device: str) -> torch.dtype:
    """bf16 on CUDA (the checkpoint's training dtype), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device == "cuda" else torch.float32


def enable_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


@dataclass
class WorkerProcess:
    """The parts of one worker process; start()/stop() manage the background threads."""

    settings: WorkerSettings
    worker: M4VWorker
    context: JobContext
    heartbeat: HeartbeatWriter
    dispatcher: WebhookDispatcher
    recovery: Recovery | None = None
    renewer: LeaseRenewer | None = None

    def start(self) -> None:
        self.context.state.model_loaded = True
        self.context.metrics.ready.set(1)
        self.context.metrics.watch_heartbeat(lambda: self.heartbeat.last_beat_s)
        self.heartbeat.start()
        if self.renewer is not None:
            self.renewer.start()
        self.dispatcher.start()
        if self.recovery is not None:
            self.recovery.start()

    def stop(self) -> None:
        self.context.metrics.ready.set(0)
        if self.recovery is not None:
            self.recovery.stop()
        self.dispatcher.stop()
        if self.renewer is not None:
            self.renewer.stop()
        self.heartbeat.stop()
        self.context.webhooks.close()


def build_worker(
    settings: WorkerSettings,
    pipeline: Any | None = None,
    device: str | None = None,
    metrics: WorkerMetrics | None = None,
    webhook_transport: httpx.BaseTransport | None = None,
) -> WorkerProcess:
    """Everything but the work loop. Pass `pipeline` to reuse an already loaded one (tests, CLI)."""
    # A Redis restart of a few seconds is retried inside each command instead of failing the job.
    # A silent partition raises TimeoutError after REDIS_SOCKET_TIMEOUT_S instead of hanging (keepalive and
    # timeouts: m4v_core/redis_client.py); the worker never blocks on the server longer (worker/dequeue.py).
    client = redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 10),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **connection_options(settings.redis_url, REDIS_SOCKET_TIMEOUT_S),
    )
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    name = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
    if pipeline is None:
        device = choose_device(settings.device)
        if device == "cuda":
            enable_tf32()
        pipeline = load_pipeline(settings, device, choose_dtype(device))
    device = device or str(getattr(pipeline, "device", "cpu"))
    state = WorkerState(name=name, preset=settings.preset, device=device, loaded_at=datetime.now(UTC))
    state.device_memory_bytes = device_memory_bytes(device)
    state.gpu_count = gpu_count(device, settings.parallel)
    state.vae_tile_px = settings.vae_tile_px
    state.weights = getattr(pipeline, "weights_source", None)
    state.weights_sha256 = getattr(pipeline, "weights_sha256", None)
    store = JobStore(
        client, prefix=settings.key_prefix, ttl_s=settings.job_ttl_s, events_maxlen=settings.events_maxlen
    )
    metrics = metrics or WorkerMetrics()
    storage = Storage.from_settings(settings)
    if settings.s3_create_bucket:
        storage.ensure_bucket()
    webhooks = WebhookSender.from_settings(
        settings, client, store, transport=webhook_transport, metrics=metrics
    )
    spool = Spool.from_settings(settings)
    leases = ActiveLeases(client, store.keys, settings.job_lease_s)
    context = JobContext(
        settings, store, pipeline, storage, webhooks, metrics, state, spool=spool, leases=leases
    )
    queues = [Queue(q, connection=client) for q in store.keys.queues()]
    # rq refuses to register a name whose previous holder died without deregistering (SIGKILL, OOM kill):
    # a container restarted in the same pod keeps M4V_WORKER_NAME, so rq gets a per-process suffix.
    rq_name = f"{name}.{secrets.token_hex(3)}"
    worker = M4VWorker(queues, context=context, name=rq_name, connection=client, lease_s=settings.job_lease_s)
    stuck_s = INTERMEDIATE_STUCK_LEASES * settings.job_lease_s
    reaper = Reaper(
        client, store, settings.max_attempts, webhooks, leases=leases, intermediate_stuck_s=stuck_s
    )
    worker.reaper = reaper  # rq's own registry maintenance settles lapsed leases through it too
    lease_period_s = min(settings.heartbeat_s, settings.job_lease_s / 3)
    recovery = Recovery(
        reaper,
        period_s=lease_period_s,
        reap_every_s=settings.reaper_interval_s,
        retry_spool=lambda: spool.retry_all(storage, store, webhooks),
        spool_every_s=settings.spool_retry_s,
    )
    return WorkerProcess(
        settings=settings,
        worker=worker,
        context=context,
        heartbeat=HeartbeatWriter(client, store.keys, state, settings.heartbeat_s),
        dispatcher=WebhookDispatcher(webhooks),
        recovery=recovery,
        renewer=LeaseRenewer([worker.renew_lease, leases.renew_current], lease_period_s),
    )


def run(settings: WorkerSettings | None = None) -> None:
    """Serve jobs until SIGTERM/SIGINT (rq warm shutdown: the running job finishes first)."""
    settings = settings or WorkerSettings()
    configure_logging(settings.log_level, settings.log_json)
    process = build_worker(settings)
    if settings.worker_metrics_port:
        process.context.metrics.serve(settings.worker_metrics_port, settings.worker_metrics_host)
    process.start()
    log.info("worker ready", extra={"worker": process.context.state.name, "preset": settings.preset})
    try:
        serve_until_stopped(process, settings)
        ctx = process.context
        if ctx.drain.is_set() and ctx.spool is not None and settings.drain_spool_flush_s > 0:
            flush_spool(ctx.spool, ctx.storage, ctx.store, settings.drain_spool_flush_s)
    finally:
        process.stop()


def serve_until_stopped(process: WorkerProcess, settings: WorkerSettings, max_wait_s: float = 30.0) -> None:
    """rq's work loop quits on a Redis error it cannot retry; start it again (with backoff) unless a
    SIGTERM/SIGINT asked us to stop. A job cut by the outage is recovered by the reaper (lease lapse)."""
    wait_s = 1.0
    while True:
        process.worker.work(logging_level=settings.log_level.upper())
        if process.worker._stop_requested or process.context.drain.is_set():
            return
        log.warning("rq work loop ended (Redis unreachable?); restarting", extra={"retry_in_s": wait_s})
        time.sleep(wait_s)
        wait_s = min(max_wait_s, wait_s * 2)


def run_burst(
    settings: WorkerSettings, pipeline: Any | None = None, drain_webhooks_s: float = 0.0, **kwargs: Any
) -> WorkerProcess:
    """Process every queued job in this process, then return (tests, one-shot use).

    drain_webhooks_s: wait up to this long for webhook deliveries due now before stopping.
    """
    process = build_worker(settings, pipeline=pipeline, **kwargs)
    process.start()
    try:
        process.worker.work(burst=True)
        deadline = time.monotonic() + drain_webhooks_s
        sender = process.context.webhooks
        while time.monotonic() < deadline and sender.due_count() > 0:
            time.sleep(0.05)
    finally:
        process.stop()
    return process


if __name__ == "__main__":
    run()
