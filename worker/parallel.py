"""M4V_PARALLEL: one job on several devices. cfg = this worker process and a follower process, one CFG half
of every step each (model/parallel/cfg_pair.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.parallel.cfg_pair import CfgPair
    from model.pipeline import VideoPipeline

log = logging.getLogger(__name__)


def pair_devices(device: str) -> tuple[tuple[str, str], str]:
    """The two devices and the process-group backend: cuda:0 + cuda:1 over NCCL, or two CPU ranks (gloo)."""
    import torch

    if torch.device(device).type != "cuda":
        return ("cpu", "cpu"), "gloo"
    if torch.cuda.device_count() < 2:
        raise RuntimeError(
            f"M4V_PARALLEL=cfg needs 2 visible GPUs, this worker sees {torch.cuda.device_count()} "
            "(chart: worker.gpu.count: 2)"
        )
    return ("cuda:0", "cuda:1"), "nccl"


def load_cfg_pair(build: Callable[[str], VideoPipeline], device: str) -> CfgPair:
    """build(device) loads the one-device pipeline on each rank; this process is rank 0."""
    from model.parallel.cfg_pair import CfgPair, PairSpec

    devices, backend = pair_devices(device)
    log.info("CFG-parallel pair", extra={"devices": devices, "backend": backend})
    return CfgPair(PairSpec(build, devices, backend))
