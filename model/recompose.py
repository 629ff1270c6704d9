"""Multi-modal token re-composition for the MM-DiM scan.

The single-stream sequence is [text (Lt); video (Lv)]. The scan instead reads
  "paper":  [text, padding first][R_1 f_1] ... [R_T f_T][text, padding last]
  "causal": [text, padding first][R_1 f_1] ... [R_{k-1} f_{k-1}][text, padding last][R_k f_k]
(R_t a learned register of frame t). Both are one gather with a precomputed (B, S) index into
[sequence ; registers], S = 2*Lt + Lv + T. The inverse drops the registers, puts the video tokens back and
averages the two text copies, so inverse(recompose(x)) == x exactly. Note that "causal" with no current frame
(the context pass of the cache) is the "paper" layout of the history frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.config import ContextMode


@dataclass
class Recomposition:
    gather: Tensor  # (B, S) long: index into cat([x (Lt+Lv), registers (T)]) along the sequence
    text_first: Tensor  # (B, Lt) long: position in the scan of each text token's first copy
    text_second: Tensor  # (B, Lt) long: ... and of its second copy
    video: Tensor  # (Lv,) long: position in the scan of each video token
    text_len: int

    @property
    def length(self) -> int:
        return self.gather.shape[1]


def _pad_first_order(text_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Orders (B, Lt) of text positions: padding first (stable), and padding last (stable)."""
    first = torch.argsort(text_mask.to(torch.int8), dim=1, stable=True)
    last = torch.argsort((~text_mask).to(torch.int8), dim=1, stable=True)
    return first, last


def build_recomposition(
    text_mask: Tensor, frame_tokens: list[int], mode: ContextMode, has_current: bool
) -> Recomposition:
    """text_mask (B, Lt) bool; frame_tokens: tokens per frame, oldest first (the last one is the current
    frame when has_current). In "causal" mode with a current frame, the second text copy precedes it."""
    b, lt = text_mask.shape
    dev = text_mask.device
    first, last = _pad_first_order(text_mask)
    n_frames = len(frame_tokens)
    n_before = n_frames - 1 if (mode == "causal" and has_current) else n_frames
    starts = [lt + sum(frame_tokens[:f]) for f in range(n_frames)]  # frame starts in [text; video]
    reg_base = lt + sum(frame_tokens)  # registers follow the sequence in the gather source
    pieces: list[Tensor] = [first]
    video_pos: list[Tensor] = []
    pos = lt
    for f in range(n_frames):
        if f == n_before:
            pieces.append(last)
            second_at = pos
            pos += lt
        reg = torch.full((b, 1), reg_base + f, dtype=torch.long, device=dev)
        vid = torch.arange(starts[f], starts[f] + frame_tokens[f], device=dev).expand(b, -1)
        pieces += [reg, vid]
        video_pos.append(torch.arange(pos + 1, pos + 1 + frame_tokens[f], device=dev))
        pos += 1 + frame_tokens[f]
    if n_before == n_frames:
        pieces.append(last)
        second_at = pos
    gather = torch.cat(pieces, dim=1)  # (B, 2*Lt + Lv + T)
    rank = torch.arange(lt, device=dev).expand(b, -1)
    text_first = torch.empty_like(first).scatter_(1, first, rank)  # inverse permutation: token -> slot
    text_second = torch.empty_like(last).scatter_(1, last, rank) + second_at
    video = torch.cat(video_pos) if video_pos else torch.zeros(0, dtype=torch.long, device=dev)
    return Recomposition(gather, text_first, text_second, video, lt)


def _batch_index(idx: Tensor) -> Tensor:
    return torch.arange(idx.shape[0], device=idx.device)[:, None]  # (B, 1)


def recompose(x: Tensor, registers: Tensor, r: Recomposition) -> Tensor:
    """x (B, Lt+Lv, D), registers (T, D) for frames 0..T-1 -> scan sequence (B, S, D)."""
    src = torch.cat([x, registers.to(x.dtype)[None].expand(x.shape[0], -1, -1)], dim=1)  # (B, Lt+Lv+T, D)
    return src[_batch_index(r.gather), r.gather]


def inverse_recompose(y: Tensor, r: Recomposition) -> Tensor:
    """Scan output (B, S, D) -> (B, Lt+Lv, D): registers dropped, text = mean of its two copies."""
    bi = _batch_index(r.text_first)
    text = 0.5 * (y[bi, r.text_first] + y[bi, r.text_second])  # (B, Lt, D)
    return torch.cat([text, y[:, r.video]], dim=1)
