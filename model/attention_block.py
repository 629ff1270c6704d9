"""Attention single-stream block: the baseline that replaces MM-DiM in preset attn-768p.

FLUX SingleStreamBlock (linear1 -> qkv + mlp, joint attention, linear2(cat[attn, gelu(mlp)]) * gate) with the
same masks, RoPE and split modulation as the MM-DiT blocks; caches the context keys/values like them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import NetworkConfig
from model.joint_attention import Attend, CachedAttend
from model.layers import Conditioning, Modulation, QKNorm, gate, layer_norm, modulate, split_heads
from model.mmdit import KV
from model.rope import Rope, apply_rope


class AttentionBlock(nn.Module):
    def __init__(
        self,
        cfg: NetworkConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        w = cfg.width
        self.width, self.heads = w, cfg.heads
        self.mlp_hidden = int(w * cfg.mlp_ratio)
        self.modulation = Modulation(w, 1, device=device, dtype=dtype)
        self.linear1 = nn.Linear(w, 3 * w + self.mlp_hidden, device=device, dtype=dtype)
        self.norm = QKNorm(cfg.head_dim, device=device)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.linear2 = nn.Linear(w + self.mlp_hidden, w, device=device, dtype=dtype)

    def _qkv_mlp(self, x: Tensor, n_cur: int, cond: Conditioning, pe: Rope) -> tuple[Tensor, ...]:
        ctx, cur = self.modulation(cond.ctx)[0], self.modulation(cond.cur)[0]
        h = modulate(layer_norm(x), n_cur, ctx, cur)
        qkv, mlp = self.linear1(h).split([3 * self.width, self.mlp_hidden], dim=-1)
        q, k, v = split_heads(qkv, self.heads)  # (B, H, L, Dh) each
        q, k = self.norm(q, k)
        return apply_rope(q, pe), apply_rope(k, pe), v, mlp

    def _out(self, x: Tensor, attn: Tensor, mlp: Tensor, n_cur: int, cond: Conditioning) -> Tensor:
        y = self.linear2(torch.cat([attn, self.mlp_act(mlp)], dim=-1))
        return x + gate(y, n_cur, self.modulation(cond.ctx)[0], self.modulation(cond.cur)[0])

    def forward(
        self, x: Tensor, cond: Conditioning, n_cur: int, pe: Rope, attend: Attend
    ) -> tuple[Tensor, KV]:
        """x (B, L, D) = [text; video], last n_cur tokens the current frame; attend: masked attention."""
        q, k, v, mlp = self._qkv_mlp(x, n_cur, cond, pe)
        return self._out(x, attend(q, k, v), mlp, n_cur, cond), KV(k, v)

    def forward_cached(
        self, x: Tensor, cond: Conditioning, pe: Rope, attend: CachedAttend, ctx: KV
    ) -> Tensor:
        """x (B, n, D) the current frame against the cached context K/V (padded text masked by attend)."""
        n = x.shape[1]
        q, k, v, mlp = self._qkv_mlp(x, n, cond, pe)
        return self._out(x, attend(q, k, v, ctx.k, ctx.v), mlp, n, cond)
