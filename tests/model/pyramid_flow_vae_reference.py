"""Test-only: PyramidFlow's causal video VAE decode written directly against its state-dict layout
(video_vae/modeling_causal_vae.py decode without chunking or tiling, modeling_enc_dec.py CausalVaeDecoder,
modeling_block.py CausalUNetMidBlock2D / UpDecoderBlockCausal3D, modeling_resnet.py CausalResnetBlock3D /
CausalUpsample2x / CausalTemporalUpsample2x, modeling_causal_conv.py CausalConv3d / CausalGroupNorm, and
diffusers' Attention with a group norm; jy0205/Pyramid-Flow 3040d717b0ef48f0dfb10d0eb9f3c1d0b55442e0).
Nothing here imports model/vae.py or model/pyramid_flow/."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def pf_vae_config(
    latent: int, block_out: list[int], layers: int, groups: int, spatial: list[bool], temporal: list[bool]
) -> dict[str, Any]:
    n = len(block_out)
    return {
        "_class_name": "CausalVideoVAE",
        "encoder_in_channels": 3,
        "encoder_out_channels": latent,
        "encoder_block_out_channels": block_out,
        "encoder_layers_per_block": [2] * n,
        "decoder_in_channels": latent,
        "decoder_out_channels": 3,
        "decoder_block_out_channels": block_out,
        "decoder_layers_per_block": [layers] * n,
        "decoder_spatial_up_sample": spatial,
        "decoder_temporal_up_sample": temporal,
        "decoder_norm_num_groups": groups,
        "encoder_norm_num_groups": groups,
        "add_post_quant_conv": True,
    }


def pf_vae_state_dict(c: dict[str, Any], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}

    def conv(name: str, out: int, inp: int, k: int = 3) -> None:
        fan = inp * k**3
        sd[f"{name}.conv.weight"] = torch.randn(out, inp, k, k, k, generator=g) / fan**0.5
        sd[f"{name}.conv.bias"] = torch.randn(out, generator=g) * 0.05

    def norm(name: str, ch: int) -> None:
        sd[f"{name}.weight"] = 1 + torch.randn(ch, generator=g) * 0.1
        sd[f"{name}.bias"] = torch.randn(ch, generator=g) * 0.1

    def lin(name: str, ch: int) -> None:
        sd[f"{name}.weight"] = torch.randn(ch, ch, generator=g) / ch**0.5
        sd[f"{name}.bias"] = torch.randn(ch, generator=g) * 0.05

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.conv_shortcut", cout, cin, k=1)

    lat, chs = c["encoder_out_channels"], list(reversed(c["decoder_block_out_channels"]))
    # encoder side (only to be dropped by the converter): a few tensors under its real names
    conv("encoder.conv_in", c["encoder_block_out_channels"][0], 3)
    conv("encoder.conv_out", 2 * lat, c["encoder_block_out_channels"][-1])
    conv("quant_conv", 2 * lat, 2 * lat, k=1)
    conv("post_quant_conv", lat, lat, k=1)
    conv("decoder.conv_in", chs[0], lat)
    for r in range(2):
        resnet(f"decoder.mid_block.resnets.{r}", chs[0], chs[0])
    a = "decoder.mid_block.attentions.0"
    norm(f"{a}.group_norm", chs[0])
    for n in ("to_q", "to_k", "to_v", "to_out.0"):
        lin(f"{a}.{n}", chs[0])
    prev = chs[0]
    for i, ch in enumerate(chs):
        for j in range(c["decoder_layers_per_block"][i]):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", prev if j == 0 else ch, ch)
        if c["decoder_spatial_up_sample"][i]:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", 4 * ch, ch)
        if c["decoder_temporal_up_sample"][i]:
            conv(f"decoder.up_blocks.{i}.temporal_upsamplers.0.conv", 2 * ch, ch)
        prev = ch
    norm("decoder.conv_norm_out", prev)
    conv("decoder.conv_out", 3, prev)
    return sd


def _conv(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    w = sd[f"{name}.conv.weight"]
    k = w.shape[-1]
    x = F.pad(x, (k // 2, k // 2, k // 2, k // 2, k - 1, 0))  # causal: zeros before frame 0
    return F.conv3d(x, w, sd[f"{name}.conv.bias"])


def _gn(sd: dict[str, Tensor], name: str, x: Tensor, groups: int) -> Tensor:
    t = x.shape[2]
    y = rearrange(x, "b c t h w -> (b t) c h w")
    y = F.group_norm(y, groups, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)
    return rearrange(y, "(b t) c h w -> b c t h w", t=t)


def _resnet(sd: dict[str, Tensor], name: str, x: Tensor, groups: int) -> Tensor:
    h = _conv(sd, f"{name}.conv1", F.silu(_gn(sd, f"{name}.norm1", x, groups)))
    h = _conv(sd, f"{name}.conv2", F.silu(_gn(sd, f"{name}.norm2", h, groups)))
    if f"{name}.conv_shortcut.conv.weight" in sd:
        x = _conv(sd, f"{name}.conv_shortcut", x)
    return x + h


def _attention(sd: dict[str, Tensor], name: str, x: Tensor, groups: int) -> Tensor:
    b, c, t, h, w = x.shape
    y = rearrange(x, "b c t h w -> (b t) c (h w)")
    n = F.group_norm(y, groups, sd[f"{name}.group_norm.weight"], sd[f"{name}.group_norm.bias"], eps=1e-6)
    n = n.transpose(1, 2)  # (bt, hw, c)
    q, k, v = (
        F.linear(n, sd[f"{name}.{p}.weight"], sd[f"{name}.{p}.bias"]) for p in ("to_q", "to_k", "to_v")
    )
    scores = (q @ k.transpose(1, 2)) / c**0.5
    out = scores.softmax(dim=-1) @ v
    out = F.linear(out, sd[f"{name}.to_out.0.weight"], sd[f"{name}.to_out.0.bias"])
    return x + rearrange(out, "(b t) (h w) c -> b c t h w", b=b, t=t, h=h, w=w)


def pf_vae_decode(sd: dict[str, Tensor], c: dict[str, Any], z: Tensor) -> Tensor:
    """Unscaled latents (B, C, T, h, w) -> video, as CausalVideoVAE.decode(z, is_init_image=True)."""
    g = c["decoder_norm_num_groups"]
    x = _conv(sd, "post_quant_conv", z)
    x = _conv(sd, "decoder.conv_in", x)
    x = _resnet(sd, "decoder.mid_block.resnets.0", x, g)
    x = _attention(sd, "decoder.mid_block.attentions.0", x, g)
    x = _resnet(sd, "decoder.mid_block.resnets.1", x, g)
    for i in range(len(c["decoder_block_out_channels"])):
        for j in range(c["decoder_layers_per_block"][i]):
            x = _resnet(sd, f"decoder.up_blocks.{i}.resnets.{j}", x, g)
        if c["decoder_spatial_up_sample"][i]:
            x = _conv(sd, f"decoder.up_blocks.{i}.upsamplers.0.conv", x)
            x = rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=2, p2=2)
        if c["decoder_temporal_up_sample"][i]:
            x = _conv(sd, f"decoder.up_blocks.{i}.temporal_upsamplers.0.conv", x)
            x = rearrange(x, "b (c p) t h w -> b c (t p) h w", p=2)[:, :, 1:]
    x = F.silu(_gn(sd, "decoder.conv_norm_out", x, g))
    return _conv(sd, "decoder.conv_out", x)
