"""3D rotary position embedding (FLUX EmbedND-style) over (frame, row, column) of pyramid-packed video.

Frames of a compressed pyramid have different resolutions but cover the same extent: a token (i, j) of a
frame downsampled by s (= full token grid / its grid) sits at (frame, i*s + (s-1)/2, j*s + (s-1)/2), the
centre of the full-resolution cells it covers. Text tokens sit at position 0 on every axis (as FLUX).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Rope:
    cos: Tensor  # (L, Dh/2) fp32
    sin: Tensor  # (L, Dh/2) fp32

    @staticmethod
    def cat(parts: list[Rope]) -> Rope:
        return Rope(torch.cat([p.cos for p in parts]), torch.cat([p.sin for p in parts]))

    def __getitem__(self, sl: slice) -> Rope:
        return Rope(self.cos[sl], self.sin[sl])


def frame_positions(
    frame: int | Tensor,
    grid: tuple[int, int],
    full_grid: tuple[int, int],
    device: torch.device | str | None = None,
) -> Tensor:
    """Positions (gh*gw, 3) of one frame's tokens in raster order, in full-resolution token units. frame may
    be a one-element tensor (a CUDA graph then reads it on every replay instead of baking the number in)."""
    gh, gw = grid
    sh, sw = full_grid[0] / gh, full_grid[1] / gw
    rows = torch.arange(gh, dtype=torch.float32, device=device) * sh + (sh - 1) / 2
    cols = torch.arange(gw, dtype=torch.float32, device=device) * sw + (sw - 1) / 2
    pos = torch.empty(gh, gw, 3, dtype=torch.float32, device=device)
    pos[..., 0] = frame if isinstance(frame, Tensor) else float(frame)
    pos[..., 1] = rows[:, None]
    pos[..., 2] = cols[None, :]
    return pos.reshape(gh * gw, 3)  # (gh*gw, 3)


def text_positions(n: int, device: torch.device | str | None = None) -> Tensor:
    return torch.zeros(n, 3, dtype=torch.float32, device=device)  # (Lt, 3)


def rope_table(pos: Tensor, axes: tuple[int, ...], theta: float) -> Rope:
    """pos (L, n_axes) -> rotation angles for head dim sum(axes); each axis owns a contiguous slice."""
    angles = []
    for i, dim in enumerate(axes):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)
        angles.append(pos[:, i, None].double() * omega[None])  # (L, dim/2)
    ang = torch.cat(angles, dim=-1)  # (L, Dh/2)
    return Rope(torch.cos(ang).float(), torch.sin(ang).float())


def apply_rope(x: Tensor, pe: Rope) -> Tensor:
    """Rotate consecutive pairs of x (B, H, L, Dh) by pe (L, Dh/2); computed in fp32, returned in x.dtype."""
    xf = x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # (B, H, L, Dh/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * pe.cos - x1 * pe.sin, x0 * pe.sin + x1 * pe.cos], dim=-1)
    return out.reshape(x.shape).to(x.dtype)  # (B, H, L, Dh)
