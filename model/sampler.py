"""The denoise loop: pyramidal flow matching, autoregressive over latent frames [pyramidflow].

One latent frame per autoregressive unit; each unit runs the stages of model/schedule.py at 1/4, 1/2 and full
latent resolution, conditioned on a compressed pyramid of the clean frames before it. Classifier-free
guidance runs the network ONCE per step on [cond; uncond]. All noise is drawn on the CPU from the caller's
seeded generator, so one seed gives one video on any device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from model.config import ModelConfig
from model.pipeline_types import StepProgress
from model.schedule import (
    Stage,
    StageSteps,
    build_stages,
    downsample2x,
    euler_step,
    global_stage_steps,
    pyramidflow_stage_steps,
    renoise,
    start_noise,
)
from model.text_encoder import TextEmbeddings

log = logging.getLogger(__name__)

StepCallback = Callable[[StepProgress], None]
LatentCallback = Callable[[int, torch.Tensor], None]


class Denoiser(Protocol):
    """What the loop needs of the network (model/network.py M4VNetwork)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **context: Any) -> torch.Tensor: ...

    def prepare_context(
        self, *, text: TextEmbeddings, history: list[torch.Tensor], full_hw: tuple[int, int]
    ) -> Any: ...


@dataclass(frozen=True)
class UnitPlan:
    """What one autoregressive unit runs: steps per stage and its guidance scale."""

    steps: tuple[int, ...]
    guidance: float


@dataclass
class _Progress:
    units_total: int
    stages_total: int
    steps_all: int
    steps_done: int = 0


class _Context:
    """The network's view of one (unit, stage): text + history, prepared once when it can be cached."""

    def __init__(
        self,
        net: Denoiser,
        text: TextEmbeddings,
        history: list[torch.Tensor],
        full_hw: tuple[int, int],
        cached: bool,
    ) -> None:
        self.net = net
        self.kwargs: dict[str, Any]
        if cached:
            self.kwargs = {"cache": net.prepare_context(text=text, history=history, full_hw=full_hw)}
        else:
            self.kwargs = {"text": text, "history": history, "full_hw": full_hw}

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, **self.kwargs)


def sample_video(
    net: Denoiser,
    text: TextEmbeddings,
    cfg: ModelConfig,
    *,
    num_latent_frames: int,
    full_hw: tuple[int, int],
    steps_first: Sequence[int],
    steps_later: Sequence[int],
    guidance_first: float,
    guidance_later: float,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype,
    use_cache: bool = True,
    on_step: StepCallback | None = None,
    on_latent: LatentCallback | None = None,
) -> torch.Tensor:
    """Generate clean latents (B, C, T, h, w) (float32). ``text`` holds 2B rows: B cond, then B uncond.

    on_step runs after every step and may raise to cancel (the exception propagates); on_latent receives
    each finished full-resolution latent frame (B, C, 1, h, w) as soon as its unit is done.
    """
    sp = cfg.sampler
    stages = build_stages(sp.num_stages, sp.renoise_gamma)
    plans = _unit_plans(
        num_latent_frames, sp.num_stages, steps_first, steps_later, guidance_first, guidance_later
    )
    _check_inputs(text, full_hw, sp.num_stages, generator)
    device = torch.device(device)
    batch = text.tokens.shape[0] // 2
    text = text.to(device, dtype)
    cached = use_cache and cfg.network.context_mode == "causal"
    log.debug("sampling %d latent frames at %s, cached context: %s", num_latent_frames, full_hw, cached)

    noise = start_noise(batch, cfg.vae.latent_channels, num_latent_frames, full_hw, sp.num_stages, generator)
    progress = _Progress(num_latent_frames, sp.num_stages, sum(sum(p.steps) for p in plans))
    pyramids: list[list[torch.Tensor]] = []  # per finished frame: CFG-doubled latents, lowest level first
    frames: list[torch.Tensor] = []
    for unit, plan in enumerate(plans):
        x = noise[:, :, unit].to(device=device, dtype=torch.float32)  # (B, C, h/4, w/4)
        for stage in stages:
            if stage.renoise is not None:
                x = renoise(x, stage.renoise, sp.renoise_gamma, generator)
            history = _history(pyramids, unit, stage.index)
            ctx = _Context(net, text, history, full_hw, cached)
            x = _run_stage(ctx, x, stage, plan, cfg, dtype, progress, unit, on_step)
        frames.append(x)
        pyramids.append(_frame_pyramid(torch.cat([x, x]).to(dtype), sp.num_stages))
        if on_latent is not None:
            on_latent(unit, x.unsqueeze(2))  # (B, C, 1, h, w)
    return torch.stack(frames, dim=2)  # (B, C, T, h, w)


