"""Parallel VAE decode (model/parallel/vae_tiles.py): the tiny preset's tiles over 2 and 4 gloo processes
give the one-process tiled decode (StreamingDecoder), every rank decoding only its share of the tiles; a
frame that fits one tile is the exact decode; tiles gathered in the wrong order are caught."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from model.parallel.group import run_ranks
from model.parallel.vae_tiles import share, tile_grid
from model.vae import decode_in_tiles
from model.vae_stream import BatchedStreamingDecoder
from tests.model.parallel_helpers import VaeCase, relative, stream, tiny_vae, vae_rank

TINY_VAE = tiny_vae().cfg
TILES = 96  # px: 24 latent pixels with 6 of overlap, stride 18 -> rows [0, 18, 24], columns [0, 8]


def latents(h: int, w: int, frames: int = 3, seed: int = 0) -> torch.Tensor:
    """(1, 8, frames, h, w): a first latent frame and later ones (these go through the causal caches)."""
    rng = torch.Generator().manual_seed(seed)
    return torch.randn(1, TINY_VAE.latent_channels, frames, h, w, generator=rng)


CASES: list[VaeCase] = [
    ("six_tiles", latents(48, 32), TILES, 1),  # 192 x 128 px in 6 tiles: 3 + 3 on 2 ranks, 2+2+1+1 on 4
    ("six_tiles_batched", latents(48, 32), TILES, 2),  # each rank's tiles decoded two at a time
    ("one_tile", latents(32, 32, seed=1), None, 1),  # 128 px frame, 128 px tiles: the exact decode
]


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vae = tiny_vae()
        out = {name: stream(vae.stream_decoder(px), z) for name, z, px, _ in CASES}
        out["six_tiles_batched_reference"] = stream(BatchedStreamingDecoder(vae, 2, TILES), CASES[1][1])
        out["whole"] = vae.decode(CASES[2][1])
        return out
    finally:
        torch.set_num_threads(before)


def test_tile_grid_is_the_order_decode_in_tiles_visits() -> None:
    cfg = dataclasses.replace(TINY_VAE, tile_px=TILES)
    grid = tile_grid(cfg, 48, 32)
    assert grid == tuple((y, x, 24, 24) for y in (0, 18, 24) for x in (0, 8))
    assert tile_grid(TINY_VAE, 32, 32) == ((0, 0, 32, 32),)  # fits one tile: the whole frame
    visited: list[tuple[int, int]] = []

    def visit(zt: torch.Tensor, pos: tuple[int, int]) -> torch.Tensor:
        visited.append(pos)
        return zt.new_zeros(1, 3, 1, 96, 96)

    decode_in_tiles(cfg, torch.zeros(1, 2, 1, 48, 32), visit)
    assert visited == [(y, x) for y, x, _, _ in grid]


@pytest.mark.parametrize("count", [1, 5, 6, 7])
@pytest.mark.parametrize("world", [2, 4])
def test_share_covers_every_tile_once_in_order(count: int, world: int) -> None:
    runs = [share(count, rank, world) for rank in range(world)]
    assert [i for run in runs for i in run] == list(range(count))
    assert max(map(len, runs)) == math.ceil(count / world) and min(map(len, runs)) == count // world


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world", [2, 4])
def test_tiles_over_ranks_give_the_one_process_decode(
    one_process: dict[str, torch.Tensor], world: int, tmp_path: Path
) -> None:
    run_ranks(vae_rank, world, (CASES, tmp_path))
    got = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]
    for rank in range(world):
        for name, *_ in CASES:
            assert relative(got[rank][name]["frames"], one_process[name]) <= 1e-5, (rank, name)
        batched = got[rank]["six_tiles_batched"]["frames"]
        assert relative(batched, one_process["six_tiles_batched_reference"]) <= 1e-5
    assert relative(got[0]["one_tile"]["frames"], one_process["whole"]) <= 1e-5
    # the work is split: each rank ran its share of the 6 tiles for each of the 3 latent frames, no more
    rows = [got[rank]["six_tiles"]["rows"] for rank in range(world)]
    assert rows == [3 * len(share(6, rank, world)) for rank in range(world)] and sum(rows) == 18
    assert [got[rank]["one_tile"]["rows"] for rank in range(world)] == [3] + [0] * (world - 1)


@pytest.mark.timeout(240)
def test_tiles_gathered_in_the_wrong_order_are_caught(
    one_process: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    run_ranks(vae_rank, 2, (CASES[:1], tmp_path, True))
    got = torch.load(tmp_path / "rank0.pt")["six_tiles"]["frames"]
    assert relative(got, one_process["six_tiles"]) > 1e-2
