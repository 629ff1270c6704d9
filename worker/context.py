"""JobContext: what every job of a worker process uses, built once (worker/main.py) and handed to run_job.

rq calls run_job(job_id) by name with nothing else; M4VWorker (worker/rqworker.py) sets the process's
context around each job with use_context(), and run_job reads it with current_context().
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m4v_core import JobStore, WorkerSettings
    from m4v_core.webhooks import WebhookSender
    from worker.heartbeat import WorkerState
    from worker.leases import ActiveLeases
    from worker.metrics import WorkerMetrics
    from worker.spool import Spool
    from worker.storage import Storage


@dataclass
class JobContext:
    """Everything a job needs, built once per worker process (worker/main.py)."""

    settings: WorkerSettings
    store: JobStore
    pipeline: Any  # model.pipeline.VideoPipeline
    storage: Storage
    webhooks: WebhookSender
    metrics: WorkerMetrics
    state: WorkerState
    drain: threading.Event = field(default_factory=threading.Event)  # SIGTERM: stop at a step boundary
    spool: Spool | None = None  # where finished videos go when S3 refuses them (worker/spool.py)
    leases: ActiveLeases | None = None  # {prefix}:active entries of running attempts (worker/leases.py)


_context: ContextVar[JobContext] = ContextVar("m4v_job_context")


@contextlib.contextmanager
def use_context(ctx: JobContext) -> Iterator[None]:
    token = _context.set(ctx)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> JobContext:
    try:
        return _context.get()
    except LookupError:
        raise RuntimeError("run_job must run inside an M4VWorker (worker/rqworker.py)") from None
