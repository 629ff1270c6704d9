"""Shared training plumbing: JSON-lines loss log, step/time budget, data source, half-size export."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.config import ModelConfig
from model.loading import save_checkpoint
from model.train.world import ClipSpec, render_clips

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """Stop after max_steps or max_seconds, whichever comes first."""

    max_steps: int
    max_seconds: float
    began: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def done(self, step: int) -> bool:
        return step >= self.max_steps or self.elapsed() > self.max_seconds


class LossLog:
    """Appends one JSON object per logged step to ``path`` and mirrors it to logging."""

    def __init__(self, path: Path | None, phase: str) -> None:
        self.path, self.phase = path, phase
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, **values: float) -> None:
        row: dict[str, Any] = {"phase": self.phase, "step": step, **values, "time": round(time.time(), 3)}
        log.info("%s", json.dumps(row))
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def clip_batch(
    specs: list[ClipSpec], cfg: ModelConfig, g: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """Rendered clips (B, 3, F, H, W) at the preset's default size and length."""
    w, h = cfg.default_resolution
    if w != h:
        raise ValueError(f"the world renders square clips; preset resolution is {w}x{h}")
    return render_clips(specs, g, frames=cfg.default_frames, size=w, device=device)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA, a no-op context on CPU (CPU bf16 is slow and not what tests check)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def half_copy(module: nn.Module) -> nn.Module:
    """A CPU copy with matrices and conv kernels in fp16 (vectors stay fp32): halves the shipped file."""
    out = copy.deepcopy(module).to("cpu")
    for p in out.parameters():
        if p.ndim >= 2:
            p.data = p.data.to(torch.float16)
    return out


def export(path: Path, cfg: ModelConfig, network: nn.Module, vae: nn.Module, half: bool = True) -> None:
    """Write a checkpoint VideoPipeline.from_preset loads (keys network.*, vae.*)."""
    mods = {"network": network, "vae": vae}
    if half:
        mods = {k: half_copy(m) for k, m in mods.items()}
    save_checkpoint(path, cfg, mods)
    log.info("exported %s (%.1f MiB)", path, path.stat().st_size / 2**20 if path.is_file() else 0.0)
