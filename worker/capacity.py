"""What this worker's device can hold, published in its heartbeat for the API's admission control."""

from __future__ import annotations

import torch


def device_memory_bytes(device: str) -> int | None:
    """Total memory of a CUDA device (None on CPU: host memory is not what admission guards)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(dev).total_memory)


def gpu_count(device: str) -> int:
    """CUDA devices this worker process can use (all it sees; the chart's worker.gpu.count), 0 on CPU."""
    return torch.cuda.device_count() if torch.device(device).type == "cuda" else 0
