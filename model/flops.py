"""Analytic FLOP counter for one whole request. Pure Python: no torch.

Conventions
- 2 FLOPs per multiply-add; only matmul-like work is counted (linear layers, attention QK^T and PV, the
  SSD scan's contractions, convolutions). Norms, activations, RoPE, pooling and elementwise gating are not,
  exactly like torch.utils.flop_counter.FlopCounterMode.
- Attention core = 4 * B * Lq * Lk * d per layer (QK^T and PV, d = heads * head_dim). ``attention="dense"``
  (default) counts every (query, key) pair, which is what SDPA with a boolean mask computes (flash /
  memory-efficient kernels do not skip a non-causal block mask) and what FlopCounterMode reports.
  ``attention="mask_aware"`` counts only the pairs the temporal-causal mask keeps (text -> text, frame j ->
  text + frames <= j), i.e. what a block-sparse kernel would do.
- Token counts per (unit, stage) follow the compressed pyramid history: frame k-1 at the stage's resolution,
  k-2 one level lower, older frames at the lowest level; text length = cfg.text.max_tokens.
- ``cached=True`` ("causal" context mode): per (unit, stage) the context (text + history) runs once at batch
  cfg_batch, then every step runs only the current frame's tokens (+ its register), whose attention queries
  see the cached keys. ``cached=False``: every step runs the whole sequence. "paper" mode is always uncached.

Agreement with the original design estimate (121 frames, 768x1280, steps [20,20,20]/[10,10,10], CFG 2,
network only): attention 17.8 PF uncached / 7.5 cached, M4V 14.9 / 6.5, mixer reduction 42% (121 frames) /
50% (241), 1.29 / 1.37 PF per video second (cached M4V, 5 s / 10 s). This module (dense) gives attention
17.85 / 7.16, M4V 15.71 / 6.25, mixer reduction 42.1% / 50.2%, 1.25 / 1.34 PF per video second. Reasons:
- The estimate is reproduced by DENSE attention counting (its formula 4*B*L^2*d), not by
  mask-aware counting: mask-aware gives attention 15.30 PF uncached and a mixer reduction of only 25.4% (121)
  / 31.0% (241), because the temporal-causal mask already removes about half of the attention core that Mamba
  saves. Reduction claims must name the counting; dense is what SDPA with a boolean mask executes.
- Cached: the estimate's 7.5 / 6.5 are 0.34 PF above a count without the current frame in the context, which
  is exactly one extra full-network pass of the current frame per (unit, stage) at batch 2: it counted the
  context as the whole sequence. network.prepare_context runs the context without the current frame, so
  that pass is not counted here (M4V cached is then 6.16 + 0.09 for the temporal branch and SSD = 6.25).
- M4V uncached is 0.8 PF above the estimate: the temporal branch (0.25 PF), the SSD scan (~0.25 PF) and the
  Mamba2 projections of the second text copy and the registers (~0.1 PF) are not in the estimate, and
  linear2's input slice from the mixer branch (D x D) counts as MLP here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.flops_network import (
    COMPONENTS,
    NETWORK_COMPONENTS,
    AttentionCounting,
    FlopBreakdown,
    ScanCounting,
    TokenLayout,
    context_flops,
    runs_cached,
    ssd_scan_flops,
    stage_grid,
    step_flops,
    token_layout,
)
from model.flops_vae import text_encoder_flops, vae_decode_flops

if TYPE_CHECKING:
    from model.config import ModelConfig

__all__ = [
    "COMPONENTS",
    "NETWORK_COMPONENTS",
    "AttentionCounting",
    "FlopBreakdown",
    "ScanCounting",
    "StepCost",
    "TokenLayout",
    "context_flops",
    "estimate_flops",
    "mixer_flop_reduction",
    "remaining_flops",
    "ssd_scan_flops",
    "stage_grid",
    "step_flops",
    "step_schedule",
    "text_encoder_flops",
    "token_layout",
    "vae_decode_flops",
]


@dataclass(frozen=True)
class StepCost:
    """FLOPs of one sampler step (a CFG pair counts once), in execution order. ``network`` includes the
    cached context on the first step of each (unit, stage); ``decode`` is the VAE decode of the unit's
    frames, charged to its last step (the pipeline decodes each unit as soon as it is done)."""

    unit: int
    stage: int
    step: int  # 1-based inside the stage
    network: float
    decode: float = 0.0

    @property
    def total(self) -> float:
        return self.network + self.decode


def _resolve_steps(cfg: ModelConfig, first: tuple[int, ...] | None, later: tuple[int, ...] | None
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:  # fmt: skip
    first = tuple(first or cfg.sampler.first_frame_steps)
    later = tuple(later or cfg.sampler.later_frame_steps)
    for name, steps in (("first_frame_steps", first), ("later_frame_steps", later)):
        if len(steps) != cfg.sampler.num_stages or min(steps) < 1:
            raise ValueError(f"{name} {steps} must be {cfg.sampler.num_stages} positive step counts")
    return first, later


def _unit_decode(cfg: ModelConfig, width: int, height: int, unit: int) -> float:
    """Decode FLOPs of one unit's frames: the streaming decode of latent frame `unit` alone."""
    h, w = cfg.latent_grid(width, height)
    after = vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=unit + 1)
    before = vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=unit) if unit else 0.0
    return after - before


