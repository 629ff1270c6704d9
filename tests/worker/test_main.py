"""worker/main.py: device and dtype policy, JSON logs, the burst worker with a heartbeat."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from m4v_core.logs import JsonFormatter
from worker.main import choose_device, choose_dtype


def test_auto_device_is_cpu_without_cuda_and_dtype_follows_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto") == expected
    assert choose_device("cpu") == "cpu"
    assert choose_dtype("cuda") == torch.bfloat16
    assert choose_dtype("cpu") == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA"):
        choose_device("cuda")


def test_json_log_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("worker.jobs", logging.INFO, __file__, 1, "job finished", None, None)
    record.job_id = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "job finished" and line["job_id"] == "abc" and line["level"] == "INFO"
