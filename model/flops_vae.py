"""FLOPs of the VAE decode and the text encoders (part of model/flops.py's request estimate). Pure Python.

Same conventions as model/flops.py: 2 FLOPs per multiply-add, matmul-like work only (convolutions here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model.vae_geometry import decoder_upsampling, tile_sizes

if TYPE_CHECKING:
    from model.config import TextConfig, VAEConfig


def _conv3d(c_in: int, c_out: int, kernel: int, pixels: int, frames: int) -> float:
    return 2.0 * frames * pixels * c_out * c_in * kernel**3


def _decoder_flops(vae: VAEConfig, h: int, w: int, latent_frames: int) -> float:
    """model/vae.py Decoder (or PyramidFlow's, VAEConfig.kind) on an (h, w) latent tile, `latent_frames`
    frames decoded causally (first alone).

    A level whose temporal up-sampling factor so far is m holds 1 + m * (latent_frames - 1) frames.
    """
    chs, g_layers = vae.decoder_channels, vae.decoder_layers
    pixels, m = h * w, 1

    def frames(mult: int) -> int:
        return 1 + mult * (latent_frames - 1)

    total = _conv3d(vae.latent_channels, chs[0], 3, pixels, frames(m))
    total += 2 * 2 * _conv3d(chs[0], chs[0], 3, pixels, frames(m))  # mid: 2 ResNet blocks
    pf = vae.kind == "pyramidflow"
    if pf:  # post-quant 1x1x1 conv; mid-block attention per frame: q, k, v, out and the pixel x pixel core
        total += _conv3d(vae.latent_channels, vae.latent_channels, 1, pixels, frames(m))
        total += frames(m) * (2.0 * 4 * pixels * chs[0] ** 2 + 2.0 * 2 * pixels**2 * chs[0])
    prev = chs[0]
    for ch, (spatial, temporal) in zip(chs, decoder_upsampling(vae), strict=True):
        for j in range(g_layers):
            c_in = prev if j == 0 else ch
            total += _conv3d(c_in, ch, 3, pixels, frames(m)) + _conv3d(ch, ch, 3, pixels, frames(m))
            if c_in != ch:
                total += _conv3d(c_in, ch, 1, pixels, frames(m))
        if pf:  # PyramidFlow: conv to 4x channels then pixel shuffle; conv to 2x channels then interleave
            total += _conv3d(ch, 4 * ch, 3, pixels, frames(m)) if spatial else 0.0
            pixels *= 4 if spatial else 1
            total += _conv3d(ch, 2 * ch, 3, pixels, frames(m)) if temporal else 0.0
            m *= 2 if temporal else 1
        else:
            pixels *= 4 if spatial else 1
            m *= 2 if temporal else 1
            if spatial or temporal:
                total += _conv3d(ch, ch, 3, pixels, frames(m))
        prev = ch
    return total + _conv3d(prev, vae.in_channels, 3, pixels, frames(m))


def vae_decode_flops(
    vae: VAEConfig, *, latent_h: int, latent_w: int, latent_frames: int, tiled: bool = True
) -> float:
    """Decode of one video (batch 1) as StreamingDecoder does it: overlapping spatial tiles, each decoded
    whole (tile overlap is recomputed: 28 tiles of 32x32 latents at 768x1280, 1.87x the frame area)."""
    if not tiled:
        return _decoder_flops(vae, latent_h, latent_w, latent_frames)
    return sum(_decoder_flops(vae, th, tw, latent_frames) for th, tw in tile_sizes(vae, latent_h, latent_w))


# Linear-layer weights applied per token (non-embedding), per prompt: T5-XXL encoder (24 layers, d 4096,
# gated FFN 10240) + CLIP-L text (12 layers, d 768, FFN 3072, 77 tokens); all-MiniLM-L6-v2 (6 layers, d 384).
_TEXT_ENCODERS: dict[str, list[tuple[float, int | None]]] = {
    "t5_clip": [(24 * (4 * 4096**2 + 3 * 4096 * 10240), None), (12 * (4 * 768**2 + 2 * 768 * 3072), 77)],
    "minilm": [(6 * (4 * 384**2 + 2 * 384 * 1536), None)],
}


def text_encoder_flops(text: TextConfig, prompts: int = 2) -> float:
    """Approximate: 2 * linear weights * tokens (attention cores ignored, < 3% at 128 tokens)."""
    total = 0.0
    for weights, tokens in _TEXT_ENCODERS.get(text.kind, []):
        total += 2 * weights * (tokens or text.max_tokens) * prompts
    return total
