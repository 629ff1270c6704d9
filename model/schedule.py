"""Pyramidal flow matching maths [pyramidflow], stateless: stage ranges, jump-point correction, renoising.

Convention: x_sigma = (1 - sigma) * x0 + sigma * noise, the network predicts v = noise - x0, and an Euler
step from sigma to sigma_next is x <- x + (sigma_next - sigma) * v.

Stage s of S spans noise levels [1 - s/S, 1 - (s+1)/S] at resolutions 1/2^(S-1-s) of the full latent.
Boundaries are snapped to the training timestep grid (``grid`` levels, PyramidFlow's num_train_timesteps =
1000), exactly as the network saw them in training: with S = 3 they are 1.0, 0.667, 0.334, 0.

Between stages the latent is upsampled (nearest) and renoised: x <- a * up(x) + b * n, with n block noise of
covariance (1 + g) I - g 11^T inside each 2x2 block. If the previous stage ended at sigma_e = 1 - o, the
signal coefficient becomes a * o and the (formerly block-constant) noise becomes white with standard deviation
sigma_c = 1 - a * o: the next stage starts from the corrected ("jump point") sigma_c, not from sigma_e.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_GRID = 1000


@dataclass(frozen=True)
class Renoise:
    """Coefficients of x <- a * upsample(x) + b * block_noise entering a stage."""

    a: float
    b: float


@dataclass(frozen=True)
class Stage:
    """One pyramid stage: sigma runs from ``start`` (jump-point corrected) down to ``end``."""

    index: int
    start: float
    end: float
    original_start: float
    renoise: Renoise | None  # None for the first stage (it starts from pure noise)

    def sigmas(self, steps: int) -> torch.Tensor:
        """steps + 1 noise levels, linearly spaced from start to end (float64, CPU)."""
        if steps < 1:
            raise ValueError(f"steps {steps} must be >= 1")
        return torch.linspace(self.start, self.end, steps + 1, dtype=torch.float64)


def stage_boundaries(num_stages: int, grid: int = DEFAULT_GRID) -> list[float]:
    """num_stages + 1 noise levels 1 - s/S, each snapped to the training grid (index int(s/S * grid))."""
    if num_stages < 1:
        raise ValueError(f"num_stages {num_stages} must be >= 1")
    bounds = []
    for s in range(num_stages + 1):
        index = int(s / num_stages * grid)
        bounds.append(1.0 - index / grid if index < grid else 0.0)
    return bounds


def renoise_coefficients(original_start: float, gamma: float) -> Renoise:
    """(a, b) entering a stage whose uncorrected start is ``original_start`` (= the previous stage's end)."""
    o = 1.0 - original_start  # signal coefficient at the end of the previous stage
    a = 1.0 / (math.sqrt(1.0 + 1.0 / gamma) * (1.0 - o) + o)
    b = a * (1.0 - o) / math.sqrt(gamma)
    return Renoise(a=a, b=b)


def corrected_start(original_start: float, gamma: float) -> float:
    """Jump-point corrected start sigma: 1 - (signal coefficient after renoising)."""
    o = 1.0 - original_start
    return 1.0 - o * renoise_coefficients(original_start, gamma).a


def build_stages(num_stages: int, gamma: float, grid: int = DEFAULT_GRID) -> list[Stage]:
    """All stages of one autoregressive unit, lowest resolution first."""
    check_gamma(gamma)
    bounds = stage_boundaries(num_stages, grid)
    stages = []
    for s in range(num_stages):
        original = bounds[s]
        if s == 0:
            stages.append(Stage(s, start=original, end=bounds[1], original_start=original, renoise=None))
            continue
        stages.append(
            Stage(
                s,
                start=corrected_start(original, gamma),
                end=bounds[s + 1],
                original_start=original,
                renoise=renoise_coefficients(original, gamma),
            )
        )
    return stages


def check_gamma(gamma: float) -> None:
    # (1+g)I - g 11^T has eigenvalue 1 - 3g along 1: it is a covariance only for g <= 1/3.
    if not 0.0 < gamma <= 1.0 / 3.0 + 1e-12:
        raise ValueError(f"renoise_gamma {gamma} must be in (0, 1/3]")


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + (sigma_next - sigma) * v


def block_noise(shape: tuple[int, ...], gamma: float, generator: torch.Generator) -> torch.Tensor:
    """Noise of ``shape`` (..., H, W), H and W even: unit variance, covariance -gamma inside each 2x2 block.

    Drawn on the generator's device (CPU for reproducibility). n = alpha * z + beta * sum(z) inside a block
    has covariance alpha^2 I + (2 alpha beta + 4 beta^2) 11^T; solving for (1 + g) I - g 11^T gives
    alpha = sqrt(1 + g), beta = (sqrt(1 - 3g) - alpha) / 4.
    """
    check_gamma(gamma)
    *lead, h, w = shape
    if h % 2 or w % 2:
        raise ValueError(f"block noise needs an even grid, got {h}x{w}")
    alpha = math.sqrt(1.0 + gamma)
    beta = (math.sqrt(max(1.0 - 3.0 * gamma, 0.0)) - alpha) / 4.0
    z = torch.randn((*lead, h // 2, 2, w // 2, 2), generator=generator, device=generator.device)
    block_sum = z.sum(dim=(-3, -1), keepdim=True)  # (..., h/2, 1, w/2, 1)
    n = alpha * z + beta * block_sum
    return n.reshape(*lead, h, w)  # (..., H, W)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x0.5 over the last two dims of (N, C, H, W); halves the spatial size."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=False)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), each value copied into a 2x2 block."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def start_noise(
    batch: int,
    channels: int,
    frames: int,
    full_hw: tuple[int, int],
    num_stages: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Unit-variance noise (B, C, T, h, w) at the lowest stage, drawn at full latent size and downsampled.

    Bilinear x0.5 of white noise averages 2x2 blocks (variance / 4); times 2 restores unit variance.
    """
    h, w = full_hw
    noise = torch.randn((batch, channels, frames, h, w), generator=generator, device=generator.device)
    x = noise.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, h, w)  # (B*T, C, H, W)
    for _ in range(num_stages - 1):
        x = downsample2x(x) * 2.0
    lh, lw = x.shape[-2:]
    return x.reshape(batch, frames, channels, lh, lw).permute(0, 2, 1, 3, 4).contiguous()  # (B, C, T, h, w)


def renoise(x: torch.Tensor, coeffs: Renoise, gamma: float, generator: torch.Generator) -> torch.Tensor:
    """Enter the next stage: (N, C, h, w) -> (N, C, 2h, 2w); noise from ``generator`` (CPU), moved to x."""
    up = upsample_nearest2x(x)
    n = block_noise(tuple(up.shape), gamma, generator).to(device=x.device, dtype=x.dtype)
    return coeffs.a * up + coeffs.b * n


@dataclass(frozen=True)
class StageSteps:
    """What one stage's Euler loop runs: the network's timestep at each step and the step sizes.

    Step i feeds ``timesteps[i]`` to the network and moves x <- x + (levels[i+1] - levels[i]) * v."""

    timesteps: tuple[float, ...]  # steps values
    levels: tuple[float, ...]  # steps + 1 values


def global_stage_steps(stage: Stage, steps: int, timestep_scale: float) -> StageSteps:
    """The "global" schedule: levels are the stage's sigmas, the network sees sigma * timestep_scale."""
    sigmas = stage.sigmas(steps).tolist()
    return StageSteps(tuple(s * timestep_scale for s in sigmas[:-1]), tuple(sigmas))


def pyramidflow_stage_steps(
    num_stages: int, gamma: float, stage: int, steps: int, grid: int = DEFAULT_GRID
) -> StageSteps:
    """PyramidFlow's inference scheduler (diffusion_schedulers/scheduling_flow_matching.py, shift 1, stage
    ranges k/S), re-derived: the network predicts the stage's own velocity, so the Euler levels run a local
    ratio linspace(1, 1/grid, steps) and then 0; the timesteps are linspace over a re-mapped range of the
    training timesteps grid..1, each stage owning a share proportional to its (jump-point corrected) sigma
    span."""
    if steps < 1:
        raise ValueError(f"steps {steps} must be >= 1")
    bounds = stage_boundaries(num_stages, grid)
    spans = []
    for s in range(num_stages):
        start = bounds[s] if s == 0 else corrected_start(bounds[s], gamma)
        spans.append(start - bounds[s + 1])
    total = sum(spans)
    lo = sum(spans[:stage]) / total if stage else 0.0
    hi = 1.0 if stage == num_stages - 1 else sum(spans[: stage + 1]) / total

    def train_t(index: int) -> float:  # training timesteps run grid, grid-1, ..., 1
        return float(grid - index)

    t_max, t_min = train_t(int(lo * grid)), train_t(min(int(hi * grid), grid - 1))
    # the stage's fine grid is linspace(t_max, t_min, grid + 1) without its end; inference spans its ends
    t_last = t_max + (t_min - t_max) * (grid - 1) / grid
    timesteps = torch.linspace(t_max, t_last, steps, dtype=torch.float64).tolist()
    levels = torch.linspace(1.0, 1.0 / grid, steps, dtype=torch.float64).tolist() + [0.0]
    return StageSteps(tuple(timesteps), tuple(levels))
