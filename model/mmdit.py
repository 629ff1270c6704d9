"""MM-DiT block: dual stream (separate text/video weights), joint masked attention over [text; video].

FLUX DoubleStreamBlock with two changes: a boolean attention mask (temporal-causal video, text padding never
a key) and split modulation of the video stream (history frames with c_ctx, the current frame with c(t)).
For caching ("causal" mode) the block returns the context keys/values (after QK-norm and RoPE) so a later
call can run only the current frame's tokens against them (forward_cached).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import NetworkConfig
from model.joint_attention import Attend, CachedAttend
from model.layers import (
    Conditioning,
    ModOut,
    Modulation,
    QKNorm,
    gate,
    layer_norm,
    modulate,
    split_heads,
)
from model.rope import Rope, apply_rope


@dataclass
class KV:
    k: Tensor  # (B, H, Lc, Dh) after QK-norm and RoPE
    v: Tensor  # (B, H, Lc, Dh)


class _Stream(nn.Module):
    """The weights of one modality: modulation, qkv + QK-norm, output projection, MLP."""

    def __init__(self, cfg: NetworkConfig, *, device: torch.device | str | None, dtype: torch.dtype | None):
        super().__init__()
        w, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
        self.heads = cfg.heads
        self.mod = Modulation(w, 2, device=device, dtype=dtype)
        self.qkv = nn.Linear(w, 3 * w, device=device, dtype=dtype)
        self.norm = QKNorm(cfg.head_dim, device=device)
        self.proj = nn.Linear(w, w, device=device, dtype=dtype)
        self.mlp = nn.Sequential(
            nn.Linear(w, hidden, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden, w, device=device, dtype=dtype),
        )

    def mods(self, cond: Conditioning) -> tuple[list[ModOut], list[ModOut]]:
        return self.mod(cond.ctx), self.mod(cond.cur)

    def qkv_heads(self, x: Tensor, n_cur: int, ctx: ModOut, cur: ModOut, pe: Rope) -> tuple[Tensor, ...]:
        q, k, v = split_heads(self.qkv(modulate(layer_norm(x), n_cur, ctx, cur)), self.heads)
        q, k = self.norm(q, k)
        return apply_rope(q, pe), apply_rope(k, pe), v  # each (B, H, L, Dh)

    def finish(self, x: Tensor, attn: Tensor, n_cur: int, ctx: list[ModOut], cur: list[ModOut]) -> Tensor:
        x = x + gate(self.proj(attn), n_cur, ctx[0], cur[0])
        h = modulate(layer_norm(x), n_cur, ctx[1], cur[1])
        return x + gate(self.mlp(h), n_cur, ctx[1], cur[1])


class MMDiTBlock(nn.Module):
    def __init__(
        self,
        cfg: NetworkConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.txt = _Stream(cfg, device=device, dtype=dtype)
        self.vid = _Stream(cfg, device=device, dtype=dtype)

    def forward(
        self, txt: Tensor, vid: Tensor, cond: Conditioning, n_cur: int, pe: Rope, attend: Attend
    ) -> tuple[Tensor, Tensor, KV]:
        """txt (B, Lt, D), vid (B, Lv, D) whose last n_cur tokens are the current frame; pe and the masked
        joint attention `attend` (model/joint_attention.py) over [txt; vid]. Returns new txt, vid and
        the keys/values of all tokens (the context, when n_cur == 0)."""
        lt = txt.shape[1]
        t_ctx, t_cur = self.txt.mods(cond)
        v_ctx, v_cur = self.vid.mods(cond)
        tq, tk, tv = self.txt.qkv_heads(txt, 0, t_ctx[0], t_cur[0], pe[:lt])
        vq, vk, vv = self.vid.qkv_heads(vid, n_cur, v_ctx[0], v_cur[0], pe[lt:])
        k, v = torch.cat([tk, vk], dim=2), torch.cat([tv, vv], dim=2)  # (B, H, Lt+Lv, Dh)
        attn = attend(torch.cat([tq, vq], dim=2), k, v)  # (B, Lt+Lv, D)
        a_txt, a_vid = attn.split([lt, attn.shape[1] - lt], dim=1)  # split: see layers._split
        txt = self.txt.finish(txt, a_txt, 0, t_ctx, t_cur)
        vid = self.vid.finish(vid, a_vid, n_cur, v_ctx, v_cur)
        return txt, vid, KV(k, v)

    def forward_cached(
        self, vid: Tensor, cond: Conditioning, pe: Rope, attend: CachedAttend, ctx: KV
    ) -> Tensor:
        """Only the current frame: vid (B, n, D) attends to the cached context keys (padded text masked by
        `attend`) and its own tokens."""
        v_ctx, v_cur = self.vid.mods(cond)
        n = vid.shape[1]
        q, k, v = self.vid.qkv_heads(vid, n, v_ctx[0], v_cur[0], pe)
        return self.vid.finish(vid, attend(q, k, v, ctx.k, ctx.v), n, v_ctx, v_cur)
