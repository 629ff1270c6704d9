"""MM-DiM block: single stream, one weight set for text and video, Mamba2 token mixer [paper figure].

  h = LN(x)*(1+scale)+shift ; r = Recompose(h) ; m = Mamba2(r) ; m = InverseRecompose(m)
  u = m + TemporalBranch(h) (video tokens only) ; y = Linear(cat[u, GELU(Linear_4x(h))]) * gate ; out = x + y

Text padding is zeroed before the scan (and moved to the outer ends of the text copies by the
re-composition) so padded content never reaches the scan state. Caching ("causal" mode): the context pass
ends exactly at the end of the second text copy, so its Mamba2 state (scan + conv tail) and the temporal
K/V of the history frames are all a step needs; forward_cached scans only [R_k f_k] from that state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import NetworkConfig
from model.layers import Conditioning, Modulation, gate, layer_norm, modulate
from model.mamba2 import Mamba2, SSMState
from model.recompose import Recomposition, inverse_recompose, recompose
from model.temporal import TemporalBranch, TemporalKV


@dataclass
class MMDiMContext:
    ssm: SSMState  # Mamba2 state at the end of the second text copy
    temporal: TemporalKV  # history frames' temporal keys/values


@dataclass
class VideoFrames:
    """Geometry of the video part of a sequence."""

    grids: list[tuple[int, int]]  # token grid of each frame, oldest first
    pool: tuple[int, int]  # temporal branch grid

    @property
    def tokens(self) -> list[int]:
        return [h * w for h, w in self.grids]


class MMDiMBlock(nn.Module):
    def __init__(
        self,
        cfg: NetworkConfig,
        scan_backend: str = "ref",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        w, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
        self.modulation = Modulation(w, 1, device=device, dtype=dtype)
        self.mixer = Mamba2(w, cfg.mamba, backend=scan_backend, device=device, dtype=dtype)
        self.registers = nn.Parameter(torch.empty(cfg.max_latent_frames, w, device=device, dtype=dtype))
        nn.init.normal_(self.registers, std=0.02)
        self.temporal = TemporalBranch(w, cfg.temporal_heads, cfg.head_dim, device=device, dtype=dtype)
        self.mlp_in = nn.Linear(w, hidden, device=device, dtype=dtype)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.linear2 = nn.Linear(w + hidden, w, device=device, dtype=dtype)

    def _out(self, x: Tensor, h: Tensor, u: Tensor, n_cur: int, cond: Conditioning) -> Tensor:
        y = self.linear2(torch.cat([u, self.mlp_act(self.mlp_in(h))], dim=-1))
        return x + gate(y, n_cur, self.modulation(cond.ctx)[0], self.modulation(cond.cur)[0])

    def forward(
        self,
        x: Tensor,
        cond: Conditioning,
        n_cur: int,
        text_mask: Tensor,
        frames: VideoFrames,
        recomp: Recomposition,
        keep_context: bool = False,
    ) -> tuple[Tensor, MMDiMContext | None]:
        """x (B, Lt+Lv, D), the last n_cur tokens the current frame. keep_context (the context pass, no
        current frame): also return the Mamba2 state after the whole scan and the temporal K/V."""
        lt = text_mask.shape[1]
        h = modulate(layer_norm(x), n_cur, self.modulation(cond.ctx)[0], self.modulation(cond.cur)[0])
        keep = torch.cat([text_mask, text_mask.new_ones(x.shape[0], x.shape[1] - lt)], dim=1)  # (B, L)
        h_scan = torch.where(keep[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        r = recompose(h_scan, self.registers[: len(frames.grids)], recomp)  # (B, 2Lt+Lv+T, D)
        m, state = self.mixer(r, return_state=keep_context)
        m = inverse_recompose(m, recomp)  # (B, Lt+Lv, D)
        if frames.grids:
            tb, tkv = self.temporal(h[:, lt:], frames.grids, frames.pool)
            m_txt, m_vid = m.split([lt, m.shape[1] - lt], dim=1)  # split: see layers._split
            m = torch.cat([m_txt, m_vid + tb], dim=1)
        else:
            tkv = self.temporal.empty_kv(x.shape[0], frames.pool, h)
        ctx = MMDiMContext(state, tkv) if keep_context else None
        return self._out(x, h, m, n_cur, cond), ctx

    def forward_cached(
        self,
        x: Tensor,
        cond: Conditioning,
        grid: tuple[int, int],
        pool: tuple[int, int],
        frame: int | Tensor,
        ctx: MMDiMContext,
    ) -> Tensor:
        """x (B, n, D) the current frame (index `frame`, an int or a one-element long tensor); scans
        [R_frame x] from the cached state."""
        n = x.shape[1]
        h = modulate(layer_norm(x), n, self.modulation(cond.ctx)[0], self.modulation(cond.cur)[0])
        row = self.registers.index_select(0, frame) if isinstance(frame, Tensor) else self.registers[frame]
        reg = row.to(h.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)  # (B, 1, D)
        m, _ = self.mixer(torch.cat([reg, h], dim=1), state=ctx.ssm)  # (B, 1+n, D)
        u = m[:, 1:] + self.temporal.forward_cached(h, grid, pool, ctx.temporal, frame)
        return self._out(x, h, u, n, cond)
