"""CfgPair (model/parallel/cfg_pair.py) with the VAE decode split over its two ranks (model/parallel/
vae_tiles.py): the tiny preset cut into 9 tiles per frame (64 px tiles on 128 x 128) gives the one-process
video while each rank's VAE decoder runs only its share (5 + 4 tiles per latent frame, counted by a forward
hook in both processes); a cancel after the first latent frame was decoded stops both ranks' decodes at the
same point and the next request is right; so does an on_chunk that raises on rank 0. Inline decode, and
overlapped decode (side thread) with tile batches of 2."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model.parallel.cfg_pair import CfgPair, PairSpec
from model.parallel.vae_tiles import share, tile_grid
from model.pipeline_types import DecodedChunk, StepProgress
from model.runtime import RuntimeOptions
from tests.model.parallel_helpers import TINY_REQUEST, counted_tiny_pipe, rows_decoded, tiny_pipe

RUNTIMES = {
    "inline": RuntimeOptions(vae_tile_px=64),
    "overlap_batched": RuntimeOptions(vae_tile_px=64, vae_tile_batch=2, overlap_decode=True),
}
FIRST_UNIT_STEPS = sum(TINY_REQUEST.first_frame_steps or ())  # 4: step 5 is the second latent frame's first


class CanceledError(Exception):
    pass


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def pair_rows(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CfgPair, Path]]:
    """The pair, and the folder where both ranks count their decoded tile rows."""
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("rows")
    build = functools.partial(counted_tiny_pipe, out, RUNTIMES[request.param])
    pair = CfgPair(PairSpec(build=build, devices=("cpu", "cpu"), backend="gloo", timeout_s=60))
    yield pair, out
    pair.close()
    torch.set_num_threads(before)


@pytest.mark.timeout(240)
def test_split_decode_gives_the_one_process_video_and_each_rank_decodes_its_share(
    pair_rows: tuple[CfgPair, Path],
) -> None:
    pair, out = pair_rows
    want = tiny_pipe(runtime=pair.runtime).generate(TINY_REQUEST).frames
    tiles = len(tile_grid(dataclasses.replace(pair.vae.cfg, tile_px=64), 32, 32))
    share0, share1 = (len(share(tiles, rank, 2)) for rank in (0, 1))
    assert (tiles, share0, share1) == (9, 5, 4)

    seen: list[int] = []

    def cancel_in_second_unit(p: StepProgress) -> None:
        seen.append(p.steps_done)
        if p.steps_done == FIRST_UNIT_STEPS + 1:
            raise CanceledError

    with pytest.raises(CanceledError):
        pair.generate(TINY_REQUEST, on_progress=cancel_in_second_unit)
    assert seen == list(range(1, FIRST_UNIT_STEPS + 2))
    # both ranks decoded the first latent frame, each its share of its tiles, and nothing after the cancel
    assert [rows_decoded(out, rank) for rank in (0, 1)] == [share0, share1]

    got = pair.generate(TINY_REQUEST).frames  # a decode left half-done on one rank would break this one
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    frames = pair.cfg.latent_frames(TINY_REQUEST.num_frames)  # 2 latent frames
    assert [rows_decoded(out, rank) for rank in (0, 1)] == [share0 * (1 + frames), share1 * (1 + frames)]


class ChunkConsumerError(Exception):
    pass


@pytest.mark.timeout(240)
def test_a_failing_chunk_consumer_stops_both_ranks_together(pair_rows: tuple[CfgPair, Path]) -> None:
    """The worker's on_chunk runs on rank 0 only; when it raises, both ranks stop (at the next step, or
    after the last) and the pair serves the next request: a rank left behind in a collective would hang
    or pair its gathers with the next request's."""
    pair, _ = pair_rows
    want = tiny_pipe(runtime=pair.runtime).generate(TINY_REQUEST).frames
    units: list[int] = []

    def fail_on_first_chunk(chunk: DecodedChunk) -> None:
        units.append(chunk.unit)
        raise ChunkConsumerError

    with pytest.raises(ChunkConsumerError):
        pair.generate(TINY_REQUEST, on_chunk=fail_on_first_chunk)
    assert units == [0]  # later chunks are not handed to a consumer that failed
    got: list[DecodedChunk] = []
    frames = pair.generate(TINY_REQUEST, on_chunk=got.append).frames
    diff = np.abs(frames.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert [c.unit for c in got] == [0, 1] and np.array_equal(np.concatenate([c.frames for c in got]), frames)
