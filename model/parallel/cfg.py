"""CFG-parallel: the conditional and unconditional halves of every sampler step on two ranks.

The sampler (model/sampler.py) calls its denoiser on the CFG batch [cond; uncond] (2B rows: x repeated,
text and history CFG-doubled). CfgParallelDenoiser stands in for the network there: rank 0 runs the cond
rows, rank 1 the uncond rows, and one all_gather per step hands both ranks the whole (2B, C, h, w)
velocity, so both take the same Euler step and stay in lockstep without further exchange. The context
cache (prepare_context) holds only the rank's own half.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from model.sampler import Denoiser
from model.text_encoder import TextEmbeddings


def half(t: Tensor, rank: int) -> Tensor:
    """Rank 0's rows [:B] (cond) or rank 1's rows [B:] (uncond) of a (2B, ...) CFG batch."""
    if t.shape[0] % 2:
        raise ValueError(f"a CFG batch has an even number of rows, got {t.shape[0]}")
    return t.chunk(2)[rank]


def text_half(text: TextEmbeddings, rank: int) -> TextEmbeddings:
    return TextEmbeddings(
        tokens=half(text.tokens, rank), mask=half(text.mask, rank), pooled=half(text.pooled, rank)
    )


class CfgParallelDenoiser:
    """The sampler's Denoiser on one of two ranks of `group` (the default group when None). `net` is the
    network, or a sequence-parallel denoiser over the ranks that share this rank's CFG half (mesh.py)."""

    def __init__(self, net: Denoiser, group: dist.ProcessGroup | None = None) -> None:
        world = dist.get_world_size(group)
        if world != 2:
            raise ValueError(f"CFG-parallel runs on exactly 2 ranks, the group has {world}")
        self.net = net
        self.group = group
        self.rank = dist.get_rank(group)

    def prepare_context(
        self, *, text: TextEmbeddings, history: list[Tensor], full_hw: tuple[int, int]
    ) -> Any:
        """The context cache of this rank's rows only."""
        mine = [half(h, self.rank) for h in history]
        return self.net.prepare_context(text=text_half(text, self.rank), history=mine, full_hw=full_hw)

    def __call__(self, x: Tensor, t: Tensor, **context: Any) -> Tensor:
        """x (2B, C, h, w), t (2B,) -> velocity (2B, C, h, w) of all rows; this rank computes its half."""
        if "cache" not in context:
            context = {
                "text": text_half(context["text"], self.rank),
                "history": [half(h, self.rank) for h in context["history"]],
                "full_hw": context["full_hw"],
            }
        v = self.net(half(x, self.rank), half(t, self.rank), **context)  # (B, C, h, w)
        return torch.cat(self.gather(v))  # (2B, C, h, w)

    def gather(self, v: Tensor) -> list[Tensor]:
        """[cond velocity, uncond velocity] on both ranks: the step's one exchange."""
        parts = [torch.empty_like(v) for _ in range(2)]
        dist.all_gather(parts, v.contiguous(), group=self.group)
        return parts
