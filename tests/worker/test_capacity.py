"""What a worker publishes about its devices (worker/capacity.py): gpu_count is the GPUs one job runs on,
which admission (memory per GPU) and ETAs (the throughput meter) key on."""

from __future__ import annotations

import logging

import pytest
import torch

from worker.capacity import device_memory_bytes, gpu_count


def test_a_cpu_worker_runs_its_jobs_on_no_gpu_and_publishes_no_memory() -> None:
    assert gpu_count("cpu") == 0 and gpu_count("cpu", "cfg") == 0  # a CPU pair is two CPU processes
    assert device_memory_bytes("cpu") is None


def test_a_cuda_worker_counts_the_gpus_one_job_uses_not_the_ones_it_sees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Decided by the device and M4V_PARALLEL alone (so it runs without a GPU); more visible GPUs than a
    job uses are logged as idle."""
    with caplog.at_level(logging.WARNING, logger="worker.capacity"):
        assert gpu_count("cuda", "none") == 1
        assert gpu_count("cuda:0", "cfg") == 2
    idle = [r.getMessage() for r in caplog.records if "stay idle" in r.getMessage()]
    assert len(idle) == (torch.cuda.device_count() > 1) + (torch.cuda.device_count() > 2)
