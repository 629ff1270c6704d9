"""Analytic peak GPU memory of one request, for admission control. Pure Python: no torch.

peak = weights (network + VAE + text encoders, at the serving dtype)
     + the context cache of the largest (unit, stage): K and V of every attention block for text + history
       tokens (an MM-DiM block keeps only its scan state), CONTEXT_CACHES_ALIVE copies of it
     + the working set of one step at that (unit, stage): the full sequence when uncached, the current frame
       when cached, ACTIVATION_WIDTHS hidden vectors per token (residual, QKV, attention out, MLP hidden)
     + the VAE's streaming decode: the working set of one tile (the decoder's widest feature map, a few live
       copies) and what every tile's causal convs keep between latent frames (model/vae_geometry.py; 15.5
       GiB at 768x1280 in 256 px tiles, 8.3 GiB in one tile)
     + CUDA context / allocator slack (a constant).
The model is deliberately coarse and on the safe side (it counts the cache and the step working set as
if they were alive at once); tests pin the parameter counts against the real modules, and the serving
path only needs to separate "fits on an 80 GB card" from "does not". tests/model/test_memory.py holds it above
every peak measured on an H100 (bench/results/*-e2e.jsonl).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.config import ModelConfig, NetworkConfig, TextConfig, VAEConfig
from model.flops import token_layout
from model.vae_geometry import decoder_upsampling, stream_cache_elements

CUDA_OVERHEAD_BYTES = 2 << 30  # CUDA context, cuBLAS/cuDNN workspaces, graph pools, allocator fragmentation
ACTIVATION_WIDTHS = 12  # hidden vectors alive per token in a block: x, norm, q, k, v, attn, 4x MLP, modulated
VAE_LIVE_COPIES = 5  # conv input, output, norm (fp32: two) and the residual of the widest decoder block
# the cache of the (unit, stage) being stepped and its [context | current] key buffer (sdpa_mask), the same
# two of the previous (unit, stage), which its captured graph holds until the next capture, and the next
# context pass's own K/V: 6 bounds the attention baseline's H100 peak (41.2 GB, 121 frames, run 5)
CONTEXT_CACHES_ALIVE = 6
SCAN_STATE_BYTES = 4  # Mamba2 states are fp32
TEXT_ENCODER_PARAMS = {"t5_clip": 4_762_310_656 + 123_060_480, "minilm": 22_713_216}  # T5-XXL enc + CLIP-L


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    context_cache: int
    activations: int
    vae_decode: int
    vae_stream_cache: int
    overhead: int

    @property
    def total(self) -> int:
        parts = (self.context_cache, self.activations, self.vae_decode, self.vae_stream_cache, self.overhead)
        return self.weights + sum(parts)

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "context_cache": self.context_cache,
            "activations": self.activations,
            "vae_decode": self.vae_decode,
            "vae_stream_cache": self.vae_stream_cache,
            "overhead": self.overhead,
            "total": self.total,
        }


def network_params(net: NetworkConfig, latent_channels: int, text_dim: int, pooled_dim: int) -> int:
    """Parameters of M4VNetwork (matmul weights; biases and norms are noise at this precision)."""
    d = net.width
    mlp = int(2 * net.mlp_ratio * d * d)
    attn = 4 * d * d  # qkv + output projection
    dual = 2 * (attn + mlp + 6 * d * d)  # two streams, each with its own adaLN (6 modulation vectors)
    if net.single_block == "mmdim":
        m = net.mamba
        mixer = d * m.in_proj_width(d) + m.d_inner(d) * d
    else:
        mixer = attn
    temporal = 4 * d * (net.temporal_heads * net.head_dim)  # q, k, v, out at temporal width
    single = mixer + mlp + 3 * d * d + temporal
    patch = latent_channels * net.patch_size**2 * d * 2  # patch embed + final layer
    embeds = text_dim * d + pooled_dim * d + 2 * 256 * d + 2 * d * d  # text, pooled, timestep MLPs
    return net.num_dual_blocks * dual + net.num_single_blocks * single + patch + embeds


def vae_decoder_params(vae: VAEConfig) -> int:
    """3x3x3 convolutions: in/out, the middle block's two residual layers, two per residual layer of each
    stage and one re-sampling convolution per up-sampling stage (PyramidFlow's VAE: to 4x channels for space,
    2x for time, plus the mid-block attention)."""
    chans = vae.decoder_channels
    total = 27 * vae.latent_channels * chans[0] + 27 * chans[-1] * vae.in_channels + 4 * 27 * chans[0] ** 2
    ups = sum(s or t for s, t in zip(vae.spatial_down, vae.temporal_down, strict=True))
    flags = decoder_upsampling(vae)
    prev = chans[0]
    for i, c in enumerate(chans):
        total += 27 * (prev * c + c * c * (2 * vae.decoder_layers - 1))
        if vae.kind == "pyramidflow":  # conv to 4x channels (pixel shuffle), to 2x channels (frames)
            total += 27 * c * c * (4 * flags[i][0] + 2 * flags[i][1])
        else:
            total += 27 * c * c if i < ups else 0
        prev = c
    if vae.kind == "pyramidflow":  # mid-block attention (q, k, v, out), post-quant conv
        total += 4 * chans[0] ** 2 + vae.latent_channels**2
    return total


def text_params(text: TextConfig) -> int:
    return TEXT_ENCODER_PARAMS[text.kind]


def estimate_peak_memory(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    dtype_bytes: int = 2,
    cfg_batch: int = 2,
    cached: bool = True,
    vae_tile_px: int | None = None,
) -> MemoryEstimate:
    """Peak device memory (bytes) of one request on a worker serving `cfg` at `dtype_bytes` per element;
    vae_tile_px: the worker's decode tile size (RuntimeOptions.vae_tile_px; None: the VAE's own)."""
    net = cfg.network
    weights = (
        network_params(net, cfg.vae.latent_channels, cfg.text.token_dim, cfg.text.pooled_dim)
        + vae_decoder_params(cfg.vae)
        + text_params(cfg.text)
    ) * dtype_bytes
    last_unit = cfg.latent_frames(num_frames) - 1
    top = cfg.sampler.num_stages - 1
    layout = token_layout(cfg, width=width, height=height, unit=last_unit, stage=top)
    mmdim = net.single_block == "mmdim"
    attention_blocks = net.num_dual_blocks + (0 if mmdim else net.num_single_blocks)
    context_tokens = layout.text + layout.context_video
    kv = 2 * cfg_batch * context_tokens * net.width * attention_blocks * dtype_bytes
    m = net.mamba
    state = cfg_batch * m.nheads(net.width) * m.headdim * m.d_state * SCAN_STATE_BYTES
    scan = net.num_single_blocks * state if mmdim else 0
    cache = CONTEXT_CACHES_ALIVE * (kv + scan) if cached else 0
    step_tokens = layout.current if cached else layout.text + layout.video
    acts = cfg_batch * step_tokens * net.width * ACTIVATION_WIDTHS * dtype_bytes
    vcfg = cfg.vae if vae_tile_px is None else dataclasses.replace(cfg.vae, tile_px=vae_tile_px)
    tile = min(vcfg.tile_px, width) * min(vcfg.tile_px, height)
    vae = tile * max(vcfg.decoder_channels) * vcfg.temporal_factor * VAE_LIVE_COPIES * dtype_bytes
    sf = vcfg.spatial_factor
    stream = stream_cache_elements(vcfg, height // sf, width // sf) * dtype_bytes
    return MemoryEstimate(weights, cache, acts, vae, stream, CUDA_OVERHEAD_BYTES)
