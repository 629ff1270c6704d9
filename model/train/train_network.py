"""Phase 3: the M4V network with pyramidal flow matching on frozen-VAE latents of world clips.

Each step takes a batch of clean latents, either rendered and encoded on the fly (RenderedBatches: posterior
mean, no grad) or drawn from a pre-encoded LatentSet on the device (LatentBatches, model/train/latent_data.py,
several times cheaper), and for every stage draws a unit per group of examples, builds the sampler's history
and noisy input (model/train/flow_batch.py), regresses the velocity. Captions come from the MiniLM cache; ~10%
are replaced by the empty prompt so CFG has an unconditional model.
"""

from __future__ import annotations

import logging
import time
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
from model.train.latent_data import LatentSet, encode_latents
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
    compile: bool = False  # torch.compile each block (CUDA training; recompiles once per history length)


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

    def row_table(self) -> torch.Tensor:
        """(S, per_spec) cache rows of every training spec, in train_specs() order, on the cache's device."""
        return torch.tensor([self.rows[s] for s in self.specs], device=self.cache.tokens.device)


class RenderedBatches:
    """Random training specs, rendered and VAE-encoded every step (no dataset; slow)."""

    def __init__(
        self, vae: CausalVAE, captions: CaptionSampler, cfg: ModelConfig, device: torch.device, seed: int
    ) -> None:
        self.vae, self.captions, self.cfg, self.device = vae, captions, cfg, device
        self.g = torch.Generator().manual_seed(seed)

    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        specs = self.captions.specs_batch(n, self.g)
        latents = encode_latents(self.vae, clip_batch(specs, self.cfg, self.g, self.device), self.device)
        return latents, self.captions.rows_for(specs, dropout, self.g)


class LatentBatches:
    """Minibatches of a pre-encoded LatentSet, indices and caption rows drawn on the device (no host sync)."""

    def __init__(self, data: LatentSet, captions: CaptionSampler, device: torch.device, seed: int) -> None:
        self.latents = data.latents.to(device)  # (N, C, T, h, w) fp16
        self.rows = captions.row_table().to(device)[data.spec_index.to(device)]  # (N, per_spec)
        self.g = torch.Generator(device).manual_seed(seed)

    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.latents.device
        idx = torch.randint(0, self.latents.shape[0], (n,), generator=self.g, device=dev)  # (n,)
        col = torch.randint(0, self.rows.shape[1], (n, 1), generator=self.g, device=dev)  # (n, 1)
        rows = self.rows[idx].gather(1, col).squeeze(1)  # (n,) one caption of each clip's spec
        drop = torch.rand(n, generator=self.g, device=dev) < dropout
        return self.latents[idx].float(), torch.where(drop, torch.zeros_like(rows), rows)


class EMA:
    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One fused multi-tensor lerp over every float tensor (a loop would launch one kernel each)."""
        state = net.state_dict()
        names = [k for k, v in state.items() if v.is_floating_point()]
        live = [state[k].float() for k in names]  # a no-op view for the fp32 weights training uses
        torch._foreach_lerp_([self.shadow[k] for k in names], live, 1.0 - self.decay)

    def copy_to(self, net: nn.Module) -> None:
        net.load_state_dict(self.shadow)


def flow_loss(
    net: M4VNetwork,
    latents: torch.Tensor,
    text_rows: torch.Tensor,
    cache: TextCache,
    cfg: ModelConfig,
    tc: NetTrainConfig,
    g: torch.Generator,
    g_unit: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Mean velocity MSE over stages (and unit groups) for one batch of clean latents.

    Noise comes from ``g`` (on the latents' device); the unit of each group from ``g_unit``, a CPU generator,
    so choosing it never waits for the device (default: a CPU generator seeded from ``g``'s seed)."""
    sp = cfg.sampler
    stages = build_stages(sp.num_stages, sp.renoise_gamma)
    full_hw = tuple(latents.shape[-2:])
    b, frames = latents.shape[0], latents.shape[2]
    losses: dict[str, torch.Tensor] = {}
    if g_unit is None:
        g_unit = torch.Generator().manual_seed(g.initial_seed())
    groups = torch.arange(b, device=latents.device).chunk(tc.groups_per_stage)
    pyramids = [frame_pyramids(latents[idx], sp.num_stages) for idx in groups]  # once, not once per stage
    for stage in stages:
        parts = []
        for idx, pyr in zip(groups, pyramids, strict=True):
            unit = int(torch.randint(0, frames, (1,), generator=g_unit))
            ex = flow_example(pyr, unit, stage, sp.timestep_scale, g, tc.history_noise)
            pred = net(ex.x, ex.t, text=cache.rows(text_rows[idx]), history=ex.history, full_hw=full_hw)
            parts.append(F.mse_loss(pred.float(), ex.target))
        losses[f"stage{stage.index}"] = torch.stack(parts).mean()
    losses["loss"] = torch.stack(list(losses.values())).mean()
    return losses


def _update(net: M4VNetwork, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def train_network(
    net: M4VNetwork,
    vae: CausalVAE,
    cache: TextCache,
    cfg: ModelConfig,
    tc: NetTrainConfig,
    device: torch.device,
    seed: int,
    loss_log: LossLog,
    data: LatentSet | None = None,
) -> tuple[int, EMA]:
    """Train in place; returns the steps taken and the EMA of the weights (what gets shipped).

    With ``data`` batches come from the pre-encoded set (``vae`` is then unused), else they are rendered.
    """
    g_dev = torch.Generator(device).manual_seed(seed + 1)
    g_unit = torch.Generator().manual_seed(seed + 3)
    captions = CaptionSampler(cache, tc.captions_per_spec)
    source: RenderedBatches | LatentBatches = (
        RenderedBatches(vae, captions, cfg, device, seed)
        if data is None
        else LatentBatches(data, captions, device, seed + 2)
    )
    fused = device.type == "cuda"  # one multi-tensor kernel per step instead of several per parameter
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=0.01, betas=(0.9, 0.99), fused=fused)
    if tc.compile:
        net.compile_blocks()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tc.warmup))
    ema, budget, step = EMA(net, tc.ema_decay), Budget(tc.steps, tc.max_seconds), 0
    last_step, last_t = 0, time.perf_counter()
    net.train()
    while not budget.done(step):
        latents, rows = source.next(tc.batch, tc.text_dropout)
        with autocast(device):
            losses = flow_loss(net, latents, rows, cache, cfg, tc, g_dev, g_unit)
        _update(net, opt, losses["loss"])
        sched.step()
        ema.update(net)
        step += 1
        if step % tc.log_every == 0 or step == 1 or budget.done(step):
            values = {k: round(v.item(), 6) for k, v in losses.items()}  # .item() syncs: the rate is honest
            now = time.perf_counter()
            rate = (step - last_step) / max(now - last_t, 1e-9)
            loss_log.write(step, **values, steps_per_s=round(rate, 4))
            last_step, last_t = step, now
    log.info("network: %d steps in %.1f s (%s batches)", step, budget.elapsed(), type(source).__name__)
    net.eval()
    return step, ema
