"""Causal 3D VAE: encoder, decoder, and a streaming, spatially tiled decoder.

Shapes: video (B, 3, F, H, W) in [-1, 1] with F = 1 + tf*k; latents (B, C, 1 + k, H/sf, W/sf) where
tf = cfg.temporal_factor and sf = cfg.spatial_factor. Latents handed out are scaled: (z - shift) * scale.
No attention anywhere (kernel-3 causal convs only), so every output pixel has a bounded receptive field and
spatial tiles blend cleanly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from model.config import VAEConfig
from model.vae_blocks import (
    CausalCache,
    CausalConv3d,
    Downsample,
    FrameGroupNorm,
    ResNetBlock,
    Stage,
    Upsample,
    run_chunked,
)
from model.vae_geometry import decoder_upsampling, tile_layout

Device = torch.device | str | None


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig, *, device: Device = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        chs, g = cfg.encoder_channels, cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.in_channels, chs[0], **kw)
        stages, prev = [], chs[0]
        for i, ch in enumerate(chs):
            blocks = [ResNetBlock(prev if j == 0 else ch, ch, g, **kw) for j in range(cfg.encoder_layers)]
            down = cfg.spatial_down[i] or cfg.temporal_down[i]
            stages.append(
                Stage(
                    blocks, Downsample(ch, cfg.spatial_down[i], cfg.temporal_down[i], **kw) if down else None
                )
            )
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.mid = Stage([ResNetBlock(prev, prev, g, **kw) for _ in range(2)], None)
        self.norm_out = FrameGroupNorm(g, prev, eps=1e-6, **kw)
        self.conv_out = CausalConv3d(prev, 2 * cfg.latent_channels, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, F, H, W) -> (B, 2C, T, h, w): mean and logvar stacked on channels
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        x = self.mid(x)
        return self.conv_out(nn.functional.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig, *, device: Device = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        chs, g = cfg.decoder_channels, cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.latent_channels, chs[0], **kw)
        self.mid = Stage([ResNetBlock(chs[0], chs[0], g, **kw) for _ in range(2)], None)
        stages, prev = [], chs[0]
        for ch, (sp, tm) in zip(chs, decoder_upsampling(cfg), strict=True):
            blocks = [ResNetBlock(prev if j == 0 else ch, ch, g, **kw) for j in range(cfg.decoder_layers)]
            stages.append(Stage(blocks, Upsample(ch, sp, tm, **kw) if (sp or tm) else None))
            prev = ch
        self.stages = nn.ModuleList(stages)
        self.norm_out = FrameGroupNorm(g, prev, eps=1e-6, **kw)
        self.conv_out = CausalConv3d(prev, cfg.in_channels, **kw)

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # (B, C, T, h, w) unscaled latents -> (B, 3, F, H, W)
        x = self.mid(self.conv_in(z, cache), cache)
        return run_chunked([*self.stages, self._out], x, cache)

    def _out(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        return self.conv_out(nn.functional.silu(self.norm_out(x)), cache)


class CausalVAE(nn.Module):
    """KL video autoencoder; decode() is the one-shot reference, stream_decoder() is what serving uses."""

    def __init__(self, cfg: VAEConfig, *, device: Device = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder: Encoder | None
        self.decoder: nn.Module
        if cfg.kind == "pyramidflow":
            from model.pyramid_flow.vae_decoder import PyramidFlowDecoder

            self.encoder = None  # decode only: serving never encodes
            self.decoder = PyramidFlowDecoder(cfg, device=device, dtype=dtype)
        else:
            self.encoder = Encoder(cfg, device=device, dtype=dtype)
            self.decoder = Decoder(cfg, device=device, dtype=dtype)

    def _check_video(self, video: torch.Tensor) -> None:
        _, c, f, h, w = video.shape
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        if c != self.cfg.in_channels or (f - 1) % tf or h % sf or w % sf:
            raise ValueError(
                f"video shape {tuple(video.shape)}: need (B, 3, {tf}k+1, H, W), H and W multiples of {sf}"
            )

    def encode_dist(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of the unscaled posterior, each (B, C, T, h, w); for the KL term in training."""
        self._check_video(video)
        if self.encoder is None:
            raise NotImplementedError(f"VAE kind {self.cfg.kind!r} decodes only (its encoder is not ported)")
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(
        self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Video (B, 3, F, H, W) in [-1, 1] -> scaled latents (B, C, T, h, w): posterior mean, or a sample."""
        mean, logvar = self.encode_dist(video)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return self._per_frame(z, 0, lambda x, scale, shift: (x - shift) * scale)

    def unscale(self, latents: torch.Tensor, first_index: int = 0) -> torch.Tensor:
        """Scaled (B, C, T, h, w) -> unscaled; first_index is the clip index of latents[:, :, 0] (frame 0 may
        have its own factors, VAEConfig.image_scaling_factor)."""
        return self._per_frame(latents, first_index, lambda x, scale, shift: x / scale + shift)

    def _per_frame(
        self, x: torch.Tensor, first_index: int, fn: Callable[[torch.Tensor, float, float], torch.Tensor]
    ) -> torch.Tensor:
        if first_index > 0 or self.cfg.factors(True) == self.cfg.factors(False):
            return fn(x, *self.cfg.factors(False))
        head = fn(x[:, :, :1], *self.cfg.factors(True))
        return torch.cat([head, fn(x[:, :, 1:], *self.cfg.factors(False))], dim=2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, T, h, w) -> video (B, 3, 1 + tf*(T-1), H, W) in [-1, 1], whole clip at once
        (memory grows with T*H*W; serving at 768p uses stream_decoder())."""
        return self.decoder(self.unscale(latents)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def decode_tiled(self, latents: torch.Tensor) -> torch.Tensor:
        """Same frames as streaming every latent frame through stream_decoder(), but tile-major: each tile
        runs through all latent frames with a fresh cache, so only one tile's cache is alive at a time."""

        def whole_clip(z: torch.Tensor, _: tuple[int, int]) -> torch.Tensor:
            cache = CausalCache()
            return torch.cat([self.decoder(z[:, :, t : t + 1], cache) for t in range(z.shape[2])], dim=2)

        return decode_in_tiles(self.cfg, self.unscale(latents), whole_clip).clamp(-1.0, 1.0)

    def stream_decoder(self, tile_px: int | None = None, frame_chunk: int | None = None) -> StreamingDecoder:
        return StreamingDecoder(self, tile_px, frame_chunk)


def blend_ramp(length: int, ramp: int, left: bool, right: bool, device: torch.device) -> torch.Tensor:
    """1D weights: linear ramps over `ramp` samples on the sides that overlap a neighbour tile, else 1."""
    w = torch.ones(length, device=device)
    if ramp > 0:
        up = torch.arange(1, ramp + 1, device=device, dtype=torch.float32) / (ramp + 1)
        if left:
            w[:ramp] = up
        if right:
            w[length - ramp :] = up.flip(0)
    return w


TileDecode = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


def decode_in_tiles(cfg: VAEConfig, z: torch.Tensor, decode_tile: TileDecode) -> torch.Tensor:
    """Cut unscaled latents (B, C, T, h, w) into overlapping tiles of cfg.tile_px pixels, decode each with
    decode_tile(latent_tile, (y, x)) -> (B, 3, n, th*sf, tw*sf), and blend linearly across the overlaps."""
    sf, (h, w) = cfg.spatial_factor, z.shape[-2:]
    tile, overlap, ys, xs = tile_layout(cfg, h, w)
    if len(ys) == 1 and len(xs) == 1:
        return decode_tile(z, (0, 0))
    out: torch.Tensor | None = None
    weight = torch.zeros(h * sf, w * sf, device=z.device)
    for y in ys:
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
            piece = decode_tile(z[..., y : y + th, x : x + tw], (y, x))  # (B, 3, n, th*sf, tw*sf)
            wy = blend_ramp(th * sf, overlap * sf, y > 0, y + th < h, z.device)
            wx = blend_ramp(tw * sf, overlap * sf, x > 0, x + tw < w, z.device)
            if out is None:
                out = piece.new_zeros(*piece.shape[:3], h * sf, w * sf, dtype=torch.float32)
            region = (..., slice(y * sf, (y + th) * sf), slice(x * sf, (x + tw) * sf))
            out[region] += piece.float() * (wy[:, None] * wx[None, :])
            weight[region[1:]] += wy[:, None] * wx[None, :]
    assert out is not None
    return (out / weight).to(z.dtype)


class StreamingDecoder:
    """Decodes one latent frame at a time with a causal cache per spatial tile.

    decode_next(latent (B, C, 1, h, w)) -> frames (B, 3, n, H, W): n = 1 for the first latent frame, tf after.
    Frames larger than cfg.tile_px are cut into overlapping tiles (cfg.tile_overlap of a tile), each decoded
    with its own cache, and blended linearly across the overlaps, so activations depend on the tile size, not
    the frame size. A frame that fits one tile is decoded whole, exactly as decode() would.
    Cost of streaming: every tile's cache stays alive between frames (two input frames per causal conv; about
    15 GiB in bf16 for 768x1280 at batch 1). CausalVAE.decode_tiled() keeps one tile's cache at a time.
    """

    def __init__(self, vae: CausalVAE, tile_px: int | None = None, frame_chunk: int | None = None) -> None:
        self.vae = vae
        self.frame_chunk = frame_chunk  # RuntimeOptions.vae_frame_chunk (vae_blocks.run_chunked)
        # tile_px overrides the VAE's tile size (RuntimeOptions.vae_tile_px): fewer, larger tiles redo less of
        # the overlap (768x1280 in 256 px tiles decodes 1.87x the frame's area) for more activation memory
        self.cfg = vae.cfg if tile_px is None else dataclasses.replace(vae.cfg, tile_px=tile_px)
        self.caches: dict[tuple[int, int], CausalCache] = {}
        self.frames_done = 0

    def _decode_tile(self, z: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
        return self.vae.decoder(z, self.caches.setdefault(key, CausalCache(max_frames=self.frame_chunk)))

    @torch.no_grad()
    def decode_next(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 5 or latent.shape[2] != 1:
            raise ValueError(f"decode_next takes one latent frame (B, C, 1, h, w), got {tuple(latent.shape)}")
        z = self.vae.unscale(latent, first_index=int(self.frames_done > 0))
        out = decode_in_tiles(self.cfg, z, self._decode_tile)
        self.frames_done += out.shape[2]
        return out.clamp(-1.0, 1.0)
