"""What this worker's device can hold, published in its heartbeat for the API's admission control."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def device_memory_bytes(device: str) -> int | None:
    """Total memory of a CUDA device (None on CPU: host memory is not what admission guards)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(dev).total_memory)


def gpu_count(device: str, parallel: str = "none") -> int:
    """GPUs one job of this worker runs on, 0 on CPU: 2 for a CFG-parallel pair (M4V_PARALLEL=cfg), else 1.
    Admission (memory per GPU) and ETAs (the throughput meter) key on it, so it counts the GPUs a job uses,
    not the ones visible: those beyond it idle, which is logged."""
    if torch.device(device).type != "cuda":
        return 0
    used = 2 if parallel == "cfg" else 1
    visible = torch.cuda.device_count()
    if visible > used:
        log.warning(
            "this worker sees %d GPUs and runs each job on %d (M4V_PARALLEL=%s); the others stay idle",
            visible,
            used,
            parallel,
        )
    return used
