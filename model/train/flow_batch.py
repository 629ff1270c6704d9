"""Pyramidal flow-matching training examples, built exactly as model/sampler.py will meet them [pyramidflow].

For unit k (latent frame) and stage s of S:
- history: clean frames 0..k-1 compressed as the sampler does (frame k-1 at the stage's level, k-2 one level
  lower, ..., the rest at the lowest level; levels are bilinear halvings of the full-resolution frame);
- start point (sigma = stage.start, the jump-point corrected start): stage 0 starts from pure noise; later
  stages from (1 - start) * up_nearest(clean at level s-1) + start * noise, which is what renoising the
  previous stage's end point gives in distribution (signal a*o of the upsampled frame, white noise 1 - a*o);
- end point (sigma = stage.end): (1 - end) * clean at level s + end * noise, the same noise;
- x at sigma = end + r (start - end), r ~ U(0, 1), lies on the straight line between them, and the target is
  its constant velocity d x / d sigma = (start point - end point) / (start - end); for stage 0 this is
  noise - x0, the sampler's convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The sampler's own pyramid/history helpers: training must compress the history the same way.
from model.sampler import _frame_pyramid, _history
from model.schedule import Stage, upsample_nearest2x


@dataclass
class FlowExample:
    """One (unit, stage) batch: network inputs and the velocity target."""

    x: torch.Tensor  # (B, C, h, w) noisy current frame at the stage's resolution
    t: torch.Tensor  # (B,) sigma * timestep_scale
    history: list[torch.Tensor]  # oldest first, each (B, C, h_j, w_j)
    target: torch.Tensor  # (B, C, h, w)


def frame_pyramids(latents: torch.Tensor, num_stages: int) -> list[list[torch.Tensor]]:
    """Clean latents (B, C, T, h, w) -> per frame [lowest, ..., full] levels, each (B, C, h_l, w_l)."""
    return [_frame_pyramid(latents[:, :, j], num_stages) for j in range(latents.shape[2])]


def corrupt_history(history: list[torch.Tensor], max_sigma: float, g: torch.Generator) -> list[torch.Tensor]:
    """Mix a little noise into the history (per example sigma ~ U(0, max_sigma)), so the network tolerates
    its own imperfect earlier frames at sampling time (PyramidFlow corrupts its condition frames too)."""
    if max_sigma <= 0 or not history:
        return history
    b = history[0].shape[0]
    sig = (torch.rand(b, generator=g, device=g.device) * max_sigma).to(history[0].device)[:, None, None, None]
    return [
        (1 - sig) * h + sig * torch.randn(h.shape, generator=g, device=g.device).to(h.device) for h in history
    ]


def flow_example(
    pyramids: list[list[torch.Tensor]],
    unit: int,
    stage: Stage,
    timestep_scale: float,
    g: torch.Generator,
    history_noise: float = 0.0,
) -> FlowExample:
    """Training inputs for (unit, stage) over the whole batch; noise from ``g`` (on the latents' device)."""
    clean = pyramids[unit][stage.index]  # (B, C, h, w)
    b, dev = clean.shape[0], clean.device
    noise = torch.randn(clean.shape, generator=g, device=g.device).to(dev)
    if stage.index == 0:
        start_point = noise
    else:
        low = upsample_nearest2x(pyramids[unit][stage.index - 1])  # (B, C, h, w)
        start_point = (1 - stage.start) * low + stage.start * noise
    end_point = (1 - stage.end) * clean + stage.end * noise
    r = torch.rand(b, generator=g, device=g.device).to(dev)[:, None, None, None]
    x = end_point + r * (start_point - end_point)
    sigma = stage.end + r.flatten() * (stage.start - stage.end)  # (B,)
    target = (start_point - end_point) / (stage.start - stage.end)
    history = corrupt_history(_history(pyramids, unit, stage.index), history_noise, g)
    return FlowExample(x=x, t=sigma * timestep_scale, history=history, target=target)
