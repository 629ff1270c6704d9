"""M4V_PARALLEL reaches the worker: cfg loads a CFG-parallel pair (on CPU: two gloo processes) that serves a
request like the one-device pipeline; a CUDA worker without 2 GPUs is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m4v_core import Settings
from model.parallel.cfg_pair import CfgPair
from model.pipeline_types import GenerationRequest
from worker.parallel import pair_devices
from worker.pipeline import load_pipeline

REQ = GenerationRequest(
    prompt="a red fox in snow", width=128, height=128, num_frames=5, seed=3, later_frame_steps=(1, 1, 1)
)


@pytest.mark.timeout(180)
def test_parallel_cfg_loads_a_pair_that_generates_the_one_device_video() -> None:
    torch.set_num_threads(1)
    one = load_pipeline(Settings(preset="tiny"), "cpu", torch.float32)  # type: ignore[call-arg]
    want = one.generate(REQ).frames
    pair = load_pipeline(Settings(preset="tiny", parallel="cfg"), "cpu", torch.float32)  # type: ignore[call-arg]
    assert isinstance(pair, CfgPair)
    try:
        assert pair.weights_sha256 == one.weights_sha256  # both ranks load the packaged tiny weights
        got = pair.generate(REQ).frames
    finally:
        pair.close()
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == want.shape and diff.max() <= 1 and (diff == 0).mean() > 0.99


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has 2 GPUs: nothing to refuse")
def test_parallel_cfg_on_cuda_needs_two_gpus() -> None:
    with pytest.raises(RuntimeError, match="needs 2 visible GPUs"):
        pair_devices("cuda")


def test_parallel_defaults_to_none_and_rejects_unknown_modes() -> None:
    assert Settings().parallel == "none"  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="parallel"):
        Settings(parallel="ring")  # type: ignore[call-arg, arg-type]
