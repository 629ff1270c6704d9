"""Causal 3D VAE on the tiny preset's config (CPU, real code, random weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import PRESETS, VAEConfig
from model.vae import CausalVAE, blend_ramp, decoder_upsampling
from model.vae_blocks import FrameGroupNorm
from model.vae_geometry import tile_starts

TINY = PRESETS["tiny"].vae


@pytest.fixture(scope="module")
def vae() -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(TINY).eval()


def _stream(vae: CausalVAE, latents: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    dec = vae.stream_decoder()
    parts = [dec.decode_next(latents[:, :, i : i + 1]) for i in range(latents.shape[2])]
    return torch.cat(parts, dim=2), [p.shape[2] for p in parts]


def _with_tiles(vae: CausalVAE, tile_px: int, overlap: float) -> CausalVAE:
    other = CausalVAE(dataclasses.replace(TINY, tile_px=tile_px, tile_overlap=overlap)).eval()
    other.load_state_dict(vae.state_dict())
    return other


@torch.no_grad()
def test_encode_decode_shapes_tiny_17_frames(vae: CausalVAE) -> None:
    video = torch.rand(1, 3, 17, 128, 128) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 8, 5, 32, 32)
    out = vae.decode(latents)
    assert out.shape == (1, 3, 17, 128, 128)
    assert out.abs().max() <= 1.0


@torch.no_grad()
def test_encode_returns_scaled_mean_and_samples_with_generator(vae: CausalVAE) -> None:
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    scaled = CausalVAE(dataclasses.replace(TINY, scaling_factor=0.5, shift_factor=0.25)).eval()
    scaled.load_state_dict(vae.state_dict())
    mean, logvar = scaled.encode_dist(video)
    torch.testing.assert_close(scaled.encode(video), (mean - 0.25) * 0.5)
    assert logvar.shape == mean.shape
    s1 = scaled.encode(video, sample=True, generator=torch.Generator().manual_seed(3))
    s2 = scaled.encode(video, sample=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, scaled.encode(video))
    torch.testing.assert_close(scaled.unscale(scaled.encode(video)), mean)


def test_encode_rejects_frame_count_not_4k_plus_1(vae: CausalVAE) -> None:
    with pytest.raises(ValueError, match="4k\\+1"):
        vae.encode(torch.zeros(1, 3, 6, 32, 32))


@torch.no_grad()
def test_encoder_is_causal_and_first_frame_encoded_alone(vae: CausalVAE) -> None:
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    changed = video.clone()
    changed[:, :, 5] = -changed[:, :, 5]  # frame 5 belongs to latent frame 2 (frames 5..8)
    a, b = vae.encode(video), vae.encode(changed)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2], rtol=0, atol=0)
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])
    torch.testing.assert_close(vae.encode(video[:, :, :1]), a[:, :, :1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_decoder_is_causal_in_latent_frames(vae: CausalVAE) -> None:
    latents = torch.randn(1, 8, 4, 16, 16)
    changed = latents.clone()
    changed[:, :, 2] += 1.0  # latent frame 2 -> video frames 5..8
    a, b = vae.decode(latents), vae.decode(changed)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, :, 5:9], b[:, :, 5:9])


@torch.no_grad()
def test_streaming_decode_equals_full_decode(vae: CausalVAE) -> None:
    latents = torch.randn(1, 8, 5, 16, 16)
    full = vae.decode(latents)
    streamed, counts = _stream(vae, latents)
    assert counts == [1, 4, 4, 4, 4]
    err = (streamed - full).norm() / full.norm()
    assert err <= 1e-4


@torch.no_grad()
def test_tiled_stream_is_exact_when_tile_covers_frame(vae: CausalVAE) -> None:
    latents = torch.randn(1, 8, 3, 24, 24)  # 96 px frame, 128 px tiles: one tile
    streamed, _ = _stream(vae, latents)
    torch.testing.assert_close(streamed, vae.decode(latents), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@torch.no_grad()
def test_tiled_stream_is_close_to_untiled(vae: CausalVAE) -> None:
    latents = torch.randn(1, 8, 2, 32, 32)  # 128 px frame cut into 96 px tiles with 24 px overlap
    full = vae.decode(latents)
    tiled, counts = _stream(_with_tiles(vae, 96, 0.25), latents)
    assert counts == [1, 4]
    # Per-tile GroupNorm statistics and the zero padding at tile edges differ from the whole frame, so
    # tiles are not exact; with random weights the mean error is a few % of the signal (seams were ~4x worse).
    assert (tiled - full).abs().mean() <= 0.1 * full.abs().mean()
    assert not torch.allclose(tiled, full)
    # Each tile's causal cache makes the stream equal to decoding that tile's whole clip at once.
    torch.testing.assert_close(tiled, _per_tile_full_decode(vae, latents, 24, 6), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_with_tiles(vae, 96, 0.25).decode_tiled(latents), tiled, rtol=1e-4, atol=1e-4)


def _per_tile_full_decode(vae: CausalVAE, latents: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Reference: every tile decoded as a whole clip (no streaming), the same linear blend, then clamp."""
    sf, (h, w) = TINY.spatial_factor, latents.shape[-2:]
    out, weight = 0.0, torch.zeros(h * sf, w * sf)
    for y in tile_starts(h, tile, tile - overlap):
        for x in tile_starts(w, tile, tile - overlap):
            piece = vae.decoder(vae.unscale(latents[..., y : y + tile, x : x + tile]))  # unclamped
            wt = blend_ramp(tile * sf, overlap * sf, y > 0, y + tile < h, piece.device)[:, None]
            wt = wt * blend_ramp(tile * sf, overlap * sf, x > 0, x + tile < w, piece.device)[None, :]
            canvas = torch.zeros(*piece.shape[:3], h * sf, w * sf)
            canvas[..., y * sf : (y + tile) * sf, x * sf : (x + tile) * sf] = piece * wt
            out = out + canvas
            weight[y * sf : (y + tile) * sf, x * sf : (x + tile) * sf] += wt
    return (out / weight).clamp(-1.0, 1.0)


