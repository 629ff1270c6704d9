"""The network phase's objective: pyramidal flow-matching velocity MSE over stages and unit groups.

The batch is split into groups and each group is trained on one unit (latent frame) at every stage:
- ``unit_layout="random"``: ``groups_per_stage`` groups, each draws its unit per stage from a CPU generator
  (the draw never waits for the device); shapes change from step to step;
- ``unit_layout="all"``: one group per latent frame; at stage s group i trains unit (i + s) mod frames, so
  every step covers every unit at every stage with the same shapes — what a CUDA-graph step needs
  (model/train/train_step.py) and a lower-variance estimate of the same objective;
- ``unit_layout="cycle"``: the whole batch is one group; step n trains unit (n + s) mod frames at stage s, so
  a step is one network call per stage (3 instead of 3 x frames: on the tiny preset a graphed step is
  partly bound by its kernel count) and the shapes repeat every ``frames`` steps: one CUDA graph per phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.network import M4VNetwork
from model.schedule import build_stages
from model.train.flow_batch import flow_example, frame_pyramids
from model.train.text_cache import TextCache

UnitLayout = Literal["random", "all", "cycle"]
UNIT_LAYOUTS: tuple[str, ...] = get_args(UnitLayout)


@dataclass(frozen=True)
class NetTrainConfig:
    steps: int = 4000
    max_seconds: float = 1e9
    batch: int = 32
    groups_per_stage: int = 2  # unit_layout "random": each group of the batch gets its own unit
    unit_layout: UnitLayout = "random"
    lr: float = 5e-4
    warmup: int = 200
    text_dropout: float = 0.1
    history_noise: float = 0.1
    ema_decay: float = 0.998
    log_every: int = 50
    captions_per_spec: int = 3
    compile: bool = False  # torch.compile each block (CUDA training); shapes: compile_dynamic
    # capture the whole step and replay it (CUDA, unit_layout "all" or "cycle": one graph per phase)
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if self.unit_layout not in UNIT_LAYOUTS:
            raise ValueError(f"unit_layout must be one of {UNIT_LAYOUTS}, got {self.unit_layout!r}")

    @property
    def static_shapes(self) -> bool:
        """Whether a step's shapes depend only on its phase (layouts "all" and "cycle"): graphs possible."""
        return self.unit_layout != "random"

    @property
    def compile_dynamic(self) -> bool:
        """Layouts "all" and "cycle" have a few static shapes: compiled per shape (inductor's dynamic-shape
        lowering of the temporal pooling failed on the GPU); the random layout meets every shape: dynamic."""
        return not self.static_shapes


def group_sizes(batch: int, groups: int) -> list[int]:
    """Sizes of ``groups`` contiguous groups of a batch, as even as possible (torch.chunk's split)."""
    return [len(c) for c in torch.arange(batch).chunk(groups)]


def flow_loss(
    net: M4VNetwork,
    latents: torch.Tensor,
    text_rows: torch.Tensor,
    cache: TextCache,
    cfg: ModelConfig,
    tc: NetTrainConfig,
    g: torch.Generator,
    g_unit: torch.Generator | None = None,
    phase: int = 0,
) -> dict[str, torch.Tensor]:
    """Mean velocity MSE over stages (and unit groups) for one batch of clean latents (B, C, T, h, w).

    Noise comes from ``g`` (on the latents' device); with unit_layout "random" the unit of each group comes
    from ``g_unit``, a CPU generator (default: one seeded from ``g``'s seed); with "cycle" from ``phase``
    (the step's index)."""
    sp = cfg.sampler
    stages = build_stages(sp.num_stages, sp.renoise_gamma)
    full_hw = tuple(latents.shape[-2:])
    b, frames = latents.shape[0], latents.shape[2]
    layout = tc.unit_layout
    sizes = [b] if layout == "cycle" else group_sizes(b, frames if layout == "all" else tc.groups_per_stage)
    if g_unit is None:
        g_unit = torch.Generator().manual_seed(g.initial_seed())
    clips, rows = latents.split(sizes), text_rows.split(sizes)  # views, no gather
    pyramids = [frame_pyramids(c, sp.num_stages) for c in clips]  # once per batch, not once per stage
    texts = [cache.rows(r) for r in rows]
    losses: dict[str, torch.Tensor] = {}
    for stage in stages:
        parts = []
        for i, (pyr, text) in enumerate(zip(pyramids, texts, strict=True)):
            if layout == "all":
                unit = (i + stage.index) % frames
            elif layout == "cycle":
                unit = (phase + stage.index) % frames
            else:
                unit = int(torch.randint(0, frames, (1,), generator=g_unit))
            ex = flow_example(pyr, unit, stage, sp.timestep_scale, g, tc.history_noise)
            pred = net(ex.x, ex.t, text=text, history=ex.history, full_hw=full_hw)
            parts.append(F.mse_loss(pred.float(), ex.target))
        losses[f"stage{stage.index}"] = torch.stack(parts).mean()
    losses["loss"] = torch.stack(list(losses.values())).mean()
    return losses
