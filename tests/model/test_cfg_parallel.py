"""CFG-parallel on 2 gloo processes (model/parallel/cfg.py): the tiny preset gives the same video as one
process, with and without the context cache; a wrong exchange is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.parallel.group import run_ranks
from tests.model.parallel_helpers import cfg_rank, relative, tiny_latents, tiny_outputs, tiny_pipe


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tiny_outputs(tiny_pipe())
    finally:
        torch.set_num_threads(before)


@pytest.mark.timeout(180)
def test_two_ranks_give_the_one_process_video(one_process: dict[str, torch.Tensor], tmp_path: Path) -> None:
    run_ranks(cfg_rank, 2, (tmp_path,))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert relative(got["cached"], one_process["cached"]) <= 1e-5
        assert relative(got["uncached"], one_process["uncached"]) <= 1e-5
        diff = np.abs(got["frames"].numpy().astype(int) - one_process["frames"].numpy().astype(int))
        assert diff.max() <= 1  # uint8 rounding of float frames equal to ~1e-6
        assert (diff == 0).mean() > 0.99


@pytest.mark.timeout(180)
def test_swapped_halves_are_caught(one_process: dict[str, torch.Tensor], tmp_path: Path) -> None:
    run_ranks(cfg_rank, 2, (tmp_path, True))
    got = torch.load(tmp_path / "rank0.pt")
    assert relative(got["cached"], one_process["cached"]) > 1e-2


def test_one_process_latents_depend_on_the_cache_path_only_by_rounding() -> None:
    """Sanity of the reference itself: cached and uncached sampling agree (so both comparisons mean
    something) and the latents are not trivial."""
    torch.set_num_threads(1)
    pipe = tiny_pipe()
    cached, uncached = tiny_latents(pipe, True), tiny_latents(pipe, False)
    assert cached.std() > 0.1
    assert relative(cached, uncached) <= 1e-4
