"""The rq worker class: SimpleWorker (jobs run in this process: no fork after CUDA init).

Jobs are enqueued by name ("worker.jobs.run_job"); the loaded pipeline and clients reach run_job through
a context variable set around each job, so nothing global is created at import.

SIGTERM: rq's warm shutdown lets the current job finish, then the worker exits (a long job is not cut
at a step boundary and requeued; the deployment's termination grace period must cover one job).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rq import Queue, SimpleWorker
from rq.job import Job

from worker.jobs import JobContext, use_context

log = logging.getLogger(__name__)


class M4VWorker(SimpleWorker):
    """Dequeues in the order the queues are given (high, normal, low) and runs jobs with its context."""

    def __init__(self, queues: Sequence[Queue], *, context: JobContext, **kwargs: Any) -> None:
        super().__init__(list(queues), **kwargs)
        self.context = context

    def perform_job(self, job: Job, queue: Queue) -> bool:
        with use_context(self.context):
            return bool(super().perform_job(job, queue))
