"""Sequence-parallel cached steps (model/parallel/seq.py) on 2 and 4 gloo processes, and CFG x sequence on a
2 x 2 mesh (model/parallel/mesh.py): the tiny preset's latents equal one process's; a scan hand-off that
restarts every rank from the cached state is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.parallel.group import run_ranks
from tests.model.parallel_helpers import mesh_rank, relative, seq_rank, tiny_latents, tiny_pipe


@pytest.fixture(scope="module")
def one_process() -> torch.Tensor:
    return tiny_latents(tiny_pipe(), True)


@pytest.fixture(scope="module")
def one_process_uncached() -> torch.Tensor:
    return tiny_latents(tiny_pipe(), False)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("attention", ["gather_kv", "ulysses"])
@pytest.mark.parametrize("world", [2, 4])
def test_split_frame_gives_the_one_process_latents(
    one_process: torch.Tensor, world: int, attention: str, tmp_path: Path
) -> None:
    run_ranks(seq_rank, world, (tmp_path, attention))
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")["cached"]
        assert relative(got, one_process) <= 1e-5


@pytest.mark.timeout(240)
def test_restarting_each_rank_from_the_cached_state_is_caught(
    one_process: torch.Tensor, tmp_path: Path
) -> None:
    run_ranks(seq_rank, 2, (tmp_path, "gather_kv", True))
    assert relative(torch.load(tmp_path / "rank0.pt")["cached"], one_process) > 1e-3


@pytest.mark.timeout(240)
@pytest.mark.parametrize("attention", ["gather_kv", "ulysses"])
def test_cfg_times_seq_mesh_gives_the_one_process_latents(
    one_process: torch.Tensor, one_process_uncached: torch.Tensor, attention: str, tmp_path: Path
) -> None:
    run_ranks(mesh_rank, 4, (tmp_path, attention))
    for rank in range(4):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert relative(got["cached"], one_process) <= 1e-5
        assert relative(got["uncached"], one_process_uncached) <= 1e-5