def _run_stage(
    ctx: _Context,
    x: torch.Tensor,
    stage: Stage,
    plan: UnitPlan,
    cfg: ModelConfig,
    dtype: torch.dtype,
    progress: _Progress,
    unit: int,
    on_step: StepCallback | None,
) -> torch.Tensor:
    steps = plan.steps[stage.index]
    sched = stage_steps(cfg, stage, steps)
    for i in range(steps):
        began = time.perf_counter()
        t = torch.full((2 * x.shape[0],), sched.timesteps[i], device=x.device)
        out = ctx.velocity(torch.cat([x, x]).to(dtype), t).float()  # (2B, C, h, w)
        v_cond, v_uncond = out.chunk(2)
        v = v_uncond + plan.guidance * (v_cond - v_uncond)
        x = euler_step(x, v, sched.levels[i], sched.levels[i + 1])
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)  # honest step time, and a cancel lands between real steps
        progress.steps_done += 1
        if on_step is not None:
            on_step(_step_info(progress, unit, stage.index, i + 1, steps, time.perf_counter() - began))
    return x


def stage_steps(cfg: ModelConfig, stage: Stage, steps: int) -> StageSteps:
    """The preset's schedule (SamplerConfig.schedule) for one stage."""
    sp = cfg.sampler
    if sp.schedule == "pyramidflow":
        return pyramidflow_stage_steps(sp.num_stages, sp.renoise_gamma, stage.index, steps)
    return global_stage_steps(stage, steps, sp.timestep_scale)


def _step_info(p: _Progress, unit: int, stage: int, step: int, steps: int, seconds: float) -> StepProgress:
    return StepProgress(
        unit=unit,
        units_total=p.units_total,
        stage=stage,
        stages_total=p.stages_total,
        step=step,
        steps_total=steps,
        steps_done=p.steps_done,
        steps_all=p.steps_all,
        step_seconds=seconds,
    )


def _frame_pyramid(x: torch.Tensor, num_stages: int) -> list[torch.Tensor]:
    """Clean full-res frame (N, C, h, w) -> [lowest, ..., full], each level a bilinear x0.5 of the next."""
    levels = [x]
    for _ in range(num_stages - 1):
        levels.append(downsample2x(levels[-1]))
    return levels[::-1]


def _history(pyramids: list[list[torch.Tensor]], unit: int, stage: int) -> list[torch.Tensor]:
    """Compressed history for (unit, stage), oldest first: frame unit-1 at the stage's level, unit-2 one
    level lower, ..., older frames at the lowest level."""
    return [pyramids[j][max(stage - (unit - 1 - j), 0)] for j in range(unit)]


def _unit_plans(
    num_latent_frames: int,
    num_stages: int,
    steps_first: Sequence[int],
    steps_later: Sequence[int],
    guidance_first: float,
    guidance_later: float,
) -> list[UnitPlan]:
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames {num_latent_frames} must be >= 1")
    for name, steps in (("steps_first", steps_first), ("steps_later", steps_later)):
        if len(steps) != num_stages or min(steps) < 1:
            raise ValueError(f"{name} {tuple(steps)} must be {num_stages} positive step counts")
    first = UnitPlan(tuple(steps_first), guidance_first)
    later = UnitPlan(tuple(steps_later), guidance_later)
    return [first] + [later] * (num_latent_frames - 1)


def _check_inputs(
    text: TextEmbeddings, full_hw: tuple[int, int], num_stages: int, generator: torch.Generator
) -> None:
    rows = text.tokens.shape[0]
    if rows % 2:
        raise ValueError(f"text has {rows} rows; expected 2B rows ([cond; uncond])")
    factor = 2 ** (num_stages - 1)
    if full_hw[0] % factor or full_hw[1] % factor:
        raise ValueError(f"latent grid {full_hw} must be divisible by {factor} for {num_stages} stages")
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must live on the CPU (got {generator.device}) for device-independent noise"
        )