def _stage_breakdowns(
    cfg: ModelConfig, *, width: int, height: int, unit: int, stage: int, batch: int, cached: bool,
    text_tokens: int | None, attention: AttentionCounting,
) -> tuple[FlopBreakdown, FlopBreakdown]:  # fmt: skip
    """(once per (unit, stage), per step)."""
    kw = {"width": width, "height": height, "unit": unit, "stage": stage, "batch": batch}
    kw_c = {"text_tokens": text_tokens, "attention": attention}
    per_step = step_flops(cfg, cached=cached, **kw, **kw_c)  # type: ignore[arg-type]
    once = context_flops(cfg, **kw, **kw_c) if runs_cached(cfg, cached) else FlopBreakdown()  # type: ignore[arg-type]
    return once, per_step


def _stage_costs(
    cfg: ModelConfig, *, width: int, height: int, num_frames: int, first_frame_steps: tuple[int, ...] | None,
    later_frame_steps: tuple[int, ...] | None, cfg_batch: int, cached: bool, text_tokens: int | None,
    attention: AttentionCounting,
) -> Iterator[tuple[int, int, int, FlopBreakdown, FlopBreakdown]]:  # fmt: skip
    """(unit, stage, steps, once, per step) for every (unit, stage) of a request, in sampling order."""
    first, later = _resolve_steps(cfg, first_frame_steps, later_frame_steps)
    for unit in range(cfg.latent_frames(num_frames)):
        for stage, n in enumerate(first if unit == 0 else later):
            once, each = _stage_breakdowns(
                cfg, width=width, height=height, unit=unit, stage=stage, batch=cfg_batch, cached=cached,
                text_tokens=text_tokens, attention=attention,
            )  # fmt: skip
            yield unit, stage, n, once, each


def step_schedule(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    first_frame_steps: tuple[int, ...] | None = None,
    later_frame_steps: tuple[int, ...] | None = None,
    cfg_batch: int = 2,
    cached: bool = True,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
) -> list[StepCost]:
    """Every sampler step of a request with its FLOPs, in the order the sampler runs them (for ETAs)."""
    out: list[StepCost] = []
    stages = _stage_costs(
        cfg, width=width, height=height, num_frames=num_frames, first_frame_steps=first_frame_steps,
        later_frame_steps=later_frame_steps, cfg_batch=cfg_batch, cached=cached, text_tokens=text_tokens,
        attention=attention,
    )  # fmt: skip
    for unit, stage, n, once, each in stages:
        out.extend(
            StepCost(unit, stage, i + 1, each.total + (once.total if i == 0 else 0.0)) for i in range(n)
        )
        if stage == cfg.sampler.num_stages - 1:  # the unit is done: its frames are decoded after this step
            last = out[-1]
            out[-1] = StepCost(
                unit, last.stage, last.step, last.network, _unit_decode(cfg, width, height, unit)
            )
    return out


def remaining_flops(schedule: list[StepCost], steps_done: int) -> float:
    """FLOPs still to spend after `steps_done` sampler steps (network + the decodes not yet done)."""
    return float(sum(s.total for s in schedule[steps_done:]))


def estimate_flops(
    cfg: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    first_frame_steps: tuple[int, ...] | None = None,
    later_frame_steps: tuple[int, ...] | None = None,
    cfg_batch: int = 2,
    cached: bool = True,
    text_tokens: int | None = None,
    attention: AttentionCounting = "dense",
    include_vae: bool = True,
    include_text: bool = True,
) -> FlopBreakdown:
    """FLOPs of a whole request by component: network at every step (+ cached contexts), VAE decode of the
    whole video (batch 1, tiled as served), text encoding of prompt and negative prompt (approximate)."""
    total = FlopBreakdown({k: 0.0 for k in NETWORK_COMPONENTS})
    stages = _stage_costs(
        cfg, width=width, height=height, num_frames=num_frames, first_frame_steps=first_frame_steps,
        later_frame_steps=later_frame_steps, cfg_batch=cfg_batch, cached=cached, text_tokens=text_tokens,
        attention=attention,
    )  # fmt: skip
    for _unit, _stage, n, once, each in stages:
        total = total + once + each.scaled(n)
    if include_vae:
        h, w = cfg.latent_grid(width, height)
        total.add(
            "vae",
            vae_decode_flops(cfg.vae, latent_h=h, latent_w=w, latent_frames=cfg.latent_frames(num_frames)),
        )
    if include_text:
        total.add("text", text_encoder_flops(cfg.text, prompts=cfg_batch))
    return total


def mixer_flop_reduction(
    cfg_mamba: ModelConfig,
    cfg_attn: ModelConfig,
    *,
    width: int,
    height: int,
    num_frames: int,
    attention: AttentionCounting = "dense",
) -> float:
    """1 - (Mamba2 mixers) / (attention mixers) of the single-stream blocks over a whole uncached generation
    (attention incl. QKV/output projections vs Mamba2 incl. its projections). The
    MM-DiT blocks are identical in both networks and left out."""

    def single_mixer(cfg: ModelConfig) -> float:
        # the same network without MM-DiT blocks isolates the single-stream mixers
        no_dual = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, num_dual_blocks=0))
        b = estimate_flops(no_dual, width=width, height=height, num_frames=num_frames, cached=False,
                           attention=attention, include_vae=False, include_text=False)  # fmt: skip
        return b.mixer_total

    return 1.0 - single_mixer(cfg_mamba) / single_mixer(cfg_attn)
