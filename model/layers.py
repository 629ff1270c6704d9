"""Building blocks shared by the M4V blocks: embeddings, norms, adaLN modulation, masked attention, patches.

Modelled on FLUX (black-forest-labs/flux, modules/layers.py); the one addition is split modulation: in
context_mode "causal" the context tokens (text, history frames) are modulated with the clean conditioning
c(t=0) and only the trailing tokens of the frame being denoised with c(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

TIME_EMBED_DIM = 256


def timestep_embedding(t: Tensor, dim: int = TIME_EMBED_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of t (B,) -> (B, dim) in fp32; t is already sigma * 1000 (FLUX scales inside)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, device=device, dtype=dtype)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.in_layer.weight.dtype)
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, result cast back to the input dtype."""

    def __init__(self, dim: int, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim, device=device, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        rrms = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        return (xf * rrms * self.scale).to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, head_dim: int, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.query_norm = RMSNorm(head_dim, device=device)
        self.key_norm = RMSNorm(head_dim, device=device)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q), self.key_norm(k)


def layer_norm(x: Tensor) -> Tensor:
    """Affine-free LayerNorm in fp32 (the adaLN modulation supplies scale and shift)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=1e-6).to(x.dtype)


@dataclass
class ModOut:
    shift: Tensor  # (B, 1, D)
    scale: Tensor  # (B, 1, D)
    gate: Tensor  # (B, 1, D)


class Modulation(nn.Module):
    """adaLN: c -> `count` (shift, scale, gate) triples."""

    def __init__(
        self,
        dim: int,
        count: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.count = count
        self.lin = nn.Linear(dim, 3 * count * dim, device=device, dtype=dtype)

    def forward(self, vec: Tensor) -> list[ModOut]:
        out = self.lin(F.silu(vec.to(self.lin.weight.dtype)))[:, None, :].chunk(3 * self.count, dim=-1)
        return [ModOut(*out[3 * i : 3 * i + 3]) for i in range(self.count)]


@dataclass
class Conditioning:
    """Conditioning of one forward: the last `n_cur` tokens of a sequence get `cur`, the rest `ctx`."""

    ctx: Tensor  # (B, D) c for context tokens (c(t=0) in "causal" mode, c(t) in "paper" mode)
    cur: Tensor  # (B, D) c(t) for the frame being denoised


def _split(x: Tensor, n_cur: int) -> tuple[Tensor, Tensor]:
    # split, not two slices: in training, each slice's backward zero-fills a gradient of all L tokens and
    # autograd adds them; split's backward is one concatenation (the step's profile: 7% in slice zero-fill)
    a, b = x.split([x.shape[1] - n_cur, n_cur], dim=1)
    return a, b


def modulate(x: Tensor, n_cur: int, ctx: ModOut, cur: ModOut) -> Tensor:
    """x (B, L, D) -> x * (1 + scale) + shift, with `cur` on the last n_cur tokens and `ctx` on the rest."""
    if n_cur == 0:
        return x * (1 + ctx.scale) + ctx.shift
    if n_cur == x.shape[1]:
        return x * (1 + cur.scale) + cur.shift
    a, b = _split(x, n_cur)
    return torch.cat([a * (1 + ctx.scale) + ctx.shift, b * (1 + cur.scale) + cur.shift], dim=1)


def gate(y: Tensor, n_cur: int, ctx: ModOut, cur: ModOut) -> Tensor:
    """y (B, L, D) * gate, split like `modulate`."""
    if n_cur == 0:
        return y * ctx.gate
    if n_cur == y.shape[1]:
        return y * cur.gate
    a, b = _split(y, n_cur)
    return torch.cat([a * ctx.gate, b * cur.gate], dim=1)


def split_heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, L, 3*H*Dh) -> q, k, v each (B, H, L, Dh)."""
    q, k, v = rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=heads)
    return q, k, v


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """q (B, H, Lq, Dh), k/v (B, H, Lk, Dh), mask bool (B, 1, Lq|1, Lk) True = may attend -> (B, Lq, H*Dh)."""
    out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
    return rearrange(out, "B H L D -> B L (H D)")


class LastLayer(nn.Module):
    """adaLN LayerNorm + Linear to patch pixels, for the current frame's tokens (modulated with c(t))."""

    def __init__(
        self,
        dim: int,
        patch_size: int,
        out_channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels, device=device, dtype=dtype)
        self.adaLN_modulation = nn.Linear(dim, 2 * dim, device=device, dtype=dtype)

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(F.silu(vec.to(x.dtype))).chunk(2, dim=-1)  # (B, D) each
        x = layer_norm(x) * (1 + scale[:, None, :]) + shift[:, None, :]
        return self.linear(x)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, h, w) -> (B, (h/p)*(w/p), C*p*p), raster order."""
    return rearrange(x, "B C (h p) (w q) -> B (h w) (C p q)", p=p, q=p)


def unpatchify(tokens: Tensor, grid: tuple[int, int], p: int) -> Tensor:
    """(B, gh*gw, C*p*p) -> (B, C, gh*p, gw*p)."""
    return rearrange(tokens, "B (h w) (C p q) -> B C (h p) (w q)", h=grid[0], w=grid[1], p=p, q=p)
