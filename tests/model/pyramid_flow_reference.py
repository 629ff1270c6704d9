"""Test-only: PyramidFlow-miniFLUX's DiT written directly against its own state-dict layout.

A state dict with PyramidFlow's exact key names and shapes (scaled-down dims), its config.json, and a forward
pass that reads those tensors by their PyramidFlow names, transcribing pyramid_dit/flux_modules
(modeling_pyramid_flux.py merge_input/forward, modeling_flux_block.py, modeling_normalization.py,
modeling_embedding.py) at jy0205/Pyramid-Flow 3040d717b0ef48f0dfb10d0eb9f3c1d0b55442e0. Nothing here imports
model/network.py: it is the other side of the comparison.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

P = 2  # PyramidFlow hard-codes patch size 2


def pf_dit_config(
    *,
    layers: int,
    single_layers: int,
    heads: int,
    head_dim: int,
    text_dim: int,
    pooled_dim: int,
    latent_ch: int,
) -> dict[str, Any]:
    return {
        "_class_name": "PyramidFluxTransformer",
        "patch_size": 1,
        "in_channels": latent_ch * P * P,
        "num_layers": layers,
        "num_single_layers": single_layers,
        "attention_head_dim": head_dim,
        "num_attention_heads": heads,
        "joint_attention_dim": text_dim,
        "pooled_projection_dim": pooled_dim,
        "axes_dims_rope": [16, 24, 24],  # as published (the scaled test overrides it, see pf_dit_state_dict)
        "use_flash_attn": False,
        "use_temporal_causal": True,
        "interp_condition_pos": True,
    }


def pf_dit_state_dict(c: dict[str, Any], seed: int = 0, std: float = 0.08) -> dict[str, Tensor]:
    """Random tensors under PyramidFlow's key names and shapes for config c (non-zero adaLN, unlike its
    zero init, so every path matters)."""
    g = torch.Generator().manual_seed(seed)
    d = c["num_attention_heads"] * c["attention_head_dim"]
    hd = c["attention_head_dim"]
    sd: dict[str, Tensor] = {}

    def lin(name: str, out: int, inp: int) -> None:
        sd[f"{name}.weight"] = torch.randn(out, inp, generator=g) * std
        sd[f"{name}.bias"] = torch.randn(out, generator=g) * std

    def rms(name: str) -> None:
        sd[f"{name}.weight"] = 1.0 + torch.randn(hd, generator=g) * 0.1

    lin("time_text_embed.timestep_embedder.linear_1", d, 256)
    lin("time_text_embed.timestep_embedder.linear_2", d, d)
    lin("time_text_embed.text_embedder.linear_1", d, c["pooled_projection_dim"])
    lin("time_text_embed.text_embedder.linear_2", d, d)
    lin("context_embedder", d, c["joint_attention_dim"])
    lin("x_embedder", d, c["in_channels"])
    for i in range(c["num_layers"]):
        b = f"transformer_blocks.{i}"
        lin(f"{b}.norm1.linear", 6 * d, d)
        lin(f"{b}.norm1_context.linear", 6 * d, d)
        for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            lin(f"{b}.attn.{n}", d, d)
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            rms(f"{b}.attn.{n}")
        for ff in ("ff", "ff_context"):
            lin(f"{b}.{ff}.net.0.proj", 4 * d, d)
            lin(f"{b}.{ff}.net.2", d, 4 * d)
    for i in range(c["num_single_layers"]):
        b = f"single_transformer_blocks.{i}"
        lin(f"{b}.norm.linear", 3 * d, d)
        lin(f"{b}.proj_mlp", 4 * d, d)
        lin(f"{b}.proj_out", d, 5 * d)
        for n in ("to_q", "to_k", "to_v"):
            lin(f"{b}.attn.{n}", d, d)
        rms(f"{b}.attn.norm_q")
        rms(f"{b}.attn.norm_k")
    lin("norm_out.linear", 2 * d, d)
    lin("proj_out", c["in_channels"], d)
    return sd


def _linear(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _ln(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _rms(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    var = x.float().pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + 1e-6) * sd[f"{name}.weight"]


def _time_proj(t: Tensor, dim: int = 256) -> Tensor:
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
    emb = t[:, None].float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)  # flip_sin_to_cos


def _rope(pos: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    scale = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    omega = 1.0 / theta**scale
    out = pos.double()[..., None] * omega  # (L, dim/2)
    stacked = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return stacked.view(*out.shape, 2, 2).float()  # (L, dim/2, 2, 2)


def _apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """x (B, L, H, Dh), freqs (L, Dh/2, 2, 2)."""
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)  # (B, L, H, Dh/2, 1, 2)
    f = freqs[None, :, None]  # (1, L, 1, Dh/2, 2, 2)
    out = f[..., 0] * x_[..., 0] + f[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def _positions(clips: list[Tensor]) -> Tensor:
    """merge_input/_prepare_image_ids: time stamps count frames; rows/cols interpolated onto the last clip's
    token grid (F.interpolate linear, align_corners False)."""
    train_h, train_w = clips[-1].shape[-2] // P, clips[-1].shape[-1] // P
    ids, start = [], 0
    for clip in clips:
        _, _, temp, h, w = clip.shape
        h, w = h // P, w // P
        pos = torch.zeros(temp, h, w, 3)
        pos[..., 0] += torch.arange(start, start + temp)[:, None, None]
        hp = torch.arange(train_h).float()
        if h != train_h:
            hp = F.interpolate(hp[None, None], h, mode="linear").squeeze(0, 1)
        wp = torch.arange(train_w).float()
        if w != train_w:
            wp = F.interpolate(wp[None, None], w, mode="linear").squeeze(0, 1)
        pos[..., 1] += hp[None, :, None]
        pos[..., 2] += wp[None, None, :]
        ids.append(pos.reshape(-1, 3))
        start += temp
    return torch.cat(ids)


def pf_forward(
    sd: dict[str, Tensor],
    c: dict[str, Any],
    clips: list[Tensor],
    tokens: Tensor,
    mask: Tensor,
    pooled: Tensor,
    timestep: Tensor,
) -> Tensor:
    """One PyramidFlow DiT call on one stage's [history clips..., current] (each (B, C, T, h, w)); returns the
    prediction for the current clip (B, C, T, h, w)."""
    heads, hd = c["num_attention_heads"], c["attention_head_dim"]
    axes = c["axes_dims_rope"]
    b = tokens.shape[0]
    temb = _linear(
        sd,
        "time_text_embed.timestep_embedder.linear_2",
        F.silu(_linear(sd, "time_text_embed.timestep_embedder.linear_1", _time_proj(timestep))),
    )
    temb = temb + _linear(
        sd,
        "time_text_embed.text_embedder.linear_2",
        F.silu(_linear(sd, "time_text_embed.text_embedder.linear_1", pooled)),
    )
    enc = _linear(sd, "context_embedder", tokens)
    lt = enc.shape[1]
    vid = [rearrange(x, "b c t (h p1) (w p2) -> b (t h w) (p1 p2 c)", p1=P, p2=P) for x in clips]
    n_cur = vid[-1].shape[1]
    x = _linear(sd, "x_embedder", torch.cat(vid, dim=1))
    lv = x.shape[1]
    # RoPE over [text (position 0); video]
    ids = torch.cat([torch.zeros(lt, 3), _positions(clips)])
    freqs = torch.cat([_rope(ids[:, i], axes[i]) for i in range(3)], dim=-3)  # (L, Dh/2, 2, 2)
    # attention mask: equal ids (text padding 0, valid text and video b+1), and temporal causal
    row = torch.arange(1, b + 1)[:, None]
    tok_ids = torch.cat([torch.where(mask, row, 0), row.expand(b, lv)], dim=1)
    am = tok_ids[:, None, :, None] == tok_ids[:, None, None, :]
    order = ids[:, 0]
    am = am & (order[:, None] >= order[None, :])[None, None]

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # (B, L, H, Dh) each
        q, k = _apply_rope(q, freqs), _apply_rope(k, freqs)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=am
        )
        return out.transpose(1, 2).flatten(2, 3)

    def heads_of(t: Tensor) -> Tensor:
        return t.view(t.shape[0], -1, heads, hd)

    for i in range(c["num_layers"]):
        p = f"transformer_blocks.{i}"
        e = _linear(sd, f"{p}.norm1.linear", F.silu(temb))[:, None].chunk(6, dim=-1)
        ec = _linear(sd, f"{p}.norm1_context.linear", F.silu(temb))[:, None].chunk(6, dim=-1)
        nx = _ln(x) * (1 + e[1]) + e[0]
        ne = _ln(enc) * (1 + ec[1]) + ec[0]
        q = _rms(sd, f"{p}.attn.norm_q", heads_of(_linear(sd, f"{p}.attn.to_q", nx)))
        k = _rms(sd, f"{p}.attn.norm_k", heads_of(_linear(sd, f"{p}.attn.to_k", nx)))
        v = heads_of(_linear(sd, f"{p}.attn.to_v", nx))
        qc = _rms(sd, f"{p}.attn.norm_added_q", heads_of(_linear(sd, f"{p}.attn.add_q_proj", ne)))
        kc = _rms(sd, f"{p}.attn.norm_added_k", heads_of(_linear(sd, f"{p}.attn.add_k_proj", ne)))
        vc = heads_of(_linear(sd, f"{p}.attn.add_v_proj", ne))
        out = attend(torch.cat([qc, q], 1), torch.cat([kc, k], 1), torch.cat([vc, v], 1))
        x = x + e[2] * _linear(sd, f"{p}.attn.to_out.0", out[:, lt:])
        enc = enc + ec[2] * _linear(sd, f"{p}.attn.to_add_out", out[:, :lt])
        for stream, m, ff in ((0, e, "ff"), (1, ec, "ff_context")):
            h = x if stream == 0 else enc
            hn = _ln(h) * (1 + m[4]) + m[3]
            y = _linear(
                sd, f"{p}.{ff}.net.2", F.gelu(_linear(sd, f"{p}.{ff}.net.0.proj", hn), approximate="tanh")
            )
            if stream == 0:
                x = h + m[5] * y
            else:
                enc = h + m[5] * y
    s = torch.cat([enc, x], dim=1)
    for i in range(c["num_single_layers"]):
        p = f"single_transformer_blocks.{i}"
        e = _linear(sd, f"{p}.norm.linear", F.silu(temb))[:, None].chunk(3, dim=-1)
        ns = _ln(s) * (1 + e[1]) + e[0]
        mlp = F.gelu(_linear(sd, f"{p}.proj_mlp", ns), approximate="tanh")
        q = _rms(sd, f"{p}.attn.norm_q", heads_of(_linear(sd, f"{p}.attn.to_q", ns)))
        k = _rms(sd, f"{p}.attn.norm_k", heads_of(_linear(sd, f"{p}.attn.to_k", ns)))
        v = heads_of(_linear(sd, f"{p}.attn.to_v", ns))
        s = s + e[2] * _linear(sd, f"{p}.proj_out", torch.cat([attend(q, k, v), mlp], dim=2))
    x = s[:, lt:]
    scale, shift = _linear(sd, "norm_out.linear", F.silu(temb)).chunk(2, dim=1)
    x = _ln(x) * (1 + scale[:, None]) + shift[:, None]
    x = _linear(sd, "proj_out", x)[:, -n_cur:]
    _, ch, t, h, w = clips[-1].shape
    return rearrange(x, "b (t h w) (p1 p2 c) -> b c t (h p1) (w p2)", t=t, h=h // P, w=w // P, p1=P, p2=P)
