"""Scaled-down 768p-shaped presets: attn-768p's / m4v-768p's config (context mode, schedule, prompt handling,
PyramidFlow VAE kind and scale factors) with every size made small (the VAE /4 in space and time like the
tiny preset's) and a T5+CLIP encoder of the widths of tests/tiny_text_models.py."""

from __future__ import annotations

import dataclasses

from model.config import MambaConfig, ModelConfig, NetworkConfig, TextConfig, get_preset
from tests.tiny_text_models import CLIP_DIM, T5_DIM


def small_768p(single_block: str = "attention") -> ModelConfig:
    big = get_preset("attn-768p" if single_block == "attention" else "m4v-768p")
    net = NetworkConfig(
        width=64,
        heads=4,
        num_dual_blocks=2,
        num_single_blocks=2,
        single_block=single_block,  # type: ignore[arg-type]
        rope_axes=(4, 6, 6),
        temporal_heads=4,
        max_latent_frames=8,
        context_mode=big.network.context_mode,
        mamba=MambaConfig(d_state=16, headdim=16, chunk_size=32),
    )
    vae = dataclasses.replace(  # PyramidFlow's VAE kind at the tiny preset's /4 x /4 shape
        big.vae,
        latent_channels=8,
        encoder_channels=(16, 32, 32),
        decoder_channels=(32, 32, 16),
        encoder_layers=1,
        decoder_layers=1,
        spatial_down=(True, True, False),
        temporal_down=(True, True, False),
        norm_groups=8,
        tile_px=128,
    )
    return dataclasses.replace(
        big,
        name=f"small-{big.name}",
        network=net,
        vae=vae,
        text=TextConfig(token_dim=T5_DIM, pooled_dim=CLIP_DIM, max_tokens=8),
        resolutions=((128, 128),),
        max_frames=17,
        default_frames=9,
        default_fps=8,
    )
