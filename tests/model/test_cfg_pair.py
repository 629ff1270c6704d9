"""CfgPair (model/parallel/cfg_pair.py), what an M4V_PARALLEL=cfg worker holds: this process is rank 0 and a
follower process rank 1 (gloo on CPU). Same video as one process; a cancel stops both ranks at the same
step and the pair serves the next request."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model.parallel.cfg_pair import CfgPair, PairSpec
from model.pipeline_types import StepProgress
from tests.model.parallel_helpers import TINY_REQUEST, tiny_pipe


class CanceledError(Exception):
    pass


@pytest.fixture(scope="module")
def pair() -> Iterator[CfgPair]:
    before = torch.get_num_threads()
    pair = CfgPair(PairSpec(build=tiny_pipe, devices=("cpu", "cpu"), backend="gloo", timeout_s=60))
    yield pair
    pair.close()
    torch.set_num_threads(before)


@pytest.mark.timeout(180)
def test_pair_gives_the_one_process_video_and_survives_a_cancel(pair: CfgPair) -> None:
    want = tiny_pipe().generate(TINY_REQUEST).frames

    seen: list[int] = []

    def cancel_at_step_3(p: StepProgress) -> None:
        seen.append(p.steps_done)
        if p.steps_done == 3:
            raise CanceledError

    with pytest.raises(CanceledError):
        pair.generate(TINY_REQUEST, on_progress=cancel_at_step_3)
    assert seen == [1, 2, 3]
    got = pair.generate(TINY_REQUEST).frames  # the follower stopped at step 3 too: the ranks are in step
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert pair.device == torch.device("cpu") and pair.cfg.name == "tiny"  # rank 0's pipeline attributes
