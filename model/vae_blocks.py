"""Building blocks of the causal 3D VAE: causal convs, per-frame GroupNorm, ResNet blocks, re-sampling.

Every block takes an optional CausalCache. Without one, the input is a whole clip that starts at frame 0.
With one, the input is the next chunk of a stream and each causal conv prepends the inputs it kept from the
previous chunk, so chunk-by-chunk results equal the whole-clip result (MAGVIT-v2 style causal convs).

Time padding [decided]: on the past side only, by replicating the first frame (as PyramidFlow's causal VAE
does). Replication rather than zeros keeps a still image encoded alone identical to a one-frame video and
avoids a dark-border transient on frame 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class CausalCache:
    """Streaming state of one decoder pass: per causal conv, the last (kernel_t - 1) frames of its input."""

    tails: dict[int, torch.Tensor] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # temporal up-samplers that have seen frame 0
    # decode at most this many frames per block call (None: all at once); see run_chunked
    max_frames: int | None = None


Step = Callable[[torch.Tensor, "CausalCache | None"], torch.Tensor]


def run_chunked(steps: Sequence[Step], x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
    """x (B, C, T, H, W) through steps in order. Once a step's input has more than cache.max_frames frames,
    that step and every later one run on consecutive chunks of at most max_frames frames, one chunk through
    all of them before the next, and the outputs are joined in time. Every step is causal and streams
    through the cache, so this is the unchunked result; only the activations alive at once shrink (after
    the last temporal up-sampling a latent frame is 8 full-resolution frames)."""
    chunk = None if cache is None else cache.max_frames
    for i, step in enumerate(steps):
        if chunk is not None and x.shape[2] > chunk:
            rest = steps[i:]
            return torch.cat([run_chunked(rest, part, cache) for part in x.split(chunk, dim=2)], dim=2)
        x = step(x, cache)
    return x


class CausalConv3d(nn.Module):
    """Conv3d whose output frame t depends on input frames <= t only (zeros-padded in space)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: tuple[int, int, int] = (1, 1, 1),
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.time_pad = kernel - 1
        self.conv = nn.Conv3d(
            in_ch,
            out_ch,
            kernel,
            stride=stride,
            padding=(0, kernel // 2, kernel // 2),
            device=device,
            dtype=dtype,
        )

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # x: (B, C, T, H, W)
        key = id(self)
        if cache is not None and key in cache.tails:
            past = cache.tails[key]
        else:
            past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
        x = torch.cat([past, x], dim=2)  # (B, C, time_pad + T, H, W)
        if cache is not None:
            if self.conv.stride[0] != 1:
                raise ValueError("streaming through a time-strided conv is not supported")
            # clone: a slice would keep the whole (time_pad + T)-frame concatenation alive (T = 8 after
            # temporal up-sampling), ~5x the memory the cache needs
            cache.tails[key] = x[:, :, x.shape[2] - self.time_pad :].detach().clone()
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame: statistics over time would leak the future into the past.

    Statistics in fp32 whatever the activation dtype [dtype policy: norms in fp32]. Without autograd
    (decode) one frame at a time into a tensor of the input's dtype and layout: the fp32 copies then hold one
    frame, not all T (8 after the last temporal up-sampling), and no (B*T, C, H, W) transposed copy is made.
    The same per-frame GroupNorm either way (tests/model/test_vae.py compares them).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        if torch.is_grad_enabled() and x.requires_grad:  # training: one batched call, autograd-friendly
            y = rearrange(x, "b c t h w -> (b t) c h w")  # (B*T, C, H, W)
            y = F.group_norm(y.float(), self.num_groups, w, bias, self.eps).to(x.dtype)
            return rearrange(y, "(b t) c h w -> b c t h w", b=x.shape[0])
        out = torch.empty_like(x)
        for t in range(x.shape[2]):  # the write casts back to x's dtype
            out[:, :, t] = F.group_norm(x[:, :, t].float(), self.num_groups, w, bias, self.eps)
        return out


class ResNetBlock(nn.Module):
    """GroupNorm -> SiLU -> CausalConv3d, twice, plus a (1x1x1 projected where needed) skip."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        groups: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = FrameGroupNorm(groups, in_ch, eps=1e-6, **kw)
        self.conv1 = CausalConv3d(in_ch, out_ch, **kw)
        self.norm2 = FrameGroupNorm(groups, out_ch, eps=1e-6, **kw)
        self.conv2 = CausalConv3d(out_ch, out_ch, **kw)
        self.skip = nn.Conv3d(in_ch, out_ch, 1, **kw) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided causal conv: /2 in space and/or time. In time, 1 + 2k frames -> 1 + k, frame 0 alone."""

    def __init__(
        self,
        ch: int,
        spatial: bool,
        temporal: bool,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        s, t = (2 if spatial else 1), (2 if temporal else 1)
        self.conv = CausalConv3d(ch, ch, stride=(t, s, s), device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return self.conv(x, cache)


class Upsample(nn.Module):
    """Nearest x2 in space and/or time, then a causal conv. In time, 1 + k frames -> 1 + 2k: each frame is
    repeated except frame 0, so the first frame stays a still image decoded alone."""

    def __init__(
        self,
        ch: int,
        spatial: bool,
        temporal: bool,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = CausalConv3d(ch, ch, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.spatial:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # (B, C, T, 2H, 2W)
        if self.temporal:
            x = x.repeat_interleave(2, dim=2)  # (B, C, 2T, H, W)
            if cache is None or id(self) not in cache.started:
                x = x[:, :, 1:]  # frame 0 is not doubled: (B, C, 2T - 1, H, W)
            if cache is not None:
                cache.started.add(id(self))
        return self.conv(x, cache)


class Stage(nn.Module):
    """`layers` ResNet blocks followed by an optional re-sampler (one encoder or decoder block)."""

    def __init__(self, blocks: list[ResNetBlock], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cache)
        if self.resample is not None:
            x = self.resample(x, cache)
        return x
