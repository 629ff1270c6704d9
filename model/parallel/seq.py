"""Sequence-parallel cached step: the current frame's video tokens split over R ranks (contiguous runs in
raster order, R dividing the token count), every block run on the rank's run only.

Per block, what crosses ranks:
- MM-DiT (and attention) blocks, attention="gather_kv": the current frame's keys/values are all-gathered, so
  each rank's queries attend to the cached context and the whole frame. attention="ulysses" (heads divisible
  by R): one all-to-all turns the rank's tokens x all heads into all tokens x its heads, each rank attends
  for its heads, and a second all-to-all turns the result back; it moves about half the bytes at R = 2.
  The cached context K/V is whole on every rank either way.
- MM-DiM blocks: the Mamba2 scan over [register ; frame tokens] is split as in model/parallel/scan_split.py
  (rank 0 holds the register; conv tail and scan state relayed rank to rank from the cached state). The
  temporal branch pools the whole frame to its coarse grid, so the modulated tokens are all-gathered first;
  it is light (a few hundred pooled positions) and each rank keeps its own rows of the result.
- After the last block each rank projects its tokens and one all-gather assembles the velocity.

The context pass (prepare_context) and uncached steps are not split: every rank runs them whole.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from model.attention_block import AttentionBlock
from model.layers import Conditioning, layer_norm, modulate, patchify, timestep_embedding, unpatchify
from model.mmdim import MMDiMBlock, MMDiMContext
from model.mmdit import KV, MMDiTBlock
from model.network import ContextCache, M4VNetwork
from model.parallel.relay import ProcessRelay
from model.parallel.scan_split import mixer_forward_shard
from model.rope import frame_positions, rope_table
from model.text_encoder import TextEmbeddings

SeqAttention = Literal["gather_kv", "ulysses"]


class SeqParallelDenoiser:
    """The sampler's Denoiser on every rank of `group` (the default group when None)."""

    def __init__(
        self, net: M4VNetwork, group: dist.ProcessGroup | None = None, attention: SeqAttention = "gather_kv"
    ) -> None:
        self.net = net
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.relay = ProcessRelay(group)
        if attention not in get_args(SeqAttention):
            raise ValueError(f"attention {attention!r} not in {get_args(SeqAttention)}")
        if attention == "ulysses" and net.cfg.heads % self.world:
            raise ValueError(f"ulysses splits {net.cfg.heads} heads over {self.world} ranks: not evenly")
        self.attention = attention

    def prepare_context(
        self, *, text: TextEmbeddings, history: list[Tensor], full_hw: tuple[int, int]
    ) -> ContextCache:
        return self.net.prepare_context(text=text, history=history, full_hw=full_hw)

    def __call__(self, x: Tensor, t: Tensor, **context: Any) -> Tensor:
        if "cache" not in context:
            return self.net(x, t, **context)  # uncached: whole on every rank
        return self._cached(x, t, context["cache"])

    def gather(self, t: Tensor, dim: int) -> Tensor:
        """The ranks' runs of `t` joined along `dim`, in rank order (equal run lengths)."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts, dim=dim)

    def _run(self, n: int) -> slice:
        if n % self.world:
            raise ValueError(f"{n} tokens do not split evenly over {self.world} ranks")
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def _cached(self, x: Tensor, t: Tensor, cache: ContextCache) -> Tensor:
        net, p = self.net, self.net.cfg.patch_size
        grid, k = net._grid(x), cache.frame
        cond = Conditioning(cache.ctx_vec, net.time_in(timestep_embedding(t)) + cache.pooled_vec)
        tok = net.x_embedder(patchify(x.to(net.x_embedder.weight.dtype), p))  # (B, n, D)
        mine = self._run(tok.shape[1])
        tok = tok[:, mine]  # (B, n/R, D)
        pe = rope_table(
            frame_positions(k, grid, cache.full_grid, x.device), net.cfg.rope_axes, net.cfg.rope_theta
        )
        pe = pe[mine]
        attend = partial(self._ulysses if self.attention == "ulysses" else self._attend, cache.key_mask)
        for blk, kv in zip(net.double_blocks, cache.dual, strict=True):
            assert isinstance(blk, MMDiTBlock)
            tok = blk.forward_cached(tok, cond, pe, attend, kv)
        pool = net._pool_grid(cache.full_grid)
        for blk, entry in zip(net.single_blocks, cache.single, strict=True):
            if isinstance(blk, MMDiMBlock):
                assert isinstance(entry, MMDiMContext)
                tok = self._mmdim(blk, tok, cond, (grid, pool), k, entry, mine)
            else:
                assert isinstance(blk, AttentionBlock) and isinstance(entry, KV)
                tok = blk.forward_cached(tok, cond, pe, attend, entry)
        out = self.gather(net.final_layer(tok, cond.cur), dim=1)  # (B, n, C*p*p)
        return unpatchify(out, grid, p).to(x.dtype)  # (B, C, h, w)

    def _attend(self, key_mask: Tensor, q: Tensor, k: Tensor, v: Tensor, ck: Tensor, cv: Tensor) -> Tensor:
        """q (B, H, n/R, Dh) against the context and the whole frame's k, v (gathered) -> (B, n/R, H*Dh)."""
        k, v = self.gather(k.to(q.dtype), dim=2), self.gather(v.to(q.dtype), dim=2)  # (B, H, n, Dh)
        mask = torch.cat([key_mask, key_mask.new_ones(q.shape[0], k.shape[2])], dim=1)[:, None, None]
        kk, vv = torch.cat([ck.to(q.dtype), k], dim=2), torch.cat([cv.to(q.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)  # (B, H, n/R, Dh)
        return rearrange(out, "b h n d -> b n (h d)")

    def _ulysses(self, key_mask: Tensor, q: Tensor, k: Tensor, v: Tensor, ck: Tensor, cv: Tensor) -> Tensor:
        """q, k, v (B, H, n/R, Dh): all-to-all to (B, H/R, n, Dh), attend with this rank's heads of the
        context, all-to-all back -> (B, n/R, H*Dh)."""
        heads = slice(self.rank * q.shape[1] // self.world, (self.rank + 1) * q.shape[1] // self.world)
        q, k, v = (self._swap(t.to(q.dtype), split=1, join=2) for t in (q, k, v))  # (B, H/R, n, Dh)
        mask = torch.cat([key_mask, key_mask.new_ones(q.shape[0], k.shape[2])], dim=1)[:, None, None]
        kk = torch.cat([ck[:, heads].to(q.dtype), k], dim=2)  # (B, H/R, Lc+n, Dh)
        vv = torch.cat([cv[:, heads].to(q.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)  # (B, H/R, n, Dh)
        return rearrange(self._swap(out, split=2, join=1), "b h n d -> b n (h d)")  # (B, n/R, H*Dh)

    def _swap(self, t: Tensor, split: int, join: int) -> Tensor:
        """Chunk j of `t` along `split` goes to rank j; what arrives from the ranks is joined along `join`."""
        sent = [c.contiguous() for c in t.chunk(self.world, dim=split)]
        got = [torch.empty_like(sent[0]) for _ in range(self.world)]
        dist.all_to_all(got, sent, group=self.group)
        return torch.cat(got, dim=join)

    def _mmdim(
        self,
        blk: MMDiMBlock,
        x: Tensor,
        cond: Conditioning,
        grids: tuple[tuple[int, int], tuple[int, int]],
        frame: int,
        ctx: MMDiMContext,
        mine: slice,
    ) -> Tensor:
        """MMDiMBlock.forward_cached on this rank's run x (B, n/R, D)."""
        n = x.shape[1]
        h = modulate(layer_norm(x), n, blk.modulation(cond.ctx)[0], blk.modulation(cond.cur)[0])
        seq = h
        if self.rank == 0:  # the register token leads the frame's scan
            reg = blk.registers[frame].to(h.dtype).expand(x.shape[0], 1, -1)  # (B, 1, D)
            seq = torch.cat([reg, h], dim=1)
        m, _ = mixer_forward_shard(blk.mixer, seq, self.relay, ctx.ssm)
        m = m[:, 1:] if self.rank == 0 else m  # (B, n/R, D)
        whole = self.gather(h, dim=1)  # (B, n, D): the temporal branch pools the whole frame
        tb = blk.temporal.forward_cached(whole, grids[0], grids[1], ctx.temporal, frame)[:, mine]
        return blk._out(x, h, m + tb, n, cond)
