"""The M4V network: embeddings, 8 MM-DiT blocks, 16 MM-DiM (or attention) blocks, final layer.

One call denoises the current latent frame given its compressed-pyramid history:
every frame is patchified at its own resolution and positioned by 3D RoPE on the full-resolution grid.
In context_mode "causal", text and history depend neither on the step's timestep nor on the current frame,
so prepare_context runs them once and forward(x, t, cache=cache) runs only the current frame's tokens.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from model.attention_block import AttentionBlock
from model.config import ModelConfig, NetworkConfig
from model.fixed_shapes import FixedShapeCaches
from model.joint_attention import Attend, ContextAttention, JointLayout, build_joint_attention, joint_mask
from model.layers import (
    TIME_EMBED_DIM,
    Conditioning,
    LastLayer,
    MLPEmbedder,
    patchify,
    timestep_embedding,
    unpatchify,
)
from model.mamba2 import Mamba2
from model.mmdim import MMDiMBlock, MMDiMContext, VideoFrames
from model.mmdit import KV, MMDiTBlock
from model.recompose import Recomposition, build_recomposition
from model.rope import Rope, frame_positions, rope_table, text_positions
from model.runtime import RuntimeOptions
from model.step_graphs import StepGraphs
from model.text_encoder import TextEmbeddings


@dataclass
class ContextCache:
    """Text + history of one (unit, stage) run through every block once, for all CFG rows of the batch."""

    batch: int
    frame: int | Tensor  # index of the frame to be denoised (= number of history frames); a (1,) long
    # tensor in the persistent caches of fixed-shape steps (model/fixed_shapes.py)
    full_grid: tuple[int, int]  # full-resolution token grid
    key_mask: Tensor  # (B, Lc) bool: context tokens that may be keys (text padding False)
    pooled_vec: Tensor  # (B, D) projection of the pooled text embedding
    ctx_vec: Tensor  # (B, D) c(t=0), the conditioning of context tokens
    text_out: Tensor  # (B, Lt, D) text stream after the MM-DiT blocks
    dual: list[KV]  # per MM-DiT block: context keys/values (both streams, after RoPE)
    single: list[MMDiMContext | KV]  # per single block: scan state + temporal K/V, or attention K/V
    attention: ContextAttention | None = field(default=None, repr=False)  # per-cache attention buffers


@dataclass
class _Plan:
    """Everything about one token sequence [text; frames...] that the blocks share."""

    text_mask: Tensor  # (B, Lt)
    frames: VideoFrames
    n_cur: int  # trailing tokens of the current frame (0 in the context pass)
    pe: Rope  # over [text; video]
    attend: Attend  # masked joint attention over [text; video] (backend of RuntimeOptions)
    recomp: Recomposition | None


__all__ = ["ContextCache", "M4VNetwork", "joint_mask"]


class M4VNetwork(nn.Module):
    def __init__(
        self,
        cfg: NetworkConfig,
        *,
        latent_channels: int,
        text_dim: int,
        pooled_dim: int,
        scan_backend: str = "ref",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.runtime = runtime or RuntimeOptions()
        self.latent_channels = latent_channels
        w, p, dev, dt = cfg.width, cfg.patch_size, device, dtype
        self.x_embedder = nn.Linear(latent_channels * p * p, w, device=dev, dtype=dt)
        self.txt_in = nn.Linear(text_dim, w, device=dev, dtype=dt)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, w, device=dev, dtype=dt)
        self.vector_in = MLPEmbedder(pooled_dim, w, device=dev, dtype=dt)
        self.double_blocks = nn.ModuleList(
            MMDiTBlock(cfg, device=dev, dtype=dt) for _ in range(cfg.num_dual_blocks)
        )
        self.single_blocks = nn.ModuleList(
            self._single(scan_backend, dev, dt) for _ in range(cfg.num_single_blocks)
        )
        self.final_layer = LastLayer(w, p, latent_channels, device=dev, dtype=dt)
        self.token_counts: dict[str, int] = defaultdict(int)
        lean = self.runtime.graph_lean_capture
        fixed = self.runtime.graph_fixed_shapes
        # fixed shapes: one graph per stage, replayed over the units until the context outgrows its bucket
        keep = 8 if fixed else 1
        self._graphs = StepGraphs(self._forward_cached, warmup=1 if lean else 2, reuse_warmup=lean, keep=keep)
        bucket = self.runtime.graph_context_bucket
        self._fixed = FixedShapeCaches(bucket, self._graphs.drop) if fixed else None
        if self.runtime.compile:
            self.compile_blocks()

    @classmethod
    def for_preset(
        cls,
        cfg: ModelConfig,
        *,
        scan_backend: str = "ref",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        runtime: RuntimeOptions | None = None,
    ) -> M4VNetwork:
        """The network of a whole preset: latent channels from its VAE, text widths from its encoder."""
        return cls(
            cfg.network,
            latent_channels=cfg.vae.latent_channels,
            text_dim=cfg.text.token_dim,
            pooled_dim=cfg.text.pooled_dim,
            scan_backend=scan_backend,
            device=device,
            dtype=dtype,
            runtime=runtime,
        )

    def compile_blocks(self, dynamic: bool | None = None) -> None:
        """torch.compile every block's forward and forward_cached (per instance). Shapes vary per
        (unit, stage), so dynamic shapes are allowed and the recompile limit is raised. dynamic=True
        (training, where one step meets every (stage, unit) shape) traces sizes symbolically from the first
        call: one compile per block class instead of one per shape before dynamo turns dynamic itself."""
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        mode = None if self.runtime.compile_mode == "default" else self.runtime.compile_mode
        device = next(self.parameters()).device
        for m in self.modules():  # resolve the scan backend eagerly: its logging would break the graph
            if isinstance(m, Mamba2):
                m.backend_for(device)
        for blk in [*self.double_blocks, *self.single_blocks]:
            blk.forward = torch.compile(blk.forward, mode=mode, dynamic=dynamic)  # type: ignore[method-assign]
            blk.forward_cached = torch.compile(  # type: ignore[method-assign]
                blk.forward_cached, mode=mode, dynamic=dynamic
            )

    def _single(
        self, scan_backend: str, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> MMDiMBlock | AttentionBlock:
        if self.cfg.single_block == "mmdim":
            return MMDiMBlock(self.cfg, scan_backend, device=device, dtype=dtype)
        return AttentionBlock(self.cfg, device=device, dtype=dtype)

    def reset_token_counts(self) -> None:
        self.token_counts.clear()

    # ---- public entry points -------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        *,
        text: TextEmbeddings | None = None,
        history: list[Tensor] | None = None,
        full_hw: tuple[int, int] | None = None,
        cache: ContextCache | None = None,
    ) -> Tensor:
        """x (B, C, h, w), t (B,) = sigma*1000 -> velocity (B, C, h, w). Either text+full_hw or cache."""
        if cache is not None:
            tokens = self._plan_tokens([x])[0]
            if self._fixed is not None:  # the persistent padded cache this one fits
                cache = self._fixed.load(cache, tokens)
            if self._graphed(x, tokens):
                return self._graphs.run(x, t, cache)
            return self._forward_cached(x, t, cache)
        vid, cond = self._uncached(x, t, text, history, full_hw)
        return self._velocity(vid[-1], cond.cur, x)

    def forward_all(
        self,
        x: Tensor,
        t: Tensor,
        *,
        text: TextEmbeddings | None,
        history: list[Tensor] | None,
        full_hw: tuple[int, int] | None,
    ) -> list[Tensor]:
        """Uncached pass; returns the video hidden states of every frame after the last block, each
        (B, n_f, D), oldest first (the last is the current frame). Used by the causality tests."""
        return self._uncached(x, t, text, history, full_hw)[0]

    @torch.no_grad()
    def prepare_context(
        self, *, text: TextEmbeddings, history: list[Tensor], full_hw: tuple[int, int]
    ) -> ContextCache:
        """Run text + history (modulated with c(t=0)) through every block once ("causal" mode only)."""
        if self.cfg.context_mode != "causal":
            raise ValueError(f"prepare_context needs context_mode 'causal', not {self.cfg.context_mode!r}")
        if len(history) >= self.cfg.max_latent_frames:
            raise ValueError(f"frame index {len(history)} >= max_latent_frames {self.cfg.max_latent_frames}")
        pooled = self._pooled(text)
        zero = torch.zeros(pooled.shape[0], device=pooled.device)
        cond = self._conditioning(zero, pooled)
        txt, _, (dual, single) = self._run(list(history), text, cond, full_hw, has_current=False)
        lc = sum(self._plan_tokens(history))
        key_mask = torch.cat([text.mask.to(pooled.device), text.mask.new_ones(pooled.shape[0], lc)], dim=1)
        fg = self._full_grid(full_hw)
        attention = ContextAttention(key_mask, self.runtime.attention_backend)
        return ContextCache(
            attention=attention,
            batch=pooled.shape[0],
            frame=len(history),
            full_grid=fg,
            key_mask=key_mask,
            pooled_vec=pooled,
            ctx_vec=cond.ctx,
            text_out=txt,
            dual=dual,
            single=single,
        )

    # ---- internals --------------------------------------------------------------------------------------

    def _graphed(self, x: Tensor, tokens: int) -> bool:
        """Whether this cached step runs as a CUDA graph (RuntimeOptions.cuda_graphs, graph_max_tokens)."""
        rt = self.runtime
        small = rt.graph_max_tokens is None or tokens <= rt.graph_max_tokens
        return rt.cuda_graphs and x.device.type == "cuda" and small

    def _uncached(
        self,
        x: Tensor,
        t: Tensor,
        text: TextEmbeddings | None,
        history: list[Tensor] | None,
        full_hw: tuple[int, int] | None,
    ) -> tuple[list[Tensor], Conditioning]:
        if text is None or full_hw is None:
            raise ValueError("uncached forward needs text= and full_hw= (or pass cache=)")
        frames = [*(history or []), x]
        cond = self._conditioning(t, self._pooled(text))
        _, vid, _ = self._run(frames, text, cond, full_hw, has_current=True)
        return list(vid.split(self._plan_tokens(frames), dim=1)), cond

    def _pooled(self, text: TextEmbeddings) -> Tensor:
        return self.vector_in(text.pooled)  # (B, D)

    def _pool_grid(self, full_grid: tuple[int, int]) -> tuple[int, int]:
        f = self.cfg.temporal_pool_factor
        return max(1, full_grid[0] // f), max(1, full_grid[1] // f)

    def _conditioning(self, t: Tensor, pooled_vec: Tensor) -> Conditioning:
        cur = self.time_in(timestep_embedding(t)) + pooled_vec  # (B, D)
        if self.cfg.context_mode != "causal":  # "paper", "pyramidflow": every token gets c(t)
            return Conditioning(cur, cur)
        ctx = self.time_in(timestep_embedding(torch.zeros_like(t))) + pooled_vec
        return Conditioning(ctx, cur)

    def _full_grid(self, full_hw: tuple[int, int]) -> tuple[int, int]:
        p = self.cfg.patch_size
        if full_hw[0] % p or full_hw[1] % p:
            raise ValueError(f"full_hw {full_hw} must be divisible by patch size {p}")
        return full_hw[0] // p, full_hw[1] // p

    def _grid(self, frame: Tensor) -> tuple[int, int]:
        p, (h, w) = self.cfg.patch_size, frame.shape[-2:]
        if frame.ndim != 4 or frame.shape[1] != self.latent_channels or h % p or w % p:
            raise ValueError(
                f"latent frame of shape {tuple(frame.shape)}: want (B, {self.latent_channels}, h, w)"
            )
        return h // p, w // p

    def _plan_tokens(self, frames: list[Tensor]) -> list[int]:
        return [h * w for h, w in (self._grid(f) for f in frames)]

    def _embed(self, frames: list[Tensor], text: TextEmbeddings) -> tuple[Tensor, Tensor]:
        dt = self.x_embedder.weight.dtype
        vid = [self.x_embedder(patchify(f.to(dt), self.cfg.patch_size)) for f in frames]  # (B, n_f, D) each
        b = text.tokens.shape[0]
        vid_t = torch.cat(vid, dim=1) if vid else text.tokens.new_zeros(b, 0, self.cfg.width).to(dt)
        return self.txt_in(text.tokens.to(dt)), vid_t  # (B, Lt, D), (B, Lv, D)

    def _plan(
        self, text_mask: Tensor, frames: list[Tensor], full_hw: tuple[int, int], has_cur: bool
    ) -> _Plan:
        cfg, dev = self.cfg, text_mask.device
        if len(frames) > cfg.max_latent_frames:
            raise ValueError(f"{len(frames)} latent frames > max_latent_frames {cfg.max_latent_frames}")
        fg = self._full_grid(full_hw)
        grids = [self._grid(f) for f in frames]
        # "pyramidflow": positions in units of the current frame's token grid (PyramidFlow's RoPE), the
        # history frames interpolated onto it; otherwise on the full-resolution grid.
        ref = grids[-1] if cfg.context_mode == "pyramidflow" and grids else fg
        pos = [text_positions(text_mask.shape[1], dev)]
        pos += [frame_positions(i, g, ref, dev) for i, g in enumerate(grids)]
        pe = rope_table(torch.cat(pos), cfg.rope_axes, cfg.rope_theta)
        layout = JointLayout(
            text_mask,
            tuple(h * w for h, w in grids),
            cfg.context_mode == "causal",
            text_sees_first_frame=cfg.context_mode == "pyramidflow",
        )
        attend = build_joint_attention(layout, self.runtime.attention_backend)
        video = VideoFrames(grids, self._pool_grid(fg))
        recomp = None
        if cfg.single_block == "mmdim":
            recomp = build_recomposition(text_mask, video.tokens, cfg.context_mode, has_cur)
        n_cur = video.tokens[-1] if has_cur else 0
        return _Plan(text_mask, video, n_cur, pe, attend, recomp)

    def _run(
        self,
        frames: list[Tensor],
        text: TextEmbeddings,
        cond: Conditioning,
        full_hw: tuple[int, int],
        has_current: bool,
    ) -> tuple[Tensor, Tensor, tuple[list[KV], list[MMDiMContext | KV]]]:
        """All blocks over [text; frames]. Returns text after the MM-DiT blocks, the final video tokens and,
        for the context pass (no current frame), each block's cache entry."""
        text_mask = text.mask.to(text.tokens.device, torch.bool)
        plan = self._plan(text_mask, frames, full_hw, has_current)
        txt, vid = self._embed(frames, text)
        lt, keep = txt.shape[1], not has_current
        dual: list[KV] = []
        single: list[MMDiMContext | KV] = []
        for i, blk in enumerate(self.double_blocks):
            txt, vid, kv = blk(txt, vid, cond, plan.n_cur, plan.pe, plan.attend)
            self.token_counts[f"dual.{i}"] += lt + vid.shape[1]
            dual += [kv] if keep else []
        seq = torch.cat([txt, vid], dim=1)  # (B, Lt+Lv, D)
        for i, blk in enumerate(self.single_blocks):
            if isinstance(blk, MMDiMBlock):
                assert plan.recomp is not None
                seq, ctx = blk(seq, cond, plan.n_cur, text_mask, plan.frames, plan.recomp, keep)
                self.token_counts[f"single.{i}"] += plan.recomp.length
            else:
                seq, ctx = blk(seq, cond, plan.n_cur, plan.pe, plan.attend)
                self.token_counts[f"single.{i}"] += seq.shape[1]
            single += [ctx] if keep and ctx is not None else []
        return txt, seq[:, lt:], (dual, single)

    def _velocity(self, cur_tokens: Tensor, vec_cur: Tensor, x: Tensor) -> Tensor:
        out = self.final_layer(cur_tokens, vec_cur)  # (B, n, C*p*p)
        return unpatchify(out, self._grid(x), self.cfg.patch_size).to(x.dtype)  # (B, C, h, w)

    def _forward_cached(self, x: Tensor, t: Tensor, cache: ContextCache) -> Tensor:
        if x.shape[0] != cache.batch or t.shape[0] != cache.batch:
            raise ValueError(f"batch {x.shape[0]} (t {t.shape[0]}) != the cache's batch {cache.batch}")
        grid, fg, k = self._grid(x), cache.full_grid, cache.frame
        cond = Conditioning(cache.ctx_vec, self.time_in(timestep_embedding(t)) + cache.pooled_vec)
        tok = self.x_embedder(patchify(x.to(self.x_embedder.weight.dtype), self.cfg.patch_size))  # (B, n, D)
        n = tok.shape[1]
        pe = rope_table(frame_positions(k, grid, fg, x.device), self.cfg.rope_axes, self.cfg.rope_theta)
        if cache.attention is None:
            cache.attention = ContextAttention(cache.key_mask, self.runtime.attention_backend)
        attn = cache.attention
        for i, (blk, kv) in enumerate(zip(self.double_blocks, cache.dual, strict=True)):
            assert isinstance(blk, MMDiTBlock)
            tok = blk.forward_cached(tok, cond, pe, partial(attn, i), kv)
            self.token_counts[f"dual.{i}"] += n
        pool = self._pool_grid(fg)
        for i, (blk, entry) in enumerate(zip(self.single_blocks, cache.single, strict=True)):
            if isinstance(blk, MMDiMBlock):
                assert isinstance(entry, MMDiMContext)
                tok = blk.forward_cached(tok, cond, grid, pool, k, entry)
                self.token_counts[f"single.{i}"] += n + 1
            else:
                assert isinstance(blk, AttentionBlock) and isinstance(entry, KV)
                tok = blk.forward_cached(tok, cond, pe, partial(attn, len(cache.dual) + i), entry)
                self.token_counts[f"single.{i}"] += n
        return self._velocity(tok, cond.cur, x)
