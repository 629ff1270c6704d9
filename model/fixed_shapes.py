"""Fixed shapes for the cached step: a CUDA graph per (stage, context bucket), replayed across units.

Every (unit, stage) brings a context cache of a new length (the history grows by one frame per unit), so
without this the cached step is captured anew for each of them (48 times for 121 frames at 768p). With
RuntimeOptions.graph_fixed_shapes the network copies each new ContextCache into persistent buffers whose
lengths are capacities: the context keys/values of every attention block padded to a multiple of
graph_context_bucket tokens, the temporal branch's history keys/values to a multiple of TEMPORAL_BUCKET
frames, both with masks that keep the padding out of attention; the frame index becomes a one-element tensor
(RoPE rows and registers are read from it on every replay); the conditioning vectors and the Mamba2 states
are copied in place. A graph captured on those buffers stays valid for every later cache that fits them, so
a new capture happens only when the context crosses a bucket. Masked padding changes nothing but float
rounding (tests/model/test_fixed_shapes.py). sdpa_mask attention only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from model.joint_attention import FixedContextAttention
from model.mamba2 import SSMState
from model.mmdim import MMDiMContext
from model.mmdit import KV
from model.temporal import TemporalKV

if TYPE_CHECKING:
    from model.network import ContextCache

TEMPORAL_BUCKET = 8  # history frames per temporal-branch capacity step
MAX_STATICS = 6  # persistent caches kept: the 3 stages of two current-frame sizes


def capacity(n: int, bucket: int) -> int:
    """n rounded up to a multiple of bucket (at least one bucket)."""
    return max(bucket, -(-n // bucket) * bucket)


@dataclass
class _Static:
    cache: ContextCache  # the persistent, padded cache the graph reads
    lcap: int  # context capacity (tokens); the current frame's n slots follow it
    tcap: int  # temporal history capacity (frames)
    key_mask: Tensor  # (B, lcap + n) bool, the attention mask is a view of it
    temporal_mask: Tensor  # (1, 1, 1, Tcap) bool


class FixedShapeCaches:
    """One persistent padded cache per current-frame shape (one per stage), re-made when the context needs
    another capacity. on_drop(cache) hears of each replaced one (StepGraphs.drop: its graph goes too)."""

    def __init__(self, bucket: int, on_drop: Callable[[ContextCache], None] | None = None) -> None:
        if bucket < 1:
            raise ValueError(f"graph_context_bucket {bucket} must be >= 1")
        self.bucket = bucket
        self.on_drop = on_drop
        self._statics: dict[tuple[object, ...], _Static] = {}
        self._last: tuple[ContextCache, int, ContextCache] | None = None  # (source, n, its static)

    def load(self, cache: ContextCache, n: int) -> ContextCache:
        """The persistent cache for `cache` with a current frame of n tokens, filled with its contents once
        per source cache (later steps on the same cache get it back without a copy)."""
        if self._last is not None and self._last[0] is cache and self._last[1] == n:
            return self._last[2]
        lc, t_hist = cache.key_mask.shape[1], _temporal_frames(cache)
        lcap, tcap = capacity(lc, self.bucket), capacity(t_hist, TEMPORAL_BUCKET)
        key = (n, cache.batch, cache.full_grid, cache.pooled_vec.dtype, cache.pooled_vec.device)
        static = self._statics.pop(key, None)
        if static is None or (static.lcap, static.tcap) != (lcap, tcap):
            if static is not None:
                self._drop(static)
            while len(self._statics) >= MAX_STATICS:  # other sizes (resolutions) than this job's: oldest out
                self._drop(self._statics.pop(next(iter(self._statics))))
            static = _allocate(cache, n, lcap, tcap)
        self._statics[key] = static  # most recently used last
        _fill(static, cache, lc, t_hist)
        self._last = (cache, n, static.cache)
        return static.cache

    def clear(self) -> None:
        for static in self._statics.values():
            self._drop(static)
        self._statics.clear()
        self._last = None

    def _drop(self, static: _Static) -> None:
        if self.on_drop is not None:
            self.on_drop(static.cache)


def _temporal_frames(cache: ContextCache) -> int:
    entry = next((e for e in cache.single if isinstance(e, MMDiMContext)), None)
    return 0 if entry is None else entry.temporal.k.shape[2]


def _padded_kv(kv: KV, slots: int) -> KV:
    b, h, _, d = kv.k.shape
    return KV(kv.k.new_zeros(b, h, slots, d), kv.v.new_zeros(b, h, slots, d))


def _allocate(cache: ContextCache, n: int, lcap: int, tcap: int) -> _Static:
    key_mask = cache.key_mask.new_zeros(cache.batch, lcap + n)
    temporal_mask = cache.key_mask.new_zeros(1, 1, 1, tcap)
    single: list[MMDiMContext | KV] = []
    for entry in cache.single:
        if isinstance(entry, MMDiMContext):
            tk = entry.temporal.k
            shape = (tk.shape[0], tk.shape[1], tcap, tk.shape[3])
            temporal = TemporalKV(tk.new_zeros(shape), tk.new_zeros(shape), temporal_mask)
            ssm = SSMState(torch.empty_like(entry.ssm.conv), torch.empty_like(entry.ssm.ssm))
            single.append(MMDiMContext(ssm, temporal))
        else:
            single.append(_padded_kv(entry, lcap + n))
    static = dataclasses.replace(
        cache,
        frame=torch.zeros(1, dtype=torch.long, device=cache.pooled_vec.device),
        key_mask=key_mask,
        pooled_vec=torch.empty_like(cache.pooled_vec),
        ctx_vec=torch.empty_like(cache.ctx_vec),
        dual=[_padded_kv(kv, lcap + n) for kv in cache.dual],
        single=single,
        attention=FixedContextAttention(key_mask[:, None, None]),
    )
    return _Static(static, lcap, tcap, key_mask, temporal_mask)


def _copy_kv(dst: KV, src: KV, lc: int) -> None:
    """Context keys/values into [0, lc); the padding after them zeroed (masked anyway; no stale values)."""
    for d, s in ((dst.k, src.k), (dst.v, src.v)):
        d[:, :, :lc].copy_(s)
        d[:, :, lc:].zero_()


@torch.no_grad()
def _fill(static: _Static, cache: ContextCache, lc: int, t_hist: int) -> None:
    dst = static.cache
    assert isinstance(dst.frame, Tensor)
    dst.frame.fill_(int(cache.frame))
    dst.pooled_vec.copy_(cache.pooled_vec)
    dst.ctx_vec.copy_(cache.ctx_vec)
    static.key_mask.zero_()
    static.key_mask[:, :lc].copy_(cache.key_mask)
    static.key_mask[:, static.lcap :] = True  # the current frame's own keys
    static.temporal_mask.zero_()
    static.temporal_mask[..., :t_hist] = True
    for d, s in zip(dst.dual, cache.dual, strict=True):
        _copy_kv(d, s, lc)
    for d, s in zip(dst.single, cache.single, strict=True):
        if isinstance(d, MMDiMContext):
            assert isinstance(s, MMDiMContext)
            d.ssm.conv.copy_(s.ssm.conv)
            d.ssm.ssm.copy_(s.ssm.ssm)
            _copy_kv(KV(d.temporal.k, d.temporal.v), KV(s.temporal.k, s.temporal.v), t_hist)
        else:
            assert isinstance(s, KV)
            _copy_kv(d, s, lc)
