"""Phase 1: the tiny causal VAE on world clips (L1 + L2 + small KL + edge loss), then latent normalisation.

Defaults: L1 and L2 weigh shape pixels 21:1 against background (fg_weight 20); the edge term (weight 0.5)
weighs the shape dilated by 2 px 21:1 too (edge_fg_weight 20, edge_band_px 2; edge_fg_weight 0 is the plain
mean that runs up to 6 used). Each weight map has mean 1 per frame, so the loss scale stays the plain mean's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.train.common import Budget, LossLog, autocast, clip_batch
from model.train.world import random_specs
from model.vae import CausalVAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 2000
    max_seconds: float = 1e9
    batch: int = 16
    lr: float = 1e-3
    kl_weight: float = 1e-6
    edge_weight: float = 0.5
    # Reconstruction weight of shape pixels relative to background ones (0: plain mean). A shape covers 2-7%
    # of a frame: with a plain mean the first VAE learned the background and lost the shapes' colours (48
    # held-out clips through encode + decode: colour right in 23%, all three attributes in 12.5%).
    fg_weight: float = 20.0
    # The edge term weighted the same way (0: its plain mean, the behaviour up to run 6). Edge pixels are
    # ~1% of a frame, so a plain mean barely sees a rounded triangle tip or a halo (0.5 x 0.018 of a 0.107
    # total at the end of run 5), and the detector reads shape from exactly those pixels (box fill ratio).
    edge_fg_weight: float = 20.0
    # The edge term's shape pixels are the shape dilated by this many pixels (0: the shape alone), so that a
    # halo just outside the shape and the missing tips/corners next to it weigh like the shape.
    edge_band_px: int = 2
    log_every: int = 50


def edge_loss(recon: torch.Tensor, video: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between spatial finite differences: keeps shape edges (and so fill ratios) crisp.

    weights (B, 1, F, H, W) per pixel (foreground_weights) or None for the plain mean. A difference
    between two neighbours weighs the mean of their two weights, renormalised to mean 1 per frame: a
    uniform error costs the same as under the plain mean, an error on the weighted pixels more."""
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
    if weights is None:
        return F.l1_loss(dx(recon), dx(video)) + F.l1_loss(dy(recon), dy(video))
    sx = lambda v: v[..., :, 1:] + v[..., :, :-1]  # noqa: E731
    sy = lambda v: v[..., 1:, :] + v[..., :-1, :]  # noqa: E731
    total = recon.new_zeros((), dtype=torch.float32)
    for d, s in ((dx, sx), (dy, sy)):
        w = s(weights)
        w = w / w.mean(dim=(2, 3, 4), keepdim=True)  # (B, 1, F, H', W'), mean 1 per frame
        total = total + ((d(recon) - d(video)).abs() * w).mean()
    return total


def foreground_weights(video: torch.Tensor, fg_weight: float, band_px: int = 0) -> torch.Tensor:
    """(B, 1, F, H, W) per-pixel loss weights, mean 1: 1 + fg_weight on pixels that differ from the frame's
    background, and (band_px > 0) on those within band_px pixels of one (a square max filter). The world
    keeps every shape off the border, so a frame's corner pixel is its background."""
    background = video[..., :1, :1]  # (B, 3, F, 1, 1)
    fg = ((video - background).abs().amax(dim=1, keepdim=True) > 0.1).float()  # (B, 1, F, H, W)
    if band_px > 0:
        k = 2 * band_px + 1
        fg = F.max_pool3d(fg, (1, k, k), stride=1, padding=(0, band_px, band_px))
    w = 1.0 + fg_weight * fg
    return w / w.mean(dim=(2, 3, 4), keepdim=True)


def vae_loss(
    vae: CausalVAE, video: torch.Tensor, tc: VAETrainConfig, g: torch.Generator
) -> dict[str, torch.Tensor]:
    mean, logvar = vae.encode_dist(video)  # (B, C, T, h, w) each
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g, device=g.device).to(mean)
    recon = vae.decoder(z)  # (B, 3, F, H, W)
    rec = recon.float()
    w = foreground_weights(video, tc.fg_weight)  # mean 1: the loss scale of the plain mean
    l1, l2 = ((rec - video).abs() * w).mean(), ((rec - video).square() * w).mean()
    kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean()
    edge_w = foreground_weights(video, tc.edge_fg_weight, tc.edge_band_px) if tc.edge_fg_weight > 0 else None
    edge = edge_loss(rec, video, edge_w)
    total = l1 + l2 + tc.kl_weight * kl * mean.shape[1] + tc.edge_weight * edge
    with torch.no_grad():  # the plain-mean edge term as well, comparable across weightings and with run 5
        edge_plain = edge_loss(rec, video) if edge_w is not None else edge
    return {"loss": total, "l1": l1, "l2": l2, "kl": kl, "edge": edge, "edge_plain": edge_plain}


def train_vae(
    vae: CausalVAE, cfg: ModelConfig, tc: VAETrainConfig, device: torch.device, seed: int, loss_log: LossLog
) -> int:
    """Train in place; returns the number of steps taken."""
    g_cpu = torch.Generator().manual_seed(seed)
    g_dev = torch.Generator(device).manual_seed(seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=tc.lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    budget, step = Budget(tc.steps, tc.max_seconds), 0
    vae.train()
    while not budget.done(step):
        video = clip_batch(random_specs(tc.batch, g_cpu), cfg, g_cpu, device)
        with autocast(device):
            losses = vae_loss(vae, video, tc, g_dev)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % tc.log_every == 0 or step == 1 or budget.done(step):
            loss_log.write(step, **{k: round(v.item(), 6) for k, v in losses.items()})
    vae.eval()
    return step


@torch.no_grad()
def normalise_latents(
    vae: CausalVAE, cfg: ModelConfig, device: torch.device, seed: int, n: int = 64
) -> list[float]:
    """Fold a per-channel 1/std into the encoder's mean head and std into the decoder's input conv.

    The preset keeps scaling_factor 1 and shift 0, so this makes the latents the sampler sees ~unit variance
    (what flow matching from N(0, I) expects) with config.py untouched. Exact: the decoder's causal conv pads
    by zeros in space and by replicating the first frame in time, both commute with a per-channel scale.
    """
    g = torch.Generator().manual_seed(seed)
    mean = vae.encode_dist(clip_batch(random_specs(n, g), cfg, g, device))[0]  # (n, C, T, h, w)
    std = mean.float().transpose(0, 1).flatten(1).std(dim=1).clamp_min(1e-3)  # (C,)
    c = std.numel()
    enc, dec = vae.encoder.conv_out.conv, vae.decoder.conv_in.conv
    enc.weight[:c] /= std[:, None, None, None, None].to(enc.weight)
    enc.bias[:c] /= std.to(enc.bias)
    enc.bias[c:] -= 2.0 * torch.log(std).to(enc.bias)
    dec.weight *= std[None, :, None, None, None].to(dec.weight)
    log.info("latent per-channel std before normalisation: %s", [round(s, 4) for s in std.tolist()])
    return [math.log(s) for s in std.tolist()]
