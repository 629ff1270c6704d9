"""Parallel VAE decode: the spatial tiles of each latent frame spread over the ranks of a process group,
gathered back, and blended into the full frame by the one-process code (model/vae.py decode_in_tiles).

Each rank decodes a contiguous run of the frame's tiles (run lengths differ by at most one) with its own
causal cache per tile (per batch of tiles with tile_batch > 1), so it does 1/R of the convolutions and
holds 1/R of the streaming caches. One all_gather per latent frame hands every rank every tile, and
decode_in_tiles blends them exactly as StreamingDecoder does. A tile is the same computation on any rank,
so the frames equal the one-process tiled decode; a frame that fits one tile is decoded whole by rank 0
(the exact decode, no speed-up).

When decode overlaps sampling (RuntimeOptions.overlap_decode: decode on a side thread), give the decoder a
process group of its own (dist.new_group): two threads issuing collectives on one group may interleave
them differently on each rank.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.distributed as dist
from torch import Tensor

from model.config import VAEConfig
from model.vae import CausalVAE, decode_in_tiles
from model.vae_blocks import CausalCache

Tile = tuple[int, int, int, int]  # (y, x, height, width) in latent pixels


@functools.lru_cache(maxsize=64)
def tile_grid(cfg: VAEConfig, h: int, w: int) -> tuple[Tile, ...]:
    """Every tile decode_in_tiles cuts an (h, w) latent frame into, in its order. Read off decode_in_tiles
    itself (one pass over a one-channel stand-in frame), so the two cannot disagree."""
    sf, seen = cfg.spatial_factor, []

    def record(zt: Tensor, pos: tuple[int, int]) -> Tensor:
        th, tw = zt.shape[-2:]
        seen.append((pos[0], pos[1], th, tw))
        return zt.new_zeros(1, 1, 1, th * sf, tw * sf)

    decode_in_tiles(cfg, torch.zeros(1, 1, 1, h, w), record)
    return tuple(seen)


def share(count: int, rank: int, world: int) -> range:
    """The indices of `count` items that `rank` of `world` takes: contiguous, sizes differing by <= 1."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


class ParallelStreamingDecoder:
    """StreamingDecoder's decode_next (model/vae.py) over the ranks of `group` (the default group when
    None): every rank calls it with the same latent frame and gets the same frames back."""

    def __init__(
        self,
        vae: CausalVAE,
        group: dist.ProcessGroup | None = None,
        tile_px: int | None = None,
        tile_batch: int = 1,
        frame_chunk: int | None = None,
    ) -> None:
        if tile_batch < 1:
            raise ValueError(f"tile_batch {tile_batch} must be >= 1")
        self.vae = vae
        self.cfg = vae.cfg if tile_px is None else dataclasses.replace(vae.cfg, tile_px=tile_px)
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.tile_batch = tile_batch
        self.frame_chunk = frame_chunk
        self.caches: dict[int, CausalCache] = {}  # one per batch of this rank's tiles
        self.frames_done = 0

    @torch.no_grad()
    def decode_next(self, latent: Tensor) -> Tensor:
        if latent.ndim != 5 or latent.shape[2] != 1:
            raise ValueError(f"decode_next takes one latent frame (B, C, 1, h, w), got {tuple(latent.shape)}")
        z = self.vae.unscale(latent, first_index=int(self.frames_done > 0))
        tiles = tile_grid(self.cfg, *z.shape[-2:])
        if len({t[2:] for t in tiles}) != 1:
            raise ValueError(f"tiles of unequal size cannot be gathered in one tensor: {tiles}")
        blank = z.new_zeros(self._piece_shape(z, *tiles[0][2:]))  # what a decoded tile looks like
        mine = [tiles[i] for i in share(len(tiles), self.rank, self.world)]
        pieces = self.gather(self._decode(z, mine, blank), blank, len(tiles))
        by_pos = {(y, x): piece for (y, x, _, _), piece in zip(tiles, pieces, strict=True)}
        frames = decode_in_tiles(self.cfg, z, lambda _zt, pos: by_pos[pos])
        self.frames_done += frames.shape[2]
        return frames.clamp(-1.0, 1.0)

    def _piece_shape(self, z: Tensor, th: int, tw: int) -> tuple[int, ...]:
        """(B, 3, n, th*sf, tw*sf): n = 1 frame for the first latent frame, temporal_factor after."""
        n = 1 if self.frames_done == 0 else self.cfg.temporal_factor
        sf = self.cfg.spatial_factor
        return (z.shape[0], self.cfg.in_channels, n, th * sf, tw * sf)

    def _decode(self, z: Tensor, mine: list[Tile], blank: Tensor) -> list[Tensor]:
        """This rank's tiles decoded, each (B, 3, n, H_tile, W_tile); none when it has no tile."""
        out: list[Tensor] = []
        for start in range(0, len(mine), self.tile_batch):
            group = mine[start : start + self.tile_batch]
            zt = torch.cat([z[..., y : y + th, x : x + tw] for y, x, th, tw in group], dim=0)
            cache = self.caches.setdefault(start, CausalCache(max_frames=self.frame_chunk))
            decoded = self.vae.decoder(zt, cache)
            out.extend(decoded.split(z.shape[0], dim=0))
        for piece in out:
            if piece.shape != blank.shape or piece.dtype != blank.dtype:
                raise RuntimeError(
                    f"a decoded tile is {tuple(piece.shape)} {piece.dtype}, the gather expects "
                    f"{tuple(blank.shape)} {blank.dtype}"
                )
        return out

    def gather(self, mine: list[Tensor], blank: Tensor, count: int) -> list[Tensor]:
        """All `count` tiles in tile order on every rank: one all_gather of equal blocks (each rank's run
        padded with zeros to the longest, rank 0's), each block cut back to its rank's run."""
        runs = [len(share(count, r, self.world)) for r in range(self.world)]
        block = blank.new_zeros(runs[0], *blank.shape)
        if mine:
            block[: len(mine)] = torch.stack(mine)
        blocks = [torch.empty_like(block) for _ in range(self.world)]
        dist.all_gather(blocks, block, group=self.group)
        return [piece for run, got in zip(runs, blocks, strict=True) for piece in got[:run]]
