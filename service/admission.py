"""Admission by cost: refuse up front what no worker could run, instead of failing it on the GPU later.

  estimated peak GPU memory (model/memory.py) > the largest device memory a live worker of the preset
      publishes in its heartbeat (fallback M4V_ADMISSION_GPU_MEMORY_BYTES)  -> 413 exceeds_gpu_memory
  estimated FLOPs (model/flops.py) > M4V_ADMISSION_MAX_FLOPS                -> 422 exceeds_flop_limit
Both errors name the limit, its value and the request's estimate. An admitted request's FLOP estimate is
recorded with the job (service/submit.py) for ETAs and m4v_queue_flops (m4v_core/throughput.py).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from m4v_core import JobSpec
from m4v_core.throughput import spec_flops
from model.config import ModelConfig
from model.memory import estimate_peak_memory
from service.errors import ServiceError
from service.state import ServiceState

log = logging.getLogger(__name__)

GPU_DTYPE_BYTES = 2  # workers serve bf16 on CUDA (worker/main.py)
GIB = 1 << 30


class ExceedsGpuMemoryError(ServiceError):
    status_code = 413
    error_type = "exceeds_gpu_memory"


class ExceedsFlopLimitError(ServiceError):
    status_code = 422
    error_type = "exceeds_flop_limit"


@dataclass(frozen=True)
class Admission:
    flops: float
    peak_memory_bytes: int


@functools.lru_cache(maxsize=256)
def _peak_memory(cfg: ModelConfig, width: int, height: int, frames: int) -> int:
    return estimate_peak_memory(
        cfg, width=width, height=height, num_frames=frames, dtype_bytes=GPU_DTYPE_BYTES
    ).total


def available_gpu_memory(state: ServiceState, preset: str) -> tuple[int | None, str]:
    """(bytes, where that limit comes from): the largest device a live worker of the preset has."""
    sizes = [
        w.device_memory_bytes
        for w in state.fleet_view.get().workers
        if w.preset == preset and w.device_memory_bytes
    ]
    if sizes:
        return max(sizes), "the largest worker GPU"
    return state.settings.admission_gpu_memory_bytes, "M4V_ADMISSION_GPU_MEMORY_BYTES"


def admit(state: ServiceState, spec: JobSpec) -> Admission:
    """Raise if the request cannot be served; the caller records the returned FLOP estimate with the job."""
    cfg = state.preset
    flops = spec_flops(spec, cfg)
    cap = state.settings.admission_max_flops
    if cap is not None and flops > cap:
        raise ExceedsFlopLimitError(
            f"request needs an estimated {flops:.3e} FLOPs, above the limit M4V_ADMISSION_MAX_FLOPS = "
            f"{cap:.3e}; use fewer frames, steps or a smaller resolution",
            details={"limit": "M4V_ADMISSION_MAX_FLOPS", "limit_value": cap, "estimate": flops},
        )
    peak = _peak_memory(cfg, spec.width, spec.height, spec.num_frames)
    available, source = available_gpu_memory(state, spec.preset)
    if available is not None and peak > available:
        raise ExceedsGpuMemoryError(
            f"request needs an estimated {peak / GIB:.1f} GiB of GPU memory, more than {source} "
            f"({available / GIB:.1f} GiB); use fewer frames or a smaller resolution",
            details={"limit": source, "limit_value": available, "estimate": peak},
        )
    return Admission(flops=flops, peak_memory_bytes=peak)
