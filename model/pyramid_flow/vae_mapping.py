"""PyramidFlow's causal video VAE (causal_video_vae/) onto our VAE of kind "pyramidflow".

Our decoder (model/pyramid_flow/vae_decoder.py) uses PyramidFlow's module names, so decoder tensors keep
their names; the post-quant conv moves under the decoder. The encoder and the quant conv are dropped: serving
decodes only, and that encoder is not ported.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from model.config import VAEConfig
from model.vae import decoder_upsampling

ENCODER_DROPPED = "VAE encoder side (encoder.*, quant_conv): serving decodes only; not ported"


# diffusers' pre-0.13 names of the attention block's projections, which its loader still accepts
LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def vae_source_key(target: str, available: Container[str] | None = None) -> str:
    """Our key without the "vae." prefix -> PyramidFlow's key (the legacy attention names where the checkpoint
    has those instead)."""
    if target.startswith("decoder.post_quant_conv."):
        return target[len("decoder.") :]
    if available is not None and target not in available and ".attentions." in target:
        for new, old in LEGACY_ATTENTION.items():
            legacy = target.replace(f".{new}.", f".{old}.")
            if legacy != target and legacy in available:
                return legacy
    return target


def is_encoder_side(source: str) -> bool:
    return source.startswith(("encoder.", "quant_conv."))


def check_vae_config(pf: dict[str, Any], cfg: VAEConfig, preset: str, where: str) -> None:
    """PyramidFlow's VAE config.json against the preset's VAE; a mismatch names the field and both values."""
    ups = decoder_upsampling(cfg)
    want: dict[str, Any] = {
        "encoder_out_channels": cfg.latent_channels,
        "decoder_out_channels": cfg.in_channels,
        "decoder_block_out_channels": list(reversed(cfg.decoder_channels)),
        "decoder_layers_per_block": [cfg.decoder_layers] * len(cfg.decoder_channels),
        "decoder_spatial_up_sample": [sp for sp, _ in ups],
        "decoder_temporal_up_sample": [tm for _, tm in ups],
        "decoder_norm_num_groups": cfg.norm_groups,
    }
    for key, value in want.items():
        if key not in pf:
            raise ValueError(f"{where}: no {key!r} (a CausalVideoVAE config.json?)")
        got = list(pf[key]) if isinstance(pf[key], list | tuple) else pf[key]
        if got != value:
            raise ValueError(f"{where}: {key} is {got!r}, preset {preset!r} needs {value!r}")
