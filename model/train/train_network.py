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

import torch

from model.config import ModelConfig
from model.network import M4VNetwork
from model.train.captions import train_captions, train_specs
from model.train.common import Budget, LossLog, clip_batch
from model.train.flow_loss import NetTrainConfig, flow_loss
from model.train.latent_data import LatentSet, encode_latents
from model.train.text_cache import TextCache
from model.train.train_step import EMA, TrainStep, step_generator
from model.train.world import ClipSpec
from model.vae import CausalVAE

__all__ = ["EMA", "NetTrainConfig", "flow_loss", "train_network"]

log = logging.getLogger(__name__)


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

    def __init__(
        self, data: LatentSet, captions: CaptionSampler, device: torch.device, g: torch.Generator
    ) -> None:
        self.latents = data.latents.to(device)  # (N, C, T, h, w) fp16
        self.rows = captions.row_table().to(device)[data.spec_index.to(device)]  # (N, per_spec)
        self.g = g  # on the device

    def next(self, n: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.latents.device
        idx = torch.randint(0, self.latents.shape[0], (n,), generator=self.g, device=dev)  # (n,)
        col = torch.randint(0, self.rows.shape[1], (n, 1), generator=self.g, device=dev)  # (n, 1)
        rows = self.rows[idx].gather(1, col).squeeze(1)  # (n,) one caption of each clip's spec
        drop = torch.rand(n, generator=self.g, device=dev) < dropout
        return self.latents[idx].float(), torch.where(drop, torch.zeros_like(rows), rows)


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
    if tc.cuda_graph and data is None:
        raise ValueError("a CUDA-graph step needs the pre-encoded latent set (rendering runs on the host)")
    g_dev = step_generator(device, seed + 1, tc.cuda_graph)
    g_unit = torch.Generator().manual_seed(seed + 3)
    captions = CaptionSampler(cache, tc.captions_per_spec)
    source: RenderedBatches | LatentBatches
    if data is None:
        source = RenderedBatches(vae, captions, cfg, device, seed)
    else:  # a graphed step draws everything from the one generator its capture registers
        g_src = g_dev if tc.cuda_graph else torch.Generator(device).manual_seed(seed + 2)
        source = LatentBatches(data, captions, device, g_src)
    if tc.compile:
        net.compile_blocks(dynamic=tc.compile_dynamic)
    phases = data.latents.shape[2] if data is not None else 1  # "cycle" graphs: one per latent frame
    take_step = TrainStep(net, source, cache, cfg, tc, device, g_dev, g_unit, phases=phases)
    budget, step = Budget(tc.steps, tc.max_seconds), 0
    last_step, last_t = 0, time.perf_counter()
    net.train()
    while not budget.done(step):
        losses, taken = take_step()
        before, step = step, step + taken
        if before == 0 or step // tc.log_every > before // tc.log_every or budget.done(step):
            values = {k: round(v.item(), 6) for k, v in losses.items()}  # .item() syncs: the rate is honest
            now = time.perf_counter()
            rate = (step - last_step) / max(now - last_t, 1e-9)
            loss_log.write(step, **values, steps_per_s=round(rate, 4))
            last_step, last_t = step, now
    log.info("network: %d steps in %.1f s (%s batches)", step, budget.elapsed(), type(source).__name__)
    net.eval()
    return step, take_step.ema