@torch.no_grad()
def test_tiles_keep_separate_causal_caches(vae: CausalVAE) -> None:
    tiled_vae = _with_tiles(vae, 96, 0.25)
    dec = tiled_vae.stream_decoder()
    for _ in range(2):
        dec.decode_next(torch.randn(1, 8, 1, 32, 32))
        assert len(dec.caches) == 4  # 2 x 2 tiles of 24 latents at offsets 0 and 8
    assert dec.frames_done == 5


def test_768p_vae_builds_on_meta_with_expected_parameter_count() -> None:
    cfg = VAEConfig()
    vae = CausalVAE(cfg, device="meta")
    assert all(p.is_meta for p in vae.parameters())
    assert decoder_upsampling(cfg) == [(True, True), (True, True), (True, True), (False, False)]
    assert sum(p.numel() for p in vae.parameters()) == _expected_params(cfg)


@torch.no_grad()
def test_768p_streaming_decoder_tiles_640x384_on_meta() -> None:
    vae = CausalVAE(VAEConfig(), device="meta", dtype=torch.bfloat16)
    dec = vae.stream_decoder()
    first = dec.decode_next(torch.empty(1, 16, 1, 48, 80, device="meta", dtype=torch.bfloat16))
    later = dec.decode_next(torch.empty(1, 16, 1, 48, 80, device="meta", dtype=torch.bfloat16))
    assert first.shape == (1, 3, 1, 384, 640) and later.shape == (1, 3, 8, 384, 640)
    assert later.dtype == torch.bfloat16
    assert len(dec.caches) == 6  # 32-latent (256 px) tiles, stride 24: rows [0, 16], columns [0, 24, 48]


def _conv(i: int, o: int, k: int = 3) -> int:
    return i * o * k**3 + o


def _resnet(i: int, o: int) -> int:
    return 2 * i + _conv(i, o) + 2 * o + _conv(o, o) + (_conv(i, o, 1) if i != o else 0)


def _expected_params(cfg: VAEConfig) -> int:
    enc, dec = cfg.encoder_channels, cfg.decoder_channels
    n = (
        _conv(3, enc[0])
        + _conv(dec[-1], 3)
        + _conv(enc[-1], 2 * cfg.latent_channels)
        + _conv(cfg.latent_channels, dec[0])
    )
    n += 2 * enc[-1] + 2 * dec[-1]  # output norms
    prev = enc[0]
    for i, ch in enumerate(enc):
        n += sum(_resnet(prev if j == 0 else ch, ch) for j in range(cfg.encoder_layers))
        n += _conv(ch, ch) if cfg.spatial_down[i] or cfg.temporal_down[i] else 0
        prev = ch
    n += 2 * _resnet(enc[-1], enc[-1]) + 2 * _resnet(dec[0], dec[0])  # mid blocks
    prev = dec[0]
    for i, ch in enumerate(dec):
        n += sum(_resnet(prev if j == 0 else ch, ch) for j in range(cfg.decoder_layers))
        n += _conv(ch, ch) if i < len(dec) - 1 else 0
        prev = ch
    return n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_frame_group_norm_per_frame_decode_path_equals_the_batched_training_path(
    dtype: torch.dtype, channels_last: bool
) -> None:
    """Without autograd FrameGroupNorm normalises one frame at a time (less fp32 memory); with autograd in one
    batched call. Both are the per-frame GroupNorm: the same values, dtype and memory layout."""
    torch.manual_seed(0)
    norm = FrameGroupNorm(4, 16, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = (torch.randn(2, 16, 5, 6, 7) * 3 + torch.arange(5).view(1, 1, 5, 1, 1)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        per_frame = norm(x)
    batched = norm(x.clone().requires_grad_(True)).detach()
    assert per_frame.dtype == batched.dtype == dtype
    assert per_frame.is_contiguous(memory_format=torch.channels_last_3d) == channels_last
    torch.testing.assert_close(per_frame, batched, rtol=0, atol=0)
    frame2 = torch.nn.functional.group_norm(x[:, :, 2].float(), 4, norm.weight, norm.bias, 1e-6).to(dtype)
    torch.testing.assert_close(per_frame[:, :, 2], frame2, rtol=0, atol=0)  # stats of frame 2 alone
