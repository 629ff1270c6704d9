"""Phase 3: the M4V network with pyramidal flow matching on frozen-VAE latents of world clips.

Each step renders a batch, encodes it (posterior mean, no grad), and for every stage draws a unit per group of
examples, builds the sampler's history and noisy input (model/train/flow_batch.py), regresses the velocity.
Captions come from the MiniLM cache; ~10% are replaced by the empty prompt so CFG has an unconditional model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.network import M4VNetwork
from model.schedule import build_stages
from model.train.captions import train_captions, train_specs
from model.train.common import Budget, LossLog, autocast, clip_batch
from model.train.flow_batch import flow_example, frame_pyramids
from model.train.text_cache import TextCache
from model.train.world import ClipSpec
from model.vae import CausalVAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetTrainConfig:
    steps: int = 4000
    max_seconds: float = 1e9
    batch: int = 32
    groups_per_stage: int = 2  # each group of the batch gets its own unit
    lr: float = 5e-4
    warmup: int = 200
    text_dropout: float = 0.1
    history_noise: float = 0.1
    ema_decay: float = 0.998
    log_every: int = 50
    captions_per_spec: int = 3


class CaptionSampler:
    """Spec -> a random cached caption row of it (or the empty prompt, row 0, with prob text_dropout)."""

    def __init__(self, cache: TextCache, per_spec: int) -> None:
        rows: dict[ClipSpec, list[int]] = defaultdict(list)
        for spec, text in train_captions(per_spec):
            rows[spec].append(cache.index[text])
        self.rows, self.cache = dict(rows), cache
        self.specs = train_specs()

    def specs_batch(self, n: int, g: torch.Generator) -> list[ClipSpec]:
        return [self.specs[i] for i in torch.randint(0, len(self.specs), (n,), generator=g).tolist()]

    def rows_for(self, specs: list[ClipSpec], dropout: float, g: torch.Generator) -> torch.Tensor:
        ids = []
        for spec in specs:
            choices = self.rows[spec]
            pick = choices[int(torch.randint(0, len(choices), (1,), generator=g))]
            ids.append(0 if float(torch.rand(1, generator=g)) < dropout else pick)
        return torch.tensor(ids, device=self.cache.tokens.device)


class EMA:
    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.float(), 1.0 - self.decay)

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict(self.shadow)


@torch.no_grad()
def encode_latents(
    vae: CausalVAE, video: torch.Tensor, device: torch.device, chunk: int = 128
) -> torch.Tensor:
    """Posterior means (B, C, T, h, w), encoded ``chunk`` clips at a time (encoder activations are large)."""
    with autocast(device):
        return torch.cat([vae.encode(v).float() for v in video.split(chunk)])


def flow_loss(
    net: M4VNetwork,
    latents: torch.Tensor,
    text_rows: torch.Tensor,
    cache: TextCache,
    cfg: ModelConfig,
    tc: NetTrainConfig,
    g: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Mean velocity MSE over stages (and unit groups) for one batch of clean latents."""
    sp = cfg.sampler
    stages = build_stages(sp.num_stages, sp.renoise_gamma)
    full_hw = tuple(latents.shape[-2:])
    b, frames = latents.shape[0], latents.shape[2]
    losses: dict[str, torch.Tensor] = {}
    for stage in stages:
        parts = []
        for idx in torch.arange(b, device=latents.device).chunk(tc.groups_per_stage):
            pyr = frame_pyramids(latents[idx], sp.num_stages)
            unit = int(torch.randint(0, frames, (1,), generator=g, device=g.device))
            ex = flow_example(pyr, unit, stage, sp.timestep_scale, g, tc.history_noise)
            pred = net(ex.x, ex.t, text=cache.rows(text_rows[idx]), history=ex.history, full_hw=full_hw)
            parts.append(F.mse_loss(pred.float(), ex.target))
        losses[f"stage{stage.index}"] = torch.stack(parts).mean()
    losses["loss"] = torch.stack(list(losses.values())).mean()
    return losses


def train_network(
    net: M4VNetwork,
    vae: CausalVAE,
    cache: TextCache,
    cfg: ModelConfig,
    tc: NetTrainConfig,
    device: torch.device,
    seed: int,
    loss_log: LossLog,
) -> tuple[int, EMA]:
    """Train in place; returns the steps taken and the EMA of the weights (what gets shipped)."""
    g_cpu = torch.Generator().manual_seed(seed)
    g_dev = torch.Generator(device).manual_seed(seed + 1)
    captions = CaptionSampler(cache, tc.captions_per_spec)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=0.01, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tc.warmup))
    ema, budget, step = EMA(net, tc.ema_decay), Budget(tc.steps, tc.max_seconds), 0
    net.train()
    while not budget.done(step):
        specs = captions.specs_batch(tc.batch, g_cpu)
        latents = encode_latents(vae, clip_batch(specs, cfg, g_cpu, device), device)
        rows = captions.rows_for(specs, tc.text_dropout, g_cpu)
        with autocast(device):
            losses = flow_loss(net, latents, rows, cache, cfg, tc, g_dev)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(net)
        step += 1
        if step % tc.log_every == 0 or step == 1 or budget.done(step):
            loss_log.write(step, **{k: round(v.item(), 6) for k, v in losses.items()})
    net.eval()
    return step, ema
