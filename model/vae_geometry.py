"""Shapes of the VAE decoder that the pure-Python estimates need (model/flops_vae.py, model/memory.py) and
the torch modules share (model/vae.py): the up-sampling after each decoder block, the spatial tiles of a
streaming decode, and the inputs of the causal convolutions whose last frames a streaming decode keeps.
No torch here: the API imports the estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from model.config import VAEConfig

CACHED_FRAMES = 2  # a causal conv of temporal kernel 3 keeps its last two input frames between latent frames


def decoder_upsampling(cfg: VAEConfig) -> list[tuple[bool, bool]]:
    """(spatial, temporal) up-sampling after each decoder block, mirroring the encoder: decoder block i
    undoes encoder block n-2-i, so the last decoder block runs at full resolution (as in SD/PyramidFlow)."""
    flags = list(zip(cfg.spatial_down, cfg.temporal_down, strict=True))
    return [*reversed(flags[:-1]), flags[-1]]


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size); the last one is aligned to the end."""
    if size <= tile:
        return [0]
    return [*range(0, size - tile, stride), size - tile]


class TileLayout(NamedTuple):
    """How a decode cuts a (latent_h, latent_w) frame: tile side and overlap in latent pixels, tile starts."""

    tile: int
    overlap: int
    ys: list[int]
    xs: list[int]


def tile_layout(cfg: VAEConfig, latent_h: int, latent_w: int) -> TileLayout:
    """Tiles of cfg.tile_px pixels overlapping by cfg.tile_overlap of a tile; the last aligned to the edge."""
    tile = max(1, cfg.tile_px // cfg.spatial_factor)
    overlap = int(tile * cfg.tile_overlap)
    stride = max(1, tile - overlap)
    return TileLayout(tile, overlap, tile_starts(latent_h, tile, stride), tile_starts(latent_w, tile, stride))


def tile_sizes(cfg: VAEConfig, latent_h: int, latent_w: int) -> list[tuple[int, int]]:
    """(height, width) in latent pixels of every tile the streaming decode cuts a frame into."""
    tile, _, ys, xs = tile_layout(cfg, latent_h, latent_w)
    return [(min(tile, latent_h - y), min(tile, latent_w - x)) for y in ys for x in xs]


def cached_conv_inputs(cfg: VAEConfig, latent_h: int, latent_w: int) -> list[tuple[int, int]]:
    """(channels, pixels per frame) of the input of every temporal-kernel-3 causal conv of the decoder, in
    order, for a (latent_h, latent_w) tile: conv_in, the mid block's two ResNets, each block's ResNets and
    up-sampling conv, conv_out (1x1x1 convs keep no frames)."""
    pixels, c0 = latent_h * latent_w, cfg.decoder_channels[0]
    inputs = [(cfg.latent_channels, pixels)] + [(c0, pixels)] * 4
    prev = c0
    for ch, (spatial, temporal) in zip(cfg.decoder_channels, decoder_upsampling(cfg), strict=True):
        for j in range(cfg.decoder_layers):
            inputs += [(prev if j == 0 else ch, pixels), (ch, pixels)]
        if cfg.kind == "pyramidflow":  # conv, then pixel shuffle; conv, then frame interleave
            inputs += [(ch, pixels)] if spatial else []
            pixels *= 4 if spatial else 1
            inputs += [(ch, pixels)] if temporal else []
        elif spatial or temporal:  # nearest up-sampling, then one conv
            pixels *= 4 if spatial else 1
            inputs.append((ch, pixels))
        prev = ch
    return [*inputs, (prev, pixels)]


def stream_cache_elements(cfg: VAEConfig, latent_h: int, latent_w: int) -> int:
    """Elements (batch 1) a streaming decode keeps between latent frames over all tiles of a frame."""
    return sum(
        CACHED_FRAMES * ch * px
        for th, tw in tile_sizes(cfg, latent_h, latent_w)
        for ch, px in cached_conv_inputs(cfg, th, tw)
    )
