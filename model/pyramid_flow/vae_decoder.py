"""The decoder of PyramidFlow-miniFLUX's causal video VAE (video_vae/ in jy0205/Pyramid-Flow), in our
streaming interface: decoder(z, cache) as model/vae.py's Decoder, so tiling and the streaming decoders work
unchanged. Module names follow PyramidFlow's state dict, so its decoder tensors load under the same names.

Differences from model/vae.py's decoder: causal convs pad the past with zeros (not the first frame), a
post-quant 1x1x1 conv on the latent, a per-frame single-head self-attention between the two mid-block ResNets,
spatial up-sampling by a conv to 4x channels + pixel shuffle, temporal up-sampling by a conv to 2x channels +
interleaving (the first frame's duplicate dropped), up-sampling after the block's ResNets, spatial then
temporal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from model.vae_blocks import CausalCache, FrameGroupNorm, run_chunked

Device = torch.device | str | None


class ZeroPadCausalConv(nn.Module):
    """Conv3d, output frame t from input frames <= t; the past before frame 0 is zeros, space zero-padded."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, device: Device = None, dtype: Any = None):
        super().__init__()
        self.time_pad = kernel - 1
        # zeros in space by the convolution itself: an F.pad first would copy every activation once more
        p = kernel // 2
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, padding=(0, p, p), device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.time_pad:
            key = id(self)
            if cache is not None and key in cache.tails:
                past = cache.tails[key]
            else:
                past = x.new_zeros(*x.shape[:2], self.time_pad, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache.tails[key] = x[:, :, x.shape[2] - self.time_pad :].detach().clone()
        return self.conv(x)


class Resnet(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int, *, device: Device = None, dtype: Any = None):
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = FrameGroupNorm(groups, in_ch, eps=1e-6, **kw)
        self.conv1 = ZeroPadCausalConv(in_ch, out_ch, **kw)
        self.norm2 = FrameGroupNorm(groups, out_ch, eps=1e-6, **kw)
        self.conv2 = ZeroPadCausalConv(out_ch, out_ch, **kw)
        self.conv_shortcut = ZeroPadCausalConv(in_ch, out_ch, kernel=1, **kw) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x, cache)
        return skip + h


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame, GroupNorm first, residual."""

    def __init__(self, ch: int, groups: int, *, device: Device = None, dtype: Any = None):
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.group_norm = nn.GroupNorm(groups, ch, eps=1e-6, **kw)
        self.to_q = nn.Linear(ch, ch, **kw)
        self.to_k = nn.Linear(ch, ch, **kw)
        self.to_v = nn.Linear(ch, ch, **kw)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch, **kw)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        y = rearrange(x, "b c t h w -> (b t) c h w")
        w32 = self.group_norm.weight.float(), self.group_norm.bias.float()
        n = F.group_norm(y.float(), self.group_norm.num_groups, *w32, self.group_norm.eps).to(y.dtype)
        n = rearrange(n, "bt c h w -> bt (h w) c")
        q, k, v = (lin(n)[:, None] for lin in (self.to_q, self.to_k, self.to_v))  # (bt, 1, hw, c)
        out = self.to_out[0](F.scaled_dot_product_attention(q, k, v)[:, 0])  # (bt, hw, c)
        out = rearrange(out, "(b t) (h w) c -> b c t h w", b=b, t=t, h=h, w=w)
        return x + out


class MidBlock(nn.Module):
    def __init__(self, ch: int, groups: int, *, device: Device = None, dtype: Any = None):
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.resnets = nn.ModuleList([Resnet(ch, ch, groups, **kw), Resnet(ch, ch, groups, **kw)])
        self.attentions = nn.ModuleList([FrameAttention(ch, groups, **kw)])

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class SpatialUp(nn.Module):
    """Conv to 4x channels, then each channel group of 4 becomes a 2x2 pixel block."""

    def __init__(self, ch: int, *, device: Device = None, dtype: Any = None):
        super().__init__()
        self.conv = ZeroPadCausalConv(ch, 4 * ch, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return rearrange(self.conv(x, cache), "b (c p q) t h w -> b c t (h p) (w q)", p=2, q=2)


class TemporalUp(nn.Module):
    """Conv to 2x channels, each frame becomes two; frame 0's first copy is dropped (1 + k -> 1 + 2k)."""

    def __init__(self, ch: int, *, device: Device = None, dtype: Any = None):
        super().__init__()
        self.conv = ZeroPadCausalConv(ch, 2 * ch, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        y = rearrange(self.conv(x, cache), "b (c p) t h w -> b c (t p) h w", p=2)
        if cache is None or id(self) not in cache.started:
            y = y[:, :, 1:]
        if cache is not None:
            cache.started.add(id(self))
        return y


class UpBlock(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, layers: int, groups: int, spatial: bool, temporal: bool, **kw: Any
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            Resnet(in_ch if i == 0 else out_ch, out_ch, groups, **kw) for i in range(layers)
        )
        self.upsamplers = nn.ModuleList([SpatialUp(out_ch, **kw)]) if spatial else None
        self.temporal_upsamplers = nn.ModuleList([TemporalUp(out_ch, **kw)]) if temporal else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        for ups in (self.upsamplers, self.temporal_upsamplers):
            if ups is not None:
                x = ups[0](x, cache)
        return x


class PyramidFlowDecoder(nn.Module):
    """Unscaled latents (B, C, T, h, w) -> video (B, 3, 1 + tf*(T-1), H, W); streaming with a CausalCache."""

    def __init__(self, cfg: Any, *, device: Device = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        from model.vae import decoder_upsampling

        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        chs, g = cfg.decoder_channels, cfg.norm_groups
        self.post_quant_conv = ZeroPadCausalConv(cfg.latent_channels, cfg.latent_channels, kernel=1, **kw)
        self.conv_in = ZeroPadCausalConv(cfg.latent_channels, chs[0], **kw)
        self.mid_block = MidBlock(chs[0], g, **kw)
        blocks, prev = [], chs[0]
        for ch, (sp, tm) in zip(chs, decoder_upsampling(cfg), strict=True):
            blocks.append(UpBlock(prev, ch, cfg.decoder_layers, g, sp, tm, **kw))
            prev = ch
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = FrameGroupNorm(g, prev, eps=1e-6, **kw)
        self.conv_out = ZeroPadCausalConv(prev, cfg.in_channels, **kw)

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv_in(self.post_quant_conv(z, cache), cache)
        x = self.mid_block(x, cache)
        return run_chunked([*self.up_blocks, self._out], x, cache)

    def _out(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        return self.conv_out(F.silu(self.conv_norm_out(x)), cache)
