"""Admission by cost: refuse up front what no worker could run, instead of failing it on the GPU later.

  estimated peak memory per GPU (model/memory.py) > the device memory of every live worker of the preset
      (heartbeat; fallback M4V_ADMISSION_GPU_MEMORY_BYTES)                -> 413 exceeds_gpu_memory
  estimated FLOPs (model/flops.py) > M4V_ADMISSION_MAX_FLOPS                -> 422 exceeds_flop_limit
Both errors name the limit, its value and the request's estimate. The memory per GPU depends on the GPUs one
job of the worker runs on (its heartbeat's gpu_count): on a CFG-parallel pair (2) each GPU holds the whole
weights but only one CFG half's context cache and activations, so a request too large for one GPU may fit a
pair of the same cards. An admitted request's FLOP estimate is recorded with the job (service/submit.py) for
ETAs and m4v_queue_flops (m4v_core/throughput.py).
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
def _peak_memory(
    cfg: ModelConfig, width: int, height: int, frames: int, cfg_batch: int, tile_px: int | None
) -> int:
    return estimate_peak_memory(
        cfg,
        width=width,
        height=height,
        num_frames=frames,
        dtype_bytes=GPU_DTYPE_BYTES,
        cfg_batch=cfg_batch,
        vae_tile_px=tile_px,
    ).total


def gpu_peak(cfg: ModelConfig, spec: JobSpec, gpu_count: int, vae_tile_px: int | None = None) -> int:
    """Estimated peak memory of each GPU of a worker whose jobs run on gpu_count GPUs: 2 or more split the
    CFG batch (M4V_PARALLEL=cfg), one half per GPU. vae_tile_px: the worker's decode tile size (its
    heartbeat), which sets the decoder's working set and streaming caches."""
    cfg_batch = 1 if gpu_count >= 2 else 2
    return _peak_memory(cfg, spec.width, spec.height, spec.num_frames, cfg_batch, vae_tile_px)


@dataclass(frozen=True)
class GpuFit:
    """A request against the GPUs of the live worker with the most memory to spare for it."""

    estimate: int  # bytes per GPU on that worker
    limit: int | None  # bytes per GPU it has (None: no worker publishes memory and no setting)
    source: str  # where the limit comes from, for the error message
    gpu_count: int


def best_gpu_fit(state: ServiceState, cfg: ModelConfig, spec: JobSpec) -> GpuFit:
    """The live worker of the preset with the most room for the request; without one that publishes its
    memory, one GPU of M4V_ADMISSION_GPU_MEMORY_BYTES."""
    workers = [w for w in state.fleet_view.get().workers if w.preset == spec.preset and w.device_memory_bytes]
    if not workers:
        limit = state.settings.admission_gpu_memory_bytes
        return GpuFit(gpu_peak(cfg, spec, 1), limit, "M4V_ADMISSION_GPU_MEMORY_BYTES", 1)
    fits = [
        (w.device_memory_bytes or 0, gpu_peak(cfg, spec, w.gpu_count, w.vae_tile_px), w.gpu_count)
        for w in workers
    ]
    limit, estimate, gpus = max(fits, key=lambda fit: fit[0] - fit[1])
    source = "the largest worker GPU" if gpus < 2 else f"each GPU of the roomiest {gpus}-GPU worker"
    return GpuFit(estimate, limit, source, max(gpus, 1))


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
    fit = best_gpu_fit(state, cfg, spec)
    if fit.limit is not None and fit.estimate > fit.limit:
        per_gpu = " per GPU" if fit.gpu_count > 1 else ""
        raise ExceedsGpuMemoryError(
            f"request needs an estimated {fit.estimate / GIB:.1f} GiB of GPU memory{per_gpu}, more than "
            f"{fit.source} ({fit.limit / GIB:.1f} GiB); use fewer frames or a smaller resolution",
            details={
                "limit": fit.source,
                "limit_value": fit.limit,
                "estimate": fit.estimate,
                "gpu_count": fit.gpu_count,
            },
        )
    return Admission(flops=flops, peak_memory_bytes=fit.estimate)
