"""Temporal branch of the MM-DiM block: light causal attention over time on a coarse grid [paper figure].

Each frame's video tokens are average-pooled to the lowest pyramid grid (full token grid / 2**(stages-1):
4x4 for tiny, 12x20 at 768p), every pooled location attends causally over frames (1D RoPE on the frame
index), and the result is nearest-upsampled back to each frame's grid. The output projection starts at zero
so a freshly added branch leaves the block unchanged. Light in parameters too [decided]: heads of the
network's head dim (8 x 64 = 512 wide at 768p, not 1920): 16 branches add ~63M parameters, not ~236M.
The context pass returns the history frames' keys/values; forward_cached runs only the current frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model.layers import QKNorm
from model.rope import apply_rope, rope_table


@dataclass
class TemporalKV:
    k: Tensor  # (B*P, H, T, Dh) keys of the history frames, after QK-norm and RoPE
    v: Tensor  # (B*P, H, T, Dh)
    # (1, 1, 1, T) bool, False on padding: set when T is a capacity, not the history length (fixed shapes)
    mask: Tensor | None = None


def pool_frame(tokens: Tensor, grid: tuple[int, int], pool: tuple[int, int]) -> Tensor:
    """(B, gh*gw, D) -> (B, ph*pw, D) average over the cells of the coarse grid."""
    img = rearrange(tokens, "B (h w) D -> B D h w", h=grid[0], w=grid[1])
    return rearrange(F.adaptive_avg_pool2d(img, pool), "B D h w -> B (h w) D")


def upsample_frame(tokens: Tensor, pool: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """(B, ph*pw, D) -> (B, gh*gw, D), nearest."""
    img = rearrange(tokens, "B (h w) D -> B D h w", h=pool[0], w=pool[1])
    return rearrange(F.interpolate(img, size=grid, mode="nearest"), "B D h w -> B (h w) D")


class TemporalBranch(nn.Module):
    def __init__(
        self,
        width: int,
        heads: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(width, 3 * inner, device=device, dtype=dtype)
        self.norm = QKNorm(head_dim, device=device)
        self.proj = nn.Linear(inner, width, device=device, dtype=dtype)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _qkv(self, pooled: Tensor, first_frame: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pooled (B, T, P, D) for frames first_frame.. -> q, k, v (B*P, H, T, Dh) with RoPE over time."""
        qkv = rearrange(self.qkv(pooled), "B T P (K H D) -> K (B P) H T D", K=3, H=self.heads)
        q, k = self.norm(qkv[0], qkv[1])
        frames = torch.arange(pooled.shape[1], device=pooled.device) + first_frame  # a tensor frame: no sync
        pe = rope_table(frames[:, None].float(), (self.head_dim,), 10000.0)
        return apply_rope(q, pe), apply_rope(k, pe), qkv[2]

    def _out(self, attn: Tensor, batch: int, grids: list[tuple[int, int]], pool: tuple[int, int]) -> Tensor:
        """attn (B*P, H, T, Dh) -> video tokens (B, sum gh*gw, D) upsampled per frame."""
        a = self.proj(rearrange(attn, "(B P) H T D -> B T P (H D)", B=batch))  # (B, T, P, D)
        return torch.cat([upsample_frame(a[:, f], pool, g) for f, g in enumerate(grids)], dim=1)

    def forward(
        self, vid: Tensor, grids: list[tuple[int, int]], pool: tuple[int, int]
    ) -> tuple[Tensor, TemporalKV]:
        """vid (B, Lv, D) = frames 0..T-1 concatenated (grids[f] each) -> (B, Lv, D) and all frames' K/V."""
        sizes = [h * w for h, w in grids]
        pooled = torch.stack(
            [pool_frame(f, g, pool) for f, g in zip(vid.split(sizes, dim=1), grids, strict=True)], dim=1
        )  # (B, T, P, D)
        q, k, v = self._qkv(pooled, 0)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B*P, H, T, Dh)
        return self._out(attn, vid.shape[0], grids, pool), TemporalKV(k, v)

    def empty_kv(self, batch: int, pool: tuple[int, int], like: Tensor) -> TemporalKV:
        z = like.new_zeros(batch * pool[0] * pool[1], self.heads, 0, self.head_dim)
        return TemporalKV(z, z)

    def forward_cached(
        self, cur: Tensor, grid: tuple[int, int], pool: tuple[int, int], ctx: TemporalKV, frame: int | Tensor
    ) -> Tensor:
        """cur (B, n, D) the current frame (index `frame`) attending to the cached history K/V."""
        q, k, v = self._qkv(pool_frame(cur, grid, pool)[:, None], frame)  # (B*P, H, 1, Dh)
        k, v = torch.cat([ctx.k, k], dim=2), torch.cat([ctx.v, v], dim=2)  # (B*P, H, T+1, Dh)
        mask = None if ctx.mask is None else torch.cat([ctx.mask, ctx.mask.new_ones(1, 1, 1, 1)], dim=-1)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), cur.shape[0], [grid], pool)
