"""Mapping of hardware faults at the job boundary (worker/jobs.py): CUDA out of memory -> out_of_memory.

The failed job's tensors die with its frames; this frees what the caching allocator still holds so the next
job starts from a clean pool, and turns the exception into the JobError clients see.
"""

from __future__ import annotations

import gc
import logging
import traceback

import torch

from m4v_core import JobError

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500


def free_accelerator_memory(exc: BaseException | None = None) -> None:
    """Drop what the failed job still holds and return cached blocks to the driver.

    Inside an ``except`` block the exception's traceback keeps every frame of the failed job alive, and with
    them its activations: clear those frames' locals first, or nothing of the job can be collected yet.
    """
    if exc is not None and exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def oom_error(exc: torch.cuda.OutOfMemoryError) -> JobError:
    """Free cached GPU memory and describe the failure (error.type out_of_memory)."""
    free_accelerator_memory(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
    log.warning("job ran out of GPU memory", extra={"error": message[:200]})
    return JobError(
        type="out_of_memory",
        message=f"{message[:MAX_MESSAGE_CHARS]} (try fewer frames or a lower resolution)",
    )
