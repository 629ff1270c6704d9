"""Joint attention over [text; video] for the MM-DiT and attention blocks, one class per backend.

The mask is structure, not data: a video token of frame f sees valid text and frames <= f; text sees valid
text only ("causal") or everything ("paper"); a padded text token is never a key except to itself. Backends:
- "sdpa_mask": the dense (B, 1, L, L) bool mask into SDPA (reference; rules out the flash kernel).
- "flex": FlexAttention with a BlockMask built from frame ids and key validity (compiled on CUDA).
- "sdpa_split": no dense mask: rows with the same text padding share a group, valid text keys are packed,
  and each frame's queries attend to one key prefix with no mask at all, so SDPA may take the flash path.
Cached steps (the current frame against a context cache) only need a key-padding mask; the "flex" and
"sdpa_split" context attention keep [context | current] keys in one preallocated buffer per block and write
only the current frame's keys each step (no per-step concatenation; static addresses for CUDA graphs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from model.runtime import AttentionBackend

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]  # q, k, v (B, H, L, Dh) -> (B, L, H*Dh)
# q, k, v (B, H, n, Dh) of the current frame, cached context k, v (B, H, Lc, Dh) -> (B, n, H*Dh)
CachedAttend = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

_compiled_flex: dict[str, Any] = {}


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: Any) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type != "cuda":  # unfused reference implementation: correctness only
        return flex_attention(q, k, v, block_mask=block_mask)  # type: ignore[return-value]
    if "fn" not in _compiled_flex:
        _compiled_flex["fn"] = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex["fn"](q, k, v, block_mask=block_mask)  # type: ignore[no-any-return]


def _heads_last(out: Tensor) -> Tensor:
    return rearrange(out, "B H L D -> B L (H D)")


def _text_query_frame(causal: bool, text_sees_first_frame: bool) -> int:
    """The last frame a text query may see: -1 text only ("causal"), 0 text and frame 0 ("pyramidflow":
    PyramidFlow gives text the temporal position of frame 0), every frame otherwise ("paper")."""
    if text_sees_first_frame:
        return 0
    return -1 if causal else 2**31


def joint_mask(
    text_mask: Tensor, frame_ids: Tensor, causal: bool, text_sees_first_frame: bool = False
) -> Tensor:
    """(B, 1, L, L) bool over [text; video] (the reference mask; see the module docstring)."""
    b, lt = text_mask.shape
    dev = text_mask.device
    text_frame = torch.full((lt,), -1, dtype=torch.long, device=dev)
    key_frame = torch.cat([text_frame, frame_ids])  # (L,)
    text_query = torch.full(
        (lt,), _text_query_frame(causal, text_sees_first_frame), dtype=torch.long, device=dev
    )
    query_frame = torch.cat([text_query, frame_ids])  # (L,)
    allowed = key_frame[None, :] <= query_frame[:, None]  # (L, L)
    key_ok = torch.cat([text_mask, text_mask.new_ones(b, frame_ids.numel())], dim=1)  # (B, L)
    eye = torch.eye(lt + frame_ids.numel(), dtype=torch.bool, device=dev)
    return ((allowed[None] & key_ok[:, None, :]) | eye[None])[:, None]  # (B, 1, L, L)


@dataclass(frozen=True)
class JointLayout:
    """Structure of one sequence [text; frames...]."""

    text_mask: Tensor  # (B, Lt) bool
    frame_sizes: tuple[int, ...]  # tokens of each frame, oldest first
    causal: bool  # context_mode "causal": text attends to text only
    text_sees_first_frame: bool = False  # context_mode "pyramidflow": text attends to text and frame 0

    def frame_ids(self) -> Tensor:
        dev = self.text_mask.device
        ids = [torch.full((n,), i, dtype=torch.long, device=dev) for i, n in enumerate(self.frame_sizes)]
        return torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long, device=dev)  # (Lv,)


@dataclass(frozen=True)
class RowGroup:
    rows: Tensor | None  # (b,) long batch rows; None = all rows (no gather needed)
    text_idx: Tensor  # (n_valid,) long indices of the valid text tokens of these rows


def row_groups(text_mask: Tensor) -> list[RowGroup]:
    """Batch rows grouped by identical text padding (one host sync; done once per plan/context)."""
    keys = [tuple(r) for r in text_mask.cpu().tolist()]
    dev = text_mask.device
    groups: dict[tuple[bool, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = []
    for key, rows in groups.items():
        idx = torch.tensor([j for j, ok in enumerate(key) if ok], dtype=torch.long, device=dev)
        sel = None if len(groups) == 1 else torch.tensor(rows, dtype=torch.long, device=dev)
        out.append(RowGroup(sel, idx))
    return out


def _rows(x: Tensor, g: RowGroup) -> Tensor:
    return x if g.rows is None else x.index_select(0, g.rows)


class MaskAttention:
    def __init__(self, layout: JointLayout) -> None:
        mask = joint_mask(layout.text_mask, layout.frame_ids(), layout.causal, layout.text_sees_first_frame)
        self.mask = mask  # (B, 1, L, L)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=self.mask)
        return _heads_last(out)


class FlexJointAttention:
    def __init__(self, layout: JointLayout) -> None:
        from torch.nn.attention.flex_attention import create_block_mask

        tm = layout.text_mask
        b, lt = tm.shape
        text_frame = torch.full((lt,), -1, dtype=torch.long, device=tm.device)
        key_frame = torch.cat([text_frame, layout.frame_ids()])  # (L,)
        query_frame = key_frame.clone()
        query_frame[:lt] = _text_query_frame(layout.causal, layout.text_sees_first_frame)
        key_ok = torch.cat([tm, tm.new_ones(b, key_frame.numel() - lt)], dim=1)  # (B, L)

        def mask_mod(bi: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return ((key_frame[ki] <= query_frame[qi]) & key_ok[bi, ki]) | (qi == ki)

        n = key_frame.numel()
        self.block_mask = create_block_mask(mask_mod, b, None, n, n, device=str(tm.device))

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return _heads_last(_flex(q, k.to(q.dtype), v.to(q.dtype), self.block_mask))


class SplitAttention:
    """Per row group: text queries with a small (Lt x Lt|L) mask; each frame's queries against the key prefix
    [valid text; frames <= f] with no mask (flash-eligible)."""

    def __init__(self, layout: JointLayout) -> None:
        if layout.text_sees_first_frame:
            raise ValueError(
                "attention_backend 'sdpa_split' does not implement context_mode 'pyramidflow' "
                "(text attending to frame 0); use 'sdpa_mask' or 'flex'"
            )
        tm = layout.text_mask
        self.lt, self.causal = tm.shape[1], layout.causal
        self.groups = row_groups(tm)
        self.frame_bounds: list[tuple[int, int]] = []
        lv = 0
        for n in layout.frame_sizes:
            self.frame_bounds.append((lv, lv + n))
            lv += n
        eye = torch.eye(self.lt, self.lt + (0 if layout.causal else lv), dtype=torch.bool, device=tm.device)
        key_ok = torch.cat([tm, tm.new_ones(tm.shape[0], 0 if layout.causal else lv)], dim=1)
        self.text_masks = [(_rows(key_ok, g)[:, None, None, :] | eye) for g in self.groups]  # (b,1,Lt,Lk)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        k, v = k.to(q.dtype), v.to(q.dtype)
        if len(self.groups) == 1:
            return self._group(q, k, v, self.groups[0], self.text_masks[0])
        out = q.new_empty(q.shape[0], q.shape[2], q.shape[1] * q.shape[3])  # (B, L, H*Dh)
        for g, tmask in zip(self.groups, self.text_masks, strict=True):
            assert g.rows is not None
            out[g.rows] = self._group(_rows(q, g), _rows(k, g), _rows(v, g), g, tmask)
        return out

    def _group(self, q: Tensor, k: Tensor, v: Tensor, g: RowGroup, tmask: Tensor) -> Tensor:
        lt = self.lt
        kt = k[:, :, :lt] if self.causal else k
        vt = v[:, :, :lt] if self.causal else v
        parts = [F.scaled_dot_product_attention(q[:, :, :lt], kt, vt, attn_mask=tmask)]  # (b, H, Lt, Dh)
        if self.frame_bounds:
            kk = torch.cat([k.index_select(2, g.text_idx), k[:, :, lt:]], dim=2)  # (b, H, n_text+Lv, Dh)
            vv = torch.cat([v.index_select(2, g.text_idx), v[:, :, lt:]], dim=2)
            nt = g.text_idx.numel()
            for s, e in self.frame_bounds:
                qf = q[:, :, lt + s : lt + e]
                parts.append(F.scaled_dot_product_attention(qf, kk[:, :, : nt + e], vv[:, :, : nt + e]))
        return _heads_last(torch.cat(parts, dim=2))


def build_joint_attention(layout: JointLayout, backend: AttentionBackend) -> Attend:
    if backend == "sdpa_mask":
        return MaskAttention(layout)
    if backend == "flex":
        return FlexJointAttention(layout)
    return SplitAttention(layout)


# ---- cached steps: the current frame against a context cache -----------------------------------------


@dataclass
class _Buffers:
    k: list[Tensor]  # per row group: (b, H, Lc_packed + n, Dh)
    v: list[Tensor]
    n: int


@dataclass
class ContextAttention:
    """Attention of the current frame's n tokens against cached context K/V (one instance per cache).

    key_mask (B, Lc) bool marks the context keys (False = padded text). Call as attend(slot, q, k, v, ck, cv)
    with slot the block's index: the buffers of that block are filled once and reused by later steps."""

    key_mask: Tensor
    backend: AttentionBackend
    groups: list[RowGroup] = field(init=False)
    buffers: dict[int, _Buffers] = field(default_factory=dict)
    block_masks: dict[int, Any] = field(default_factory=dict)
    masks: dict[int, Tensor] = field(default_factory=dict)  # sdpa_mask: key mask per current-frame length

    def __post_init__(self) -> None:
        self.groups = row_groups(self.key_mask) if self.backend == "sdpa_split" else []

    def __call__(self, slot: int, q: Tensor, k: Tensor, v: Tensor, ck: Tensor, cv: Tensor) -> Tensor:
        """q/k/v (B, H, n, Dh) current frame; ck/cv (B, H, Lc, Dh) context -> (B, n, H*Dh)."""
        k, v, ck, cv = k.to(q.dtype), v.to(q.dtype), ck.to(q.dtype), cv.to(q.dtype)
        n = q.shape[2]
        buf = self._buffers(slot, ck, cv, n)
        if self.backend in ("sdpa_mask", "flex"):  # [context | current]: a step writes only its own n keys
            _write_current(buf.k[0], buf.v[0], k, v)
            if self.backend == "flex":
                return _heads_last(_flex(q, buf.k[0], buf.v[0], self._block_mask(q.shape[0], n)))
            return _heads_last(F.scaled_dot_product_attention(q, buf.k[0], buf.v[0], attn_mask=self._mask(n)))
        outs = []
        for g, kb, vb in zip(self.groups, buf.k, buf.v, strict=True):
            _write_current(kb, vb, _rows(k, g), _rows(v, g))
            outs.append(F.scaled_dot_product_attention(_rows(q, g), kb, vb))  # (b, H, n, Dh)
        if len(outs) == 1:
            return _heads_last(outs[0])
        out = q.new_empty(q.shape[0], q.shape[1], n, q.shape[3])
        for g, o in zip(self.groups, outs, strict=True):
            assert g.rows is not None
            out[g.rows] = o
        return _heads_last(out)

    def _buffers(self, slot: int, ck: Tensor, cv: Tensor, n: int) -> _Buffers:
        buf = self.buffers.get(slot)
        if buf is not None and buf.n == n:
            return buf
        if self.backend in ("flex", "sdpa_mask"):
            ks, vs = [ck], [cv]
        else:  # pack: the group's valid context keys (valid text, all history), in order
            ks = [_rows(ck, g).index_select(2, g.text_idx) for g in self.groups]
            vs = [_rows(cv, g).index_select(2, g.text_idx) for g in self.groups]
        buf = _Buffers([self._pad(x, n) for x in ks], [self._pad(x, n) for x in vs], n)
        self.buffers[slot] = buf
        return buf

    @staticmethod
    def _pad(x: Tensor, n: int) -> Tensor:
        out = x.new_empty(x.shape[0], x.shape[1], x.shape[2] + n, x.shape[3])
        out[:, :, : x.shape[2]].copy_(x)
        return out

    def _mask(self, n: int) -> Tensor:
        """(B, 1, 1, Lc+n) bool: the context's key mask, then the current frame's n keys (all valid)."""
        if n not in self.masks:
            b = self.key_mask.shape[0]
            self.masks[n] = torch.cat([self.key_mask, self.key_mask.new_ones(b, n)], dim=1)[:, None, None]
        return self.masks[n]

    def _block_mask(self, b: int, n: int) -> Any:
        if n not in self.block_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            key_ok = self._mask(n)[:, 0, 0]  # (B, Lc+n)

            def mask_mod(bi: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
                return key_ok[bi, ki]

            lk = key_ok.shape[1]
            self.block_masks[n] = create_block_mask(mask_mod, b, None, n, lk, device=str(key_ok.device))
        return self.block_masks[n]


@dataclass
class FixedContextAttention:
    """CachedAttend for fixed-shape steps (model/fixed_shapes.py): ck/cv are persistent buffers
    (B, H, Lcap + n, Dh) holding the padded context and a slot for the current frame's n keys; mask
    (B, 1, 1, Lcap + n) bool is False on the padding. Same call as ContextAttention's."""

    mask: Tensor

    def __call__(self, slot: int, q: Tensor, k: Tensor, v: Tensor, ck: Tensor, cv: Tensor) -> Tensor:
        _write_current(ck, cv, k, v)
        return _heads_last(
            F.scaled_dot_product_attention(q, ck.to(q.dtype), cv.to(q.dtype), attn_mask=self.mask)
        )


def _write_current(kb: Tensor, vb: Tensor, k: Tensor, v: Tensor) -> None:
    """The current frame's keys/values (B, H, n, Dh) into the last n slots of a [context | current] buffer."""
    n = k.shape[2]
    kb[:, :, -n:].copy_(k)
    vb[:, :, -n:].copy_(v)
